"""A ring gate's checks of one server as Step Functions tasks: ``LocalRings._check``, one look per task.

The local driver checks each server of the ring in turn: wait until it answers (up to the reboot
timeout), then, with ``--health-script``, send the script and poll its command until it ends.
Here each server is one iteration of the fleet run's Checks Map: CheckMember looks once and
answers ``offline`` (a Wait, then look again: the adapter's hint or growing delays, the deadline
carried in the step, as WaitOnline does), ``sent`` (the health script runs: its end is awaited
on the command's EventBridge event like an install's, WaitCommand's ``command#<id>`` waiter and
heartbeat fallback) or ``done`` once the server's check is recorded (``rings.record_check``,
``rings.record_health_result``). Every error of an iteration is caught into FailCheck, which
records it as the server's failed check: no server is ever left unchecked, so the gate is judged.
"""

from __future__ import annotations

import math
from datetime import datetime

from autopatch.aws.install_tasks import run_options
from autopatch.aws.lease import keep_driving
from autopatch.aws.run_models import CheckTask, FailedCheck, Phase, Step
from autopatch.aws.wiring import Runtime
from autopatch.domain.fleet import CommandInvocation
from autopatch.domain.ring_gates import MemberCheck, RingGate, RingMember
from autopatch.domain.rings import format_duration
from autopatch.engine.rings import (
    HEALTH_CHECK_TIMEOUT,
    current_ring,
    members_to_check,
    record_check,
    record_health_result,
    send_health_check,
)
from autopatch.engine.steps import run_cancelled
from autopatch.errors import AutoPatchError, StoreError, TransientError

_DONE = Step(phase=Phase.DONE)


def _checking(runtime: Runtime, run_id: str, position: int, instance_id: str) -> tuple[RingGate, RingMember] | None:
    """The gate being checked and this server's member, if the gate still waits for its check."""
    gate = current_ring(runtime.store, run_id)
    if gate is None or gate.position != position or not gate.status.round:
        return None
    member = next((m for m in members_to_check(runtime.store, gate) if m.instance_id == instance_id), None)
    return None if member is None else (gate, member)


def check_member(runtime: Runtime, task: CheckTask) -> Step:
    """One look at one server of the gate: ``offline`` (look again after ``delay``), ``sent`` or ``done``.

    A health check sent before (by this iteration, or by a driver that died) is read, not sent
    again; a cancelled run's checks stop where they are (NextRing cancels the rings).
    """
    keep_driving(runtime, task.run_id)
    found = _checking(runtime, task.run_id, task.position, task.instance_id)
    if found is None or run_cancelled(runtime.store, task.run_id):
        return _DONE
    gate, member = found
    if member.check is MemberCheck.CHECKING and member.command_id:
        return _health_result(runtime, gate, member)
    step, timing = task.step, runtime.timing
    deadline = step.deadline if step.deadline is not None else runtime.clock() + timing.reboot_timeout
    hint: float | None = None
    try:
        online = runtime.fleet.is_online(member.instance_id)
        if not online:
            hint = runtime.fleet.expected_online(member.instance_id)
    except TransientError:  # as ``LocalRings._online``: a look that could not be made is not an answer
        online = False
    if not online:
        remaining = deadline - runtime.clock()
        if remaining <= 0:
            detail = f"offline: not online within {format_duration(timing.reboot_timeout)}"
            record_check(runtime.store, gate, member, MemberCheck.FAILED, detail)
            return _DONE
        policy = timing.online_poll
        delay = hint if hint else min(policy.max_delay, policy.first_delay * policy.factor**step.polls)
        return Step(
            phase=Phase.OFFLINE, deadline=deadline, delay=max(1, math.ceil(min(delay, remaining))), polls=step.polls + 1
        )
    script = run_options(runtime, task.run_id).health_script
    if script is None:
        record_check(runtime.store, gate, member, MemberCheck.PASSED, "online")
        return _DONE
    try:
        sent = _send(runtime, gate, member, script)
    except StoreError:
        raise
    except AutoPatchError as exc:
        record_check(runtime.store, gate, member, MemberCheck.FAILED, f"health script could not be sent: {exc}")
        return _DONE
    return Step(phase=Phase.SENT, command_id=sent.command_id)


def _send(runtime: Runtime, gate: RingGate, member: RingMember, script: str) -> RingMember:
    """``LocalRings._send``: the health check sent, again after what is transient (a health check only reads)."""
    backoff, retries = runtime.timing.retry_backoff, runtime.timing.transient_retries
    for attempt in range(retries):
        try:
            return send_health_check(runtime.store, runtime.fleet, gate, member, script)
        except TransientError:
            runtime.sleep(min(backoff.max_delay, backoff.first_delay * 2 ** (attempt + 1)))
    return send_health_check(runtime.store, runtime.fleet, gate, member, script)


def _health_result(runtime: Runtime, gate: RingGate, member: RingMember) -> Step:
    """Read the health check's command once: its end recorded, no result past ``HEALTH_CHECK_TIMEOUT``, or
    ``sent`` (wait for it again)."""
    assert member.command_id is not None
    invocation: CommandInvocation | None
    try:
        invocation = runtime.fleet.get_command(member.instance_id, member.command_id)
    except TransientError:
        invocation = None
    except StoreError:
        raise
    except AutoPatchError as exc:
        record_check(runtime.store, gate, member, MemberCheck.FAILED, f"health script result unreadable: {exc}")
        return _DONE
    if invocation is not None and invocation.status.is_terminal:
        record_health_result(runtime.store, gate, member, invocation)
        return _DONE
    sent_at = datetime.fromisoformat(member.checked_at).timestamp() if member.checked_at else runtime.clock()
    if runtime.clock() - sent_at >= HEALTH_CHECK_TIMEOUT:
        record_health_result(runtime.store, gate, member, None)
        return _DONE
    return Step(phase=Phase.SENT, command_id=member.command_id)


def fail_check(runtime: Runtime, task: FailedCheck) -> dict[str, str]:
    """The Catch target of a server's check: the error recorded as its failed check (the gate then fails)."""
    detail = f"check failed: {task.error.described()}"
    found = _checking(runtime, task.run_id, task.position, task.instance_id)
    if found is not None:
        gate, member = found
        record_check(runtime.store, gate, member, MemberCheck.FAILED, detail)
    return {"check": str(MemberCheck.FAILED), "detail": detail[:300]}

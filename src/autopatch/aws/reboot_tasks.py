"""Reboots and their verification as Step Functions tasks: ``Engine._reboot_once`` and ``Engine._verify``.

The local engine asks for the restart, then loops: wait until the server answers, scan it, and
accept the scan only when its boot time is newer than before the reboot (SSM says Online for
minutes after a restart was asked for). Here the loop is the state machine's: Reboot → (the reboot
command's end, when the fleet sends one) → WaitOnline ⇄ Wait → WaitScan → Verify (WaitOnline
sends the scan as soon as the server answers), and Verify answers ``again`` (Wait, then
WaitOnline) while the scan predates the reboot. The deadline
is carried in the step, so no task waits longer than one look.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from autopatch.aws.idempotency import once
from autopatch.aws.install_tasks import step_of
from autopatch.aws.lease import keep_driving
from autopatch.aws.run_models import Phase, Step, StepTask
from autopatch.aws.wiring import Runtime
from autopatch.domain.fleet import CommandStatus, ScanReport
from autopatch.domain.runs import Attempt, RunItem
from autopatch.engine import steps
from autopatch.errors import AutoPatchError, StoreError, TransientError
from autopatch.fleet.reports import parse_scan_output
from autopatch.scan_history import store_scans
from autopatch.store.base import now


def reboot(runtime: Runtime, task: StepTask, context: LambdaContext | None = None) -> Step:
    """Reboot for the step's KB, or (no KB) for every KB waiting for the at-end reboot, unless that was done.

    As ``Engine._complete_item``: a KB's reboot that cannot be asked for leaves it installed with the
    reboot pending; an at-end reboot that cannot be asked for fails the server (Catch → FailServer).
    """
    waiting = _waiting(runtime, task)
    if not waiting:
        return Step(phase=Phase.DONE, kb=task.step.kb)
    deadline = runtime.clock() + runtime.timing.reboot_timeout
    if {attempt.phase for _, attempt in waiting} == {"rebooting"}:
        return Step(phase=Phase.REBOOTING, kb=task.step.kb, deadline=deadline)  # asked for and counted already
    key = {
        "run_id": task.run_id,
        "instance_id": task.instance_id,
        "attempts": sorted(f"{item.kb}#{attempt.attempt}" for item, attempt in waiting),
    }
    try:
        done = once(runtime, "reboot", key, lambda: _reboot_once(runtime, task, waiting), context)
    except StoreError:
        raise
    except AutoPatchError as exc:
        if task.step.kb is None:
            raise
        steps.installed_without_reboot(runtime.store, waiting[0][0], str(exc))
        return Step(phase=Phase.DONE, kb=task.step.kb)
    command_id = done.get("command_id")
    delay = 0 if command_id else _first_look(runtime, task.instance_id)
    return Step(phase=Phase.REBOOTING, kb=task.step.kb, command_id=command_id, deadline=deadline, delay=delay)


def _first_look(runtime: Runtime, instance_id: str) -> int:
    """Seconds before the first look at a server just asked to restart (no reboot command to wait for).

    Looking at once only finds the server still up (it shuts down after a while, and SSM reports it
    Online for a minute more) and a scan with the old boot time: the adapter's estimate of its
    return when it has one (the simulator), else the first of the growing delays.
    """
    try:
        hint = runtime.fleet.expected_online(instance_id)
    except TransientError:
        hint = None
    seconds = hint if hint else runtime.timing.online_poll.first_delay
    return max(1, math.ceil(min(seconds, runtime.timing.reboot_timeout)))


def _waiting(runtime: Runtime, task: StepTask) -> list[tuple[RunItem, Attempt]]:
    store = runtime.store
    if task.step.kb is None:
        return steps.waiting_for_reboot(store, task.run_id, task.instance_id)
    item = store.run_item(task.run_id, task.instance_id, task.step.kb)
    last = steps.latest_attempt(store, item)
    if last is None or step_of(item, last).phase is not Phase.VERDICT:
        return []
    return [(item, last)]


def _reboot_once(runtime: Runtime, task: StepTask, waiting: list[tuple[RunItem, Attempt]]) -> dict[str, Any]:
    """Intent, call, record: ``Engine._reboot_once``'s order of writes, so a crash between them is visible.

    A predecessor that died between the intent and the record ("reboot-pending") is asked again:
    a second restart costs minutes, while a reboot believed done that never happened would let a
    stale scan verify nothing. The boot time to beat is the latest scan's (the plan's, or the last
    verification's: every planned server has one).
    """
    store = runtime.store
    steps.mark_reboot_intended(store, waiting)
    scans = store.latest_scans([task.instance_id])
    boot_before = scans[task.instance_id].boot_time if task.instance_id in scans else None
    requested = now()
    command_id = _ask_reboot(runtime, task.instance_id)
    steps.record_reboot(store, task.run_id, task.instance_id, waiting, requested_at=requested, boot_before=boot_before)
    return {"command_id": command_id}


def _ask_reboot(runtime: Runtime, instance_id: str) -> str | None:
    """Ask for the restart, retrying what is transient (throttling, the agent briefly away), as the local engine."""
    backoff, retries = runtime.timing.retry_backoff, runtime.timing.transient_retries
    for attempt in range(retries):
        try:
            return runtime.fleet.reboot(instance_id)
        except TransientError:
            runtime.sleep(min(backoff.max_delay, backoff.first_delay * 2 ** (attempt + 1)))
    return runtime.fleet.reboot(instance_id)


def verifying(runtime: Runtime, run_id: str, instance_id: str) -> list[RunItem]:
    """The KBs whose reboot was asked for and counted, waiting for a scan from after it."""
    waiting = steps.waiting_for_reboot(runtime.store, run_id, instance_id)
    return [item for item, attempt in waiting if attempt.phase == "rebooting"]


def wait_online(runtime: Runtime, task: StepTask) -> Step:
    """One look: online (then the scan is sent: ``send_scan``), ``offline`` with the delay before the next
    look, or the KBs failed past the deadline."""
    keep_driving(runtime, task.run_id)
    step = task.step
    deadline = step.deadline if step.deadline is not None else runtime.clock() + runtime.timing.reboot_timeout
    remaining = deadline - runtime.clock()
    if remaining <= 0:
        return _give_up(runtime, task)
    try:
        if runtime.fleet.is_online(task.instance_id):
            online = step.model_copy(update={"phase": Phase.ONLINE, "deadline": deadline, "delay": 0})
            return send_scan(runtime, task.model_copy(update={"step": online}))
        hint = runtime.fleet.expected_online(task.instance_id)
    except TransientError:
        hint = None
    delay = hint if hint else _poll_delay(runtime, step.polls)
    return step.model_copy(
        update={
            "phase": Phase.OFFLINE,
            "deadline": deadline,
            "delay": max(1, math.ceil(min(delay, remaining))),
            "polls": step.polls + 1,
        }
    )


def send_scan(runtime: Runtime, task: StepTask) -> Step:
    """Start the scan that should prove the reboot; a send that fails is one more look (``again``)."""
    try:
        command_id = runtime.fleet.send_scan(task.instance_id)
    except StoreError:
        raise
    except AutoPatchError:
        return _again(runtime, task)
    return task.step.model_copy(update={"phase": Phase.SCANNING, "command_id": command_id, "delay": 0})


def verify(runtime: Runtime, task: StepTask) -> Step:
    """Verify the KBs from the scan if it comes from after the reboot (``steps.verify_kbs``); else look again."""
    keep_driving(runtime, task.run_id)  # back from the scan's wait
    items = verifying(runtime, task.run_id, task.instance_id)
    if not items:
        return Step(phase=Phase.DONE, kb=task.step.kb)
    scan = _read_scan(runtime, task)
    if scan is not None and steps.is_after_reboot(runtime.store, task.run_id, task.instance_id, scan):
        steps.verify_kbs(runtime.store, items, scan, runtime.timing.reboot_timeout)
        return Step(phase=Phase.DONE, kb=task.step.kb)
    if task.step.deadline is not None and runtime.clock() >= task.step.deadline:
        return _give_up(runtime, task)
    return _again(runtime, task)


def _read_scan(runtime: Runtime, task: StepTask) -> ScanReport | None:
    """The scan's report, stored as the local engine stores every scan it reads; None if it did not succeed."""
    command_id = task.step.command_id
    if command_id is None:
        return None
    try:
        invocation = runtime.fleet.get_command(task.instance_id, command_id)
        if invocation.status is not CommandStatus.SUCCESS:
            return None
        report = parse_scan_output(task.instance_id, invocation.output, datetime.now(UTC))
    except StoreError:
        raise
    except AutoPatchError:
        return None
    store_scans(runtime.store, [report])  # kept with its exposure history, as every scan the engine reads
    return report


def _give_up(runtime: Runtime, task: StepTask) -> Step:
    """Past the reboot timeout without a scan from after the reboot: the KBs fail, as the local engine fails them."""
    items = verifying(runtime, task.run_id, task.instance_id)
    steps.verify_kbs(runtime.store, items, None, runtime.timing.reboot_timeout)
    return Step(phase=Phase.DONE, kb=task.step.kb)


def _again(runtime: Runtime, task: StepTask) -> Step:
    step = task.step
    delay = _poll_delay(runtime, step.polls)
    return step.model_copy(update={"phase": Phase.AGAIN, "delay": max(1, math.ceil(delay)), "polls": step.polls + 1})


def _poll_delay(runtime: Runtime, polls: int) -> float:
    policy = runtime.timing.online_poll
    return min(policy.max_delay, policy.first_delay * policy.factor**polls)

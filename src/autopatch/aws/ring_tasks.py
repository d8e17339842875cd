"""A run's rings and their health gates as Step Functions tasks: ``LocalRings.drive``, one decision per task.

The local driver loops over the run's current gate (``engine/ring_runner.py``): open the ring,
patch its servers on its threads, close it (check 1 of the gate), check each server, judge the
gate, sleep through the soak, check again; a failed gate halts the run. Here the loop is the
fleet run's: NextRing (this module) makes every decision that needs no waiting, calling the same
steps of ``engine/rings.py`` in the same order, and answers the one thing the workflow must do
next: ``patch`` (the Servers Map over a ring's servers), ``check`` (the Checks Map over the
servers to check: ``check_tasks``), ``soak`` (a Wait) or ``finish`` (FinishRun, which ends a run
whose gate failed: ``run_tasks.finish_run``). Plan answers the first step itself (a task
whose next step needs no wait takes it), and a run without rings is the same loop with one
pass: ``patch`` every unfinished server, then ``finish``.

What the gates cannot say — that the workflow has just patched a ring's servers, or just run a
round of checks — comes from the previous answer (``RingStep``); everything else is read from
the store, so a restarted execution (a new one after a window paused the run, or a takeover)
continues from the stored gates as ``autopatch resume`` does.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from autopatch.aws.lease import keep_driving
from autopatch.aws.run_models import PlanResult, RingAction, RingStep, RingTask, WaitTimes
from autopatch.aws.wiring import Runtime
from autopatch.domain.ring_gates import GateStatus, MemberCheck, RingGate
from autopatch.engine.options import RunOptions
from autopatch.engine.rings import (
    cancel_rings,
    close_ring,
    current_ring,
    end_soak,
    judge_gate,
    members_to_check,
    open_ring,
    plan_rings,
    record_check,
    ring_done,
    ring_servers,
    soak_left,
)
from autopatch.engine.steps import run_cancelled
from autopatch.errors import ExecutionError
from autopatch.store.base import Store

# The longest Soak Wait before NextRing looks again: a cancel is noticed (and the workflow's lease
# renewed) within this, at three transitions a look (about $0.005 for an hour of soak).
SOAK_LOOK_SECONDS = 300
# Decisions one NextRing may take before answering: a gate moves at most five times before the
# workflow must act (open, close, judge, end of soak, judge), for at most a few rings in a row.
_DECISIONS = 64
_ENDED_GATES = (GateStatus.CANCELLED, GateStatus.NOT_STARTED, GateStatus.FAILED)
_UNCHECKED = "not checked: its check ended without a verdict"


def unfinished_servers(store: Store, run_id: str, only: list[str] | None = None) -> list[str]:
    """The run's Pending and Running servers (of ``only``, when given: one ring), started ones first.

    As ``Engine.patch_servers``: servers already started before a restart hold commands in flight.
    """
    wanted = None if only is None else set(only)
    servers = [
        server
        for server in store.run_servers(run_id)
        if server.status in ("Pending", "Running") and (wanted is None or server.instance_id in wanted)
    ]
    servers.sort(key=lambda server: server.status != "Running")
    return [server.instance_id for server in servers]


def wait_times(runtime: Runtime) -> WaitTimes:
    """The ``HeartbeatSecondsPath`` and ``TimeoutSecondsPath`` values of every wait on a command."""
    return WaitTimes(
        heartbeat_seconds=runtime.timing.silence_seconds, timeout_seconds=runtime.timing.wait_timeout_seconds
    )


def next_ring(runtime: Runtime, task: RingTask) -> PlanResult:
    """After a ring's servers were patched, a round of checks or a soak: what the run does next."""
    store = runtime.store
    run = store.get_run(task.run_id)
    options = RunOptions.from_dict(run.options)
    servers: list[str] = []
    if run.status.is_terminal:
        step = RingStep(action=RingAction.FINISH)
    else:
        keep_driving(runtime, task.run_id)
        step, servers = decide(runtime, task.run_id, options, task.ring)
    return PlanResult(
        run_id=run.run_id,
        kind=run.kind,
        finished=False,
        servers=servers,
        max_concurrency=max(1, options.concurrency),
        timing=wait_times(runtime),
        ring=step,
    )


def decide(runtime: Runtime, run_id: str, options: RunOptions, previous: RingStep | None) -> tuple[RingStep, list[str]]:
    """``LocalRings.drive`` and ``_advance`` up to the first thing the workflow must do; the servers to patch.

    ``previous`` is None on the first call of an execution (Plan's). A run without rings is
    patched once, all its unfinished servers at once, then finished, as ``Engine._execute`` does.
    """
    store = runtime.store
    if not plan_rings(store, run_id, options):
        if previous is None:
            return RingStep(action=RingAction.PATCH), unfinished_servers(store, run_id)
        return RingStep(action=RingAction.FINISH), []
    for _ in range(_DECISIONS):
        if run_cancelled(store, run_id):  # in-flight installs end; the Pending KBs are cancelled one by one
            cancel_rings(store, run_id)
            servers = [] if previous is not None and previous.sweep else unfinished_servers(store, run_id)
            if not servers:
                return RingStep(action=RingAction.FINISH), []
            return RingStep(action=RingAction.PATCH, sweep=True), servers
        gate = current_ring(store, run_id)
        if gate is None or gate.status in _ENDED_GATES:
            return RingStep(action=RingAction.FINISH), []  # every ring passed, or FinishRun ends the run
        at = datetime.fromtimestamp(runtime.clock(), UTC)
        if gate.status is GateStatus.WAITING:
            open_ring(store, gate)
        elif gate.status is GateStatus.PATCHING:
            if not _just(previous, RingAction.PATCH, gate):
                servers = unfinished_servers(store, run_id, ring_servers(store, gate))
                if servers:
                    return RingStep(action=RingAction.PATCH, position=gate.position), servers
            if not ring_done(store, gate, options.max_errors):
                return RingStep(action=RingAction.FINISH), []  # its servers stopped unfinished: a window closed
            close_ring(store, gate)
        elif gate.status in (GateStatus.CHECKING, GateStatus.RECHECKING):
            members = members_to_check(store, gate)
            if members and not _just(previous, RingAction.CHECK, gate):
                step = RingStep(
                    action=RingAction.CHECK,
                    position=gate.position,
                    round=gate.status.round,
                    members=[member.instance_id for member in members],
                )
                return step, []
            for member in members:  # a check that ended without a verdict never leaves the gate waiting
                record_check(store, gate, member, MemberCheck.FAILED, _UNCHECKED)
            judge_gate(store, gate, options.soak_seconds, at)
        elif gate.status is GateStatus.SOAKING:
            left = soak_left(gate, at)
            if left > 0:
                delay = max(1, math.ceil(min(left, SOAK_LOOK_SECONDS)))
                return RingStep(action=RingAction.SOAK, position=gate.position, delay=delay), []
            end_soak(store, gate)
    raise ExecutionError(f"run {run_id}: its rings did not settle after {_DECISIONS} decisions")


def _just(previous: RingStep | None, action: RingAction, gate: RingGate) -> bool:
    """Whether the workflow has just done ``action`` for this gate (its servers patched, this round checked)."""
    if previous is None or previous.action is not action or previous.position != gate.position:
        return False
    return action is not RingAction.CHECK or previous.round == gate.status.round

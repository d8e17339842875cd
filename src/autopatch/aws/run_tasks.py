"""A run's start and end, and each server's gate and end, as Step Functions tasks.

``Engine._execute`` starts the run, gives each server a worker that passes the ``--max-errors``
gate, and once every worker is done measures the exposure after and sets the run's status; a
server's unexpected failure fails that server only. Here Plan starts the run (planning it first
when it was created unplanned) and says what it does first (``ring_tasks.decide``: its first ring,
or every server), the Map's iterations are the workers, FailServer is the Catch target of every
error of an iteration, and FinishRun and Notify come after the Map (after the last ring).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from autopatch.aws.idempotency import once
from autopatch.aws.install_tasks import run_options
from autopatch.aws.lease import keep_driving, let_go
from autopatch.aws.ring_tasks import decide, wait_times
from autopatch.aws.run_models import FailedTask, PlanResult, RingAction, RingStep, RunTask, ServerTask
from autopatch.aws.wiring import Runtime
from autopatch.domain.patching import RunStatus
from autopatch.domain.ring_gates import GateStatus, RingGate
from autopatch.engine import steps
from autopatch.engine.driving import plan_if_unplanned
from autopatch.engine.options import RunOptions
from autopatch.engine.report import send_summary
from autopatch.engine.rings import current_ring, end_after_failed_gate
from autopatch.engine.run_exposure import record_exposure_after
from autopatch.engine.snapshots import snapshot_needed
from autopatch.engine.windows import pause_if_window_closed
from autopatch.errors import AutoPatchError

logger = Logger(service="autopatch")


def plan(runtime: Runtime, task: RunTask) -> PlanResult:
    """Plan the run if it was created unplanned, start it, and say what it does first.

    That is NextRing's first decision (``ring_tasks.decide``): a run without rings patches every
    unfinished server (servers already started, in a restarted execution, first: they may hold
    commands in flight); a run with rings gets them assigned and its first ring opened (or, in a
    restarted execution, goes on where its gates stand). A run already over answers ``finished``
    and nothing is driven again; a run another driver holds stops the execution (``RunTakenOverError``).
    """
    store = runtime.store
    run = store.get_run(task.run_id)
    if run.status.is_terminal:
        over = RingStep(action=RingAction.FINISH)
        waits = wait_times(runtime)
        return PlanResult(
            run_id=run.run_id, kind=run.kind, finished=True, servers=[], max_concurrency=1, timing=waits, ring=over
        )
    keep_driving(runtime, task.run_id)
    plan_if_unplanned(store, runtime.fleet, run)
    options = steps.mark_running(store, task.run_id)
    first, servers = decide(runtime, task.run_id, options, None)
    return PlanResult(
        run_id=run.run_id,
        kind=run.kind,
        finished=False,
        servers=servers,
        max_concurrency=max(1, options.concurrency),
        timing=wait_times(runtime),
        ring=first,
    )


def gate(runtime: Runtime, task: ServerTask) -> dict[str, bool]:
    """``steps.server_may_start``: the ``--max-errors`` gate, decided from the store as the local engine does;
    and, for a server that starts, whether it is snapshotted first (``snapshots.snapshot_needed``)."""
    store, options = runtime.store, run_options(runtime, task.run_id)
    start = steps.server_may_start(store, task.run_id, task.instance_id, options.max_errors)
    snapshot = start and snapshot_needed(store, task.run_id, task.instance_id, options)
    return {"start": start, "snapshot": snapshot}


def finish_server(runtime: Runtime, task: ServerTask) -> dict[str, str]:
    """``steps.finish_server``: the server's status from its KBs, and the build it reached."""
    return {"status": steps.finish_server(runtime.store, task.run_id, task.instance_id)}


def fail_server(runtime: Runtime, task: FailedTask) -> dict[str, str]:
    """``steps.fail_server`` with the caught error, worded as the local engine words an exception."""
    reason = task.error.described()
    steps.fail_server(runtime.store, task.run_id, task.instance_id, reason)
    return {"status": "Failed", "reason": reason[:500]}


def finish_run(runtime: Runtime, task: RunTask) -> dict[str, str]:
    """The final scan and exposure after (a measurement: its failure is logged), then the run's status.

    A run whose ring failed its health gate ends as ``LocalRings.drive`` ends it: the exposure after
    measured, then ``rings.end_after_failed_gate`` (Halted, later rings untouched; Failed after the
    last ring). A run whose maintenance window closed with KBs left is ``Paused`` instead (as the
    local engine decides, ``windows.pause_if_window_closed``): its lease is given up, the scheduler
    starts a new execution in the next window, and no summary is sent yet.
    """
    store = runtime.store
    run = store.get_run(task.run_id)
    if run.status.is_terminal:
        return {"run_id": run.run_id, "status": str(run.status)}
    keep_driving(runtime, task.run_id)
    options = run_options(runtime, task.run_id)
    failed = _failed_gate(runtime, task.run_id, options)
    if failed is not None:
        _measure_after(runtime, task.run_id)
        status = end_after_failed_gate(store, task.run_id, failed, options.max_errors)
    elif pause_if_window_closed(store, task.run_id, datetime.fromtimestamp(runtime.clock(), UTC)):
        status = RunStatus.PAUSED
    else:
        _measure_after(runtime, task.run_id)
        status = steps.finish_run(store, task.run_id, options.max_errors)
    let_go(runtime, task.run_id)
    return {"run_id": run.run_id, "status": str(status)}


def _failed_gate(runtime: Runtime, run_id: str, options: RunOptions) -> RingGate | None:
    """The ring whose gate failed, unless the run was cancelled first (a cancel ends it as any run)."""
    if not options.rings or steps.run_cancelled(runtime.store, run_id):
        return None
    gate = current_ring(runtime.store, run_id)
    return gate if gate is not None and gate.status is GateStatus.FAILED else None


def _measure_after(runtime: Runtime, run_id: str) -> None:
    """The final scan and the exposure after: a measurement, whose failure never decides how the run ended."""
    try:
        record_exposure_after(runtime.store, runtime.fleet, run_id, runtime.timing.scan_poll, runtime.sleep)
    except AutoPatchError as exc:
        logger.warning("the exposure after the run was not measured", run_id=run_id, error=str(exc))


def notify(runtime: Runtime, task: RunTask, context: LambdaContext | None = None) -> dict[str, Any]:
    """``report.send_summary`` to the configured notifiers, once per run (a retried task sends nothing more)."""

    def send() -> dict[str, Any]:
        results = send_summary(runtime.store, task.run_id, runtime.current_notifiers())
        return {"run_id": task.run_id, "notified": [asdict(result) for result in results]}

    return once(runtime, "notify", {"run_id": task.run_id}, send, context)

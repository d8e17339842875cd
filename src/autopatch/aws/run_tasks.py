"""A run's start and end, and each server's gate and end, as Step Functions tasks.

``Engine._execute`` starts the run, gives each server a worker that passes the ``--max-errors``
gate, and once every worker is done measures the exposure after and sets the run's status; a
server's unexpected failure fails that server only. Here Plan starts the run (planning it first
when it was created unplanned), the Map's iterations are the workers, FailServer is the Catch
target of every error of an iteration, and FinishRun and Notify come after the Map.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from autopatch.aws.idempotency import once
from autopatch.aws.install_tasks import run_options
from autopatch.aws.lease import keep_driving, let_go
from autopatch.aws.run_models import FailedTask, PlanResult, RunTask, ServerTask, WaitTimes
from autopatch.aws.wiring import Runtime
from autopatch.engine import steps
from autopatch.engine.driving import plan_if_unplanned
from autopatch.engine.report import send_summary
from autopatch.engine.run_exposure import record_exposure_after
from autopatch.errors import AutoPatchError

logger = Logger(service="autopatch")


def plan(runtime: Runtime, task: RunTask) -> PlanResult:
    """Plan the run if it was created unplanned, start it, and list the servers still to drive.

    Servers already started (a restarted execution) come first, as in the local engine: they may
    hold commands in flight. A run already over answers ``finished`` and nothing is driven again;
    a run another driver holds stops the execution (``RunTakenOverError``).
    """
    store = runtime.store
    run = store.get_run(task.run_id)
    timing = runtime.timing
    waits = WaitTimes(heartbeat_seconds=timing.silence_seconds, timeout_seconds=timing.wait_timeout_seconds)
    if run.status.is_terminal:
        return PlanResult(run_id=run.run_id, kind=run.kind, finished=True, servers=[], max_concurrency=1, timing=waits)
    keep_driving(runtime, task.run_id)
    plan_if_unplanned(store, runtime.fleet, run)
    options = steps.mark_running(store, task.run_id)
    servers = [s for s in store.run_servers(task.run_id) if s.status in ("Pending", "Running")]
    servers.sort(key=lambda server: server.status != "Running")
    return PlanResult(
        run_id=run.run_id,
        kind=run.kind,
        finished=False,
        servers=[server.instance_id for server in servers],
        max_concurrency=max(1, options.concurrency),
        timing=waits,
    )


def gate(runtime: Runtime, task: ServerTask) -> dict[str, bool]:
    """``steps.server_may_start``: the ``--max-errors`` gate, decided from the store as the local engine does."""
    options = run_options(runtime, task.run_id)
    return {"start": steps.server_may_start(runtime.store, task.run_id, task.instance_id, options.max_errors)}


def finish_server(runtime: Runtime, task: ServerTask) -> dict[str, str]:
    """``steps.finish_server``: the server's status from its KBs, and the build it reached."""
    return {"status": steps.finish_server(runtime.store, task.run_id, task.instance_id)}


def fail_server(runtime: Runtime, task: FailedTask) -> dict[str, str]:
    """``steps.fail_server`` with the caught error, worded as the local engine words an exception."""
    reason = f"{task.error.error}: {_message(task.error.cause)}"
    steps.fail_server(runtime.store, task.run_id, task.instance_id, reason)
    return {"status": "Failed", "reason": reason[:500]}


def _message(cause: str) -> str:
    """A Lambda error's cause is JSON (``errorMessage``…); a States error's is plain text."""
    try:
        parsed = json.loads(cause)
    except ValueError:
        return cause
    return str(parsed.get("errorMessage", cause)) if isinstance(parsed, dict) else cause


def finish_run(runtime: Runtime, task: RunTask) -> dict[str, str]:
    """The final scan and exposure after (a measurement: its failure is logged), then the run's status."""
    store = runtime.store
    run = store.get_run(task.run_id)
    if run.status.is_terminal:
        return {"run_id": run.run_id, "status": str(run.status)}
    keep_driving(runtime, task.run_id)
    try:
        record_exposure_after(store, runtime.fleet, task.run_id, runtime.timing.scan_poll, runtime.sleep)
    except AutoPatchError as exc:
        logger.warning("the exposure after the run was not measured", run_id=task.run_id, error=str(exc))
    options = run_options(runtime, task.run_id)
    status = steps.finish_run(store, task.run_id, options.max_errors)
    let_go(runtime, task.run_id)
    return {"run_id": run.run_id, "status": str(status)}


def notify(runtime: Runtime, task: RunTask, context: LambdaContext | None = None) -> dict[str, Any]:
    """``report.send_summary`` to the configured notifiers, once per run (a retried task sends nothing more)."""

    def send() -> dict[str, Any]:
        results = send_summary(runtime.store, task.run_id, runtime.current_notifiers())
        return {"run_id": task.run_id, "notified": [asdict(result) for result in results]}

    return once(runtime, "notify", {"run_id": task.run_id}, send, context)

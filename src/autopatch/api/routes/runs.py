"""``/runs``: patch runs as ``autopatch runs`` and ``run show`` show them; start, retry, cancel, plan, follow.

``POST /runs`` answers a dry run with the plan (nothing stored); otherwise it claims the servers
for a new run (409 naming a live run that holds one) and answers 202 at once, while the server's
``RunWorker`` scans, plans and drives the run. ``/runs/{id}/events`` streams its transitions.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import StreamingResponse

from autopatch.api.deps import AuditTrail, FleetDep, StoreDep, audited, get_settings, require
from autopatch.api.events import run_events
from autopatch.api.models import Limit, Offset, Page
from autopatch.api.run_models import (
    RetryRequest,
    RunAccepted,
    RunCancelled,
    RunDetail,
    RunListItem,
    RunPlanView,
    RunRequest,
)
from autopatch.api.run_worker import RunDriver
from autopatch.domain.access import Role
from autopatch.domain.identifiers import parse_run_id
from autopatch.domain.instance_ids import parse_instance_id
from autopatch.engine.options import RunOptions
from autopatch.engine.report import run_view
from autopatch.errors import ValidationError
from autopatch.operations import cancel_run, plan_dry_run, plan_rows, prepare_patch, run_rows
from autopatch.rollout import API_FIELDS, apply_rollout, parse_rollout, with_rings
from autopatch.wiring import open_store

router = APIRouter(prefix="/runs", tags=["runs"], dependencies=[Depends(require(Role.VIEWER))])


@router.get("", response_model=Page[RunListItem])
def list_runs(store: StoreDep, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    """Runs, newest first: one page read from the store, and the count of them all."""
    return {"items": run_rows(store, limit, offset), "total": store.count_runs()}


def _worker(request: Request) -> RunDriver:
    worker: RunDriver = request.app.state.run_worker
    return worker


@router.post(
    "",
    response_model=RunPlanView | RunAccepted,
    responses={202: {"model": RunAccepted, "description": "the run is stored; it continues in the server"}},
)
def start_run(
    body: RunRequest,
    request: Request,
    response: Response,
    fleet: FleetDep,
    store: StoreDep,
    trail: Annotated[AuditTrail, Depends(audited("run.create"))],
) -> dict[str, Any]:
    """Start a patch run (operator) with the options of ``autopatch patch``: 202 with its id, or 200 with the plan
    for ``dry_run: true``."""
    instance_ids = [parse_instance_id(value, "instance_ids") for value in body.instance_ids]
    trail.target = ",".join(instance_ids) or ("all" if body.all_servers else f"tag {body.tag}")
    rollout = parse_rollout(
        API_FIELDS,
        concurrency=body.concurrency,
        max_errors=body.max_errors,
        rings=body.rings,
        health_script=body.health_script,
        soak=body.soak,
    )
    if rollout.health_script is not None and not trail.principal.role.allows(Role.ADMIN):
        # The script runs as SYSTEM on every server of the run: more than patching, which operators may do.
        raise HTTPException(403, "health_script: a run with a health-check script needs an admin token")
    patch = prepare_patch(
        fleet,
        store,
        all_servers=body.all_servers,
        instance_ids=instance_ids,
        tag=body.tag,
        kbs=body.kbs,
        severity=body.severity,
        options=RunOptions(reboot=body.reboot, snapshot=body.snapshot),
        targets_rule='give exactly one of "instance_ids", "all": true or "tag": "K=V"',
        baseline=body.baseline,
        as_of=body.as_of,
        dry_run=body.dry_run,
        exploited_only=body.exploited_only,
    )
    patch = apply_rollout(patch, rollout)  # percentages resolved, rings checked against the targets
    if not body.dry_run:
        run_id = _worker(request).submit_patch(patch, trail.principal.name)
        trail.detail = f"run {run_id}"
        response.status_code = 202
        return {"run_id": run_id, "status": "Pending"}
    trail.detail = "dry run"
    plan = plan_dry_run(fleet, store, patch)
    rows = with_rings(plan_rows(plan), rollout, patch.targets)
    return {"kbs_to_install": sum(len(row["kbs_in_order"]) for row in rows), "servers": rows}


@router.get("/{run_id}", response_model=RunDetail)
def get_run(run_id: str, store: StoreDep) -> dict[str, Any]:
    """One run: servers, KBs, attempts (command ids, exit codes, timings) and transitions."""
    return run_view(store, parse_run_id(run_id, "run_id"))


@router.post("/{run_id}/cancel", response_model=RunCancelled)
def cancel(
    run_id: str, store: StoreDep, trail: Annotated[AuditTrail, Depends(audited("run.cancel"))]
) -> dict[str, Any]:
    """Cancel a run (operator): KBs not started become Cancelled; a KB being installed finishes first."""
    checked = parse_run_id(run_id, "run_id")
    status = cancel_run(store, checked)
    trail.detail = str(status)
    return {"run_id": checked, "status": str(status)}


@router.post("/{run_id}/retry", status_code=202, response_model=RunAccepted)
def retry(
    run_id: str,
    body: RetryRequest,
    request: Request,
    store: StoreDep,
    trail: Annotated[AuditTrail, Depends(audited("run.retry"))],
) -> dict[str, Any]:
    """Retry one KB of a run on one of its servers (operator): a new one-KB run, as ``autopatch retry``.

    409 when the server already has the KB or a live run holds the server."""
    checked = parse_run_id(run_id, "run_id")
    instance_id = parse_instance_id(body.instance_id, "instance_id")
    trail.target = f"{checked}/{instance_id}/{body.kb}"
    if instance_id not in {server.instance_id for server in store.run_servers(checked)}:
        store.get_run(checked)  # an unknown run is a 404 before the instance is judged
        raise ValidationError("instance_id", instance_id, f"must be a server of run {checked}")
    new_run = _worker(request).submit_retry(instance_id, body.kb, trail.principal.name)
    trail.detail = f"retry run {new_run}"
    return {"run_id": new_run, "status": "Pending"}


@router.get(
    "/{run_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}},
)
def events(run_id: str, request: Request, store: StoreDep) -> StreamingResponse:
    """The run's transitions as Server-Sent Events: the stored ones, then each new one, then ``event: end``.

    Each event's data is ``{"instance", "kb", "from", "to", "at", "note"}``; ``: keep-alive`` comments
    come every 15 seconds while nothing happens; ``event: end`` carries the run's final status."""
    checked = parse_run_id(run_id, "run_id")
    store.get_run(checked)  # 404 before the stream starts
    settings = get_settings(request)
    stream = run_events(lambda: open_store(settings), checked)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)

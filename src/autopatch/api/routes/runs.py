"""``/runs``: patch runs as ``autopatch runs`` and ``run show`` show them, cancel, and plan.

``POST /runs`` answers dry runs only (the plan, nothing stored). Starting a real run needs the
server to drive it on a worker pool holding its lease, and to resume expired leases at start: not
in this slice (see ``api/app.py``); such a request is refused with 501 and audited.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException

from autopatch.api.deps import AuditTrail, FleetDep, StoreDep, audited, require
from autopatch.api.models import Limit, Offset, Page, page
from autopatch.api.run_models import RunCancelled, RunDetail, RunListItem, RunPlanView, RunRequest
from autopatch.domain.access import Role
from autopatch.domain.identifiers import parse_run_id
from autopatch.domain.instance_ids import parse_instance_id
from autopatch.engine.report import run_view
from autopatch.engine.runner import RunOptions
from autopatch.operations import cancel_run, plan_dry_run, plan_rows, prepare_patch, run_rows

router = APIRouter(prefix="/runs", tags=["runs"], dependencies=[Depends(require(Role.VIEWER))])
# Runs are few (one per patch window or retry); a page is cut from the newest ones.
MAX_RUNS = 100_000


@router.get("", response_model=Page[RunListItem])
def list_runs(store: StoreDep, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    """Runs, newest first."""
    return page(run_rows(store, MAX_RUNS), limit, offset)


@router.post("", response_model=RunPlanView)
def plan_run(
    body: RunRequest,
    fleet: FleetDep,
    store: StoreDep,
    trail: Annotated[AuditTrail, Depends(audited("run.create"))],
) -> dict[str, Any]:
    """Plan a patch run (operator) with the options of ``autopatch patch``; only ``dry_run: true`` is served yet."""
    instance_ids = [parse_instance_id(value, "instance_ids") for value in body.instance_ids]
    trail.target = ",".join(instance_ids) or ("all" if body.all_servers else f"tag {body.tag}")
    request = prepare_patch(
        fleet,
        store,
        all_servers=body.all_servers,
        instance_ids=instance_ids,
        tag=body.tag,
        kbs=body.kbs,
        severity=body.severity,
        options=RunOptions(concurrency=body.concurrency, max_errors=body.max_errors, reboot=body.reboot),
        targets_rule='give exactly one of "instance_ids", "all": true or "tag": "K=V"',
    )
    if not body.dry_run:
        raise HTTPException(501, "starting runs from the API is not served yet: use dry_run, or `autopatch patch`")
    trail.detail = "dry run"
    plan = plan_dry_run(fleet, store, request)
    rows = plan_rows(plan)
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

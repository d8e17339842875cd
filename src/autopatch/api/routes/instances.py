"""``/instances``: the fleet as ``fleet list`` shows it, one server with its exposure and status, scan, reboot."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from autopatch.api.deps import AuditTrail, FleetDep, StoreDep, audited, fleet_of, require
from autopatch.api.models import (
    InstanceDetail,
    InstanceItem,
    InstanceStatus,
    Limit,
    Offset,
    Page,
    RebootRequested,
    ScanResult,
    page,
)
from autopatch.api.rendered import RenderedByRevision
from autopatch.assessment import fleet_exposure
from autopatch.domain.access import Role
from autopatch.domain.instance_ids import parse_instance_id
from autopatch.engine.report import instance_status
from autopatch.operations import fleet_rows, reboot_instance, require_known_instance, scan_fleet

router = APIRouter(prefix="/instances", tags=["instances"], dependencies=[Depends(require(Role.VIEWER))])


@router.get("", response_model=Page[InstanceItem])
def list_instances(
    fleet: FleetDep,
    store: StoreDep,
    limit: Limit = 100,
    offset: Offset = 0,
    refresh: Annotated[bool, Query(description="discover the fleet again before answering")] = False,
) -> dict[str, Any]:
    """The fleet, discovered on first use (or with ``refresh=true``) like ``autopatch fleet list``."""
    return page(fleet_rows(fleet, store, discover=refresh), limit, offset)


@router.get("/{instance_id}", response_model=InstanceDetail)
def get_instance(instance_id: str, fleet: FleetDep, store: StoreDep) -> dict[str, Any]:
    """One server as ``fleet list`` shows it, with its exposure from the latest scan (per-CVE detail)."""
    target = parse_instance_id(instance_id)
    row = _row(fleet_rows(fleet, store, discover=False), target)
    if row is None:  # not seen yet: a server the fleet lists now is discovered, an unknown one is a 404
        require_known_instance(fleet, store, target)
        row = _row(fleet_rows(fleet, store, discover=True), target)
    [exposure] = fleet_exposure(store, [target], with_cves=True)
    return (row or {}) | {"exposure": exposure}


def _row(rows: list[dict[str, Any]], instance_id: str) -> dict[str, Any] | None:
    return next((row for row in rows if row["instance_id"] == instance_id), None)


@router.get("/{instance_id}/status", response_model=InstanceStatus)
async def get_status(instance_id: str, request: Request, store: StoreDep) -> Response:
    """``autopatch status``: KBs done out of those that needed work, and each KB's latest state.

    Polled by dashboards many times a second across a fleet, so it runs on the event loop and is
    kept serialised until a run's KBs change (``runs_revision``). Only a server never discovered
    sends the question to the fleet (a network call on SSM), on a worker thread.
    """
    target = parse_instance_id(instance_id)
    views: RenderedByRevision = request.app.state.status_views
    revision = store.runs_revision()  # read before the data: a change meanwhile only costs a recompute
    if (body := views.get(revision, target)) is None:
        if store.get_instance(target) is None:
            fleet = await run_in_threadpool(fleet_of, request, store)
            await run_in_threadpool(require_known_instance, fleet, store, target)
        body = InstanceStatus.model_validate(instance_status(store, target)).model_dump_json().encode()
        views.put(revision, target, body)
    return Response(body, media_type="application/json")


@router.post("/{instance_id}/scan", response_model=ScanResult)
def scan(
    instance_id: str,
    fleet: FleetDep,
    store: StoreDep,
    trail: Annotated[AuditTrail, Depends(audited("instance.scan"))],
) -> dict[str, Any]:
    """Scan one server now (operator): build, installed hotfixes, offered updates, pending reboot.

    The answer waits for the scan (seconds on the simulator; up to the scan timeout on SSM).
    """
    [row] = scan_fleet(fleet, store, [parse_instance_id(instance_id)])
    trail.detail = str(row["result"])
    return row


@router.post("/{instance_id}/reboot", response_model=RebootRequested, status_code=202)
def reboot(
    instance_id: str,
    fleet: FleetDep,
    store: StoreDep,
    trail: Annotated[AuditTrail, Depends(audited("instance.reboot"))],
) -> dict[str, Any]:
    """Reboot a server now (operator); 409 while it is offline or an unfinished run holds it."""
    target = parse_instance_id(instance_id)
    reboot_instance(fleet, store, target)
    return {"instance_id": target, "status": "reboot requested"}

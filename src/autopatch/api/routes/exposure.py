"""``/exposure``: per server open Critical/Important CVEs and the KBs that close them, as ``autopatch exposure``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from autopatch.api.deps import StoreDep, require
from autopatch.api.models import ExposureRow, FleetExposure, Limit, Offset, page
from autopatch.assessment import fleet_exposure, fleet_totals
from autopatch.catalog.queries import parse_severities
from autopatch.domain.access import Role
from autopatch.domain.instance_ids import parse_instance_id
from autopatch.engine.policy import parse_as_of
from autopatch.exposure_cache import FleetExposureCache

router = APIRouter(prefix="/exposure", tags=["exposure"], dependencies=[Depends(require(Role.VIEWER))])
Severity = Annotated[str | None, Query(max_length=200, description="Critical,Important,… (default: all)")]
AsOf = Annotated[
    str | None, Query(max_length=40, description="YYYY-MM-DD: later CVEs, KBs and KEV entries do not exist yet")
]


@router.get("", response_model=FleetExposure)
async def fleet_summary(
    request: Request,
    store: StoreDep,
    severity: Severity = None,
    limit: Limit = 100,
    offset: Offset = 0,
    as_of: AsOf = None,
) -> Response:
    """Every server's counts from its latest scan, and totals over the fleet (unknown servers count apart).

    Answered from the process's kept summary while the catalog and the fleet are unchanged (two
    one-row reads, on the event loop); a change is assessed once, on a worker thread, and requests
    arriving meanwhile get the previous summary (``computed_at`` says from when) rather than a queue.
    With ``as_of`` the fleet is assessed on that day (not kept): overdue counts are measured then.
    """
    severities = parse_severities([severity]) if severity is not None else None
    day = parse_as_of(as_of)
    if day is not None:
        rows = await run_in_threadpool(fleet_exposure, store, (), severities, False, None, day)
        computed = datetime.now(UTC).isoformat(timespec="seconds")
        body = page(rows, limit, offset) | {"totals": fleet_totals(rows), "computed_at": computed}
        return Response(FleetExposure.model_validate(body).model_dump_json(), media_type="application/json")
    cache: FleetExposureCache = request.app.state.exposure
    summary = cache.cached(store, severities) or cache.latest(severities)
    if summary is None:
        summary = await run_in_threadpool(cache.compute, store, severities)

    def render() -> bytes:
        body = page(summary.rows, limit, offset) | {"totals": summary.totals, "computed_at": summary.computed_at}
        return FleetExposure.model_validate(body).model_dump_json().encode()

    return Response(summary.render((limit, offset), render), media_type="application/json")


@router.get("/{instance_id}", response_model=ExposureRow)
def server_exposure(instance_id: str, store: StoreDep, severity: Severity = None, as_of: AsOf = None) -> dict[str, Any]:
    """One server's exposure with every CVE decision, its reason and its deadline (on ``as_of``, today by default)."""
    severities = parse_severities([severity]) if severity is not None else None
    day = parse_as_of(as_of)
    [row] = fleet_exposure(store, [parse_instance_id(instance_id)], severities, with_cves=True, as_of=day)
    return row

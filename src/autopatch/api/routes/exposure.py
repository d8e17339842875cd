"""``/exposure``: per server open Critical/Important CVEs and the KBs that close them, as ``autopatch exposure``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from autopatch.api.deps import StoreDep, require
from autopatch.api.models import ExposureRow, FleetExposure, Limit, Offset, page
from autopatch.assessment import fleet_exposure
from autopatch.catalog.queries import parse_severities
from autopatch.domain.access import Role
from autopatch.domain.instance_ids import parse_instance_id

router = APIRouter(prefix="/exposure", tags=["exposure"], dependencies=[Depends(require(Role.VIEWER))])
Severity = Annotated[str | None, Query(max_length=200, description="Critical,Important,… (default: all)")]


@router.get("", response_model=FleetExposure)
def fleet_summary(store: StoreDep, severity: Severity = None, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    """Every server's counts from its latest scan, and totals over the fleet (unknown servers count apart)."""
    severities = parse_severities([severity]) if severity is not None else None
    rows = fleet_exposure(store, severities=severities)
    assessed = [row for row in rows if row["status"] == "assessed"]
    totals = {
        "servers": len(rows),
        "servers_assessed": len(assessed),
        "open_critical": sum(row["open_critical"] for row in assessed),
        "open_important": sum(row["open_important"] for row in assessed),
        "open_total": sum(row["open_total"] for row in assessed),
    }
    return page(rows, limit, offset) | {"totals": totals}


@router.get("/{instance_id}", response_model=ExposureRow)
def server_exposure(instance_id: str, store: StoreDep, severity: Severity = None) -> dict[str, Any]:
    """One server's exposure with every CVE decision and its reason."""
    severities = parse_severities([severity]) if severity is not None else None
    [row] = fleet_exposure(store, [parse_instance_id(instance_id)], severities, with_cves=True)
    return row

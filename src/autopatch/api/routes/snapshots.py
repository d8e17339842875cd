"""``/snapshots``: AutoPatch's EBS snapshots (viewers) and their pruning (admins), as ``autopatch snapshots``.

Deleting snapshots is a retention policy, not an operation of a run: admins only, and audited
(``snapshots.prune``) with the snapshots deleted.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from autopatch.api.deps import AuditTrail, FleetDep, StoreDep, audited, require
from autopatch.api.snapshot_models import PruneRequest, PruneResult, SnapshotList
from autopatch.domain.access import Role
from autopatch.snapshot_operations import prune_snapshots, snapshot_rows

router = APIRouter(prefix="/snapshots", tags=["snapshots"])


@router.get("", response_model=SnapshotList, dependencies=[Depends(require(Role.VIEWER))])
def list_snapshots(fleet: FleetDep) -> dict[str, Any]:
    """AutoPatch's snapshots (tagged ``AutoPatch:Run``), newest first, with their age."""
    return snapshot_rows(fleet)


@router.post("/prune", response_model=PruneResult)
def prune(
    body: PruneRequest,
    fleet: FleetDep,
    store: StoreDep,
    trail: Annotated[AuditTrail, Depends(audited("snapshots.prune", Role.ADMIN))],
) -> dict[str, Any]:
    """Delete AutoPatch's snapshots older than ``older_than`` (admin); never those of an unfinished run."""
    trail.target = f"older than {body.older_than}"
    result = prune_snapshots(fleet, store, body.older_than, body.dry_run)
    deleted = ", ".join(row["snapshot_id"] for row in result["deleted"])
    trail.detail = f"{'dry run: ' if body.dry_run else ''}{len(result['deleted'])} deleted: {deleted}"
    return result

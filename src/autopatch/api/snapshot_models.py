"""Bodies of ``/snapshots`` and of a run server's ``snapshot`` in ``GET /runs/{id}``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from autopatch.domain.snapshots import RETENTION_RULE


class SnapshotVolumeView(BaseModel):
    snapshot_id: str
    volume_id: str
    device: str | None
    root: bool = Field(description="the boot volume: rolled back with a root volume replacement")


class RunServerSnapshot(BaseModel):
    """The EBS snapshots a run took of a server before its first KB (``patch --snapshot``)."""

    phase: str = Field(description="asking, retry, requested, started (patching may go on) or failed (skipped)")
    snapshot_ids: list[str]
    volumes: list[SnapshotVolumeView]
    requested_at: str
    started_at: str | None
    reason: str = Field(description="why it failed, or why it is still being asked for")
    pruned_at: str | None = Field(description="deleted by snapshots prune: nothing left to roll back to")
    rollback: list[str] = Field(description="an AWS CLI command per volume that puts it back as it was")


class SnapshotItem(BaseModel):
    snapshot_id: str
    volume_id: str
    instance_id: str | None
    run_id: str | None
    state: str = Field(description="requested, pending, completed or error")
    started_at: str | None
    age_days: float | None


class SnapshotList(BaseModel):
    as_of: str = Field(description="the fleet's time the ages are counted to (simulated time on the simulator)")
    items: list[SnapshotItem]


class PruneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    older_than: str = Field(max_length=20, description=RETENTION_RULE)
    dry_run: bool = Field(default=False, description="say what would be deleted, delete nothing")


class PruneError(BaseModel):
    snapshot_id: str
    error: str


class PruneResult(BaseModel):
    older_than: str
    as_of: str
    dry_run: bool
    deleted: list[SnapshotItem]
    kept: int = Field(description="AutoPatch snapshots left")
    errors: list[PruneError]

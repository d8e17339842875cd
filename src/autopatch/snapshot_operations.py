"""``snapshots list`` and ``snapshots prune``: AutoPatch's EBS snapshots, shared by the CLI and the HTTP API.

Only snapshots tagged ``AutoPatch:Run`` are listed, and only those are ever deleted: an operator's
own snapshots, an AMI's, a backup plan's never carry the tag. The fleet (EC2, or the simulator)
is the one source of truth about which snapshots exist; the store learns which of a run's were
pruned, so ``run show`` no longer offers a rollback to a deleted snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from autopatch.domain.identifiers import parse_run_id
from autopatch.domain.instance_ids import parse_instance_id
from autopatch.domain.snapshots import TAG_RUN, SnapshotInventory, VolumeSnapshot, parse_retention, prunable
from autopatch.errors import AutoPatchError, NotFoundError, StoreError, ValidationError
from autopatch.fleet.base import FleetAdapter
from autopatch.store.base import RunStore, now


def snapshot_row(inventory: SnapshotInventory, snapshot: VolumeSnapshot) -> dict[str, Any]:
    age = inventory.age(snapshot)
    return {
        "snapshot_id": snapshot.snapshot_id,
        "volume_id": snapshot.volume_id,
        "instance_id": snapshot.instance_id,
        "run_id": snapshot.run_id,
        "state": str(snapshot.state),
        "started_at": snapshot.started_at.isoformat(timespec="seconds") if snapshot.started_at else None,
        "age_days": round(age / timedelta(days=1), 1) if age is not None else None,
    }


def snapshot_rows(fleet: FleetAdapter) -> dict[str, Any]:
    """``snapshots list``: AutoPatch's snapshots, newest first, with their age on the fleet's clock."""
    inventory = fleet.list_snapshots({TAG_RUN: None})
    ordered = sorted(inventory.snapshots, key=lambda s: (s.started_at is not None, s.started_at), reverse=True)
    return {
        "as_of": inventory.as_of.isoformat(timespec="seconds"),
        "items": [snapshot_row(inventory, snapshot) for snapshot in ordered],
    }


def prune_snapshots(fleet: FleetAdapter, store: RunStore, older_than: str, dry_run: bool = False) -> dict[str, Any]:
    """``snapshots prune``: delete AutoPatch's snapshots older than the retention (``30d``, ``12h``, ``2w``).

    Kept whatever their age: snapshots of an unfinished run (its servers may need them now) and
    those still being copied. ``dry_run`` deletes nothing and says what would go. A snapshot that
    cannot be deleted (an AMI uses it, EC2 refused) is reported and the others still go.
    """
    retention = parse_retention(older_than)
    inventory = fleet.list_snapshots({TAG_RUN: None})
    unfinished = {run.run_id for run in store.unfinished_runs()}
    chosen = prunable(inventory, retention, unfinished)
    deleted: list[VolumeSnapshot] = []
    errors: list[dict[str, str]] = []
    for snapshot in chosen:
        if dry_run:
            deleted.append(snapshot)
            continue
        try:
            fleet.delete_snapshot(snapshot.snapshot_id)
        except NotFoundError:
            pass  # gone meanwhile (another prune): deleted all the same
        except StoreError:
            raise
        except AutoPatchError as exc:
            errors.append({"snapshot_id": snapshot.snapshot_id, "error": " ".join(str(exc).split())[:300]})
            continue
        deleted.append(snapshot)
    if not dry_run:
        _mark_pruned(store, deleted)
    return {
        "older_than": older_than.strip(),
        "as_of": inventory.as_of.isoformat(timespec="seconds"),
        "dry_run": dry_run,
        "deleted": [snapshot_row(inventory, snapshot) for snapshot in deleted],
        "kept": len(inventory.snapshots) - len(deleted),
        "errors": errors,
    }


def _mark_pruned(store: RunStore, deleted: Iterable[VolumeSnapshot]) -> None:
    """The run servers whose snapshots went: their rollback hint is withdrawn (``pruned_at``)."""
    stamp = now()
    servers = {(snapshot.run_id, snapshot.instance_id) for snapshot in deleted}
    for run_id, instance_id in sorted(servers, key=str):
        try:  # tag values come from EC2: only well-formed ones reach the store
            key = (parse_run_id(run_id or ""), parse_instance_id(instance_id or ""))
            store.update_snapshot(*key, pruned_at=stamp)
        except (ValidationError, NotFoundError):
            continue  # a run of another database (or a hand-made tag): nothing of ours to update

"""SQLite table of the EBS snapshots a run took of its servers (the ``SnapshotStore`` port).

One row per run server, written before the fleet is asked (``begin_snapshot``: an INSERT that
does nothing when the row exists, in the same transaction that reads it back), so that a resumed
run finds the ask it made and never takes a second set. The volumes are kept as JSON: they are
only ever read with their record.
"""

from __future__ import annotations

import json
from typing import Any

from autopatch.domain.snapshots import (
    SNAPSHOT_FIELDS,
    RunSnapshot,
    SnapshotPhase,
    SnapshotVolume,
    volumes_as_data,
    volumes_from_data,
)
from autopatch.errors import NotFoundError, ValidationError

SNAPSHOTS_MIGRATION = """
    CREATE TABLE run_snapshots (
        run_id TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        token TEXT NOT NULL,
        phase TEXT NOT NULL,
        requested_at TEXT NOT NULL,
        asked_at TEXT NOT NULL,
        volumes TEXT NOT NULL DEFAULT '[]',
        started_at TEXT,
        reason TEXT NOT NULL DEFAULT '',
        tries INTEGER NOT NULL DEFAULT 0,
        pruned_at TEXT,
        PRIMARY KEY (run_id, instance_id),
        FOREIGN KEY (run_id, instance_id) REFERENCES run_servers ON DELETE CASCADE
    ) WITHOUT ROWID
"""
_COLUMNS = "run_id, instance_id, token, phase, requested_at, asked_at, volumes, started_at, reason, tries, pruned_at"


def _snapshot(row: tuple[Any, ...]) -> RunSnapshot:
    run_id, instance_id, token, phase, requested_at, asked_at, volumes, started_at, reason, tries, pruned_at = row
    return RunSnapshot(
        run_id=run_id,
        instance_id=instance_id,
        token=token,
        phase=SnapshotPhase(phase),
        requested_at=requested_at,
        asked_at=asked_at,
        volumes=volumes_from_data(json.loads(volumes)),
        started_at=started_at,
        reason=reason,
        tries=int(tries),
        pruned_at=pruned_at,
    )


def snapshot_column_values(fields: dict[str, Any]) -> dict[str, Any]:
    """Checked ``update_snapshot`` fields as stored values (phase text, volumes as JSON)."""
    unknown = set(fields) - SNAPSHOT_FIELDS
    if unknown:
        raise ValidationError("fields", sorted(unknown), f"a snapshot update sets only {sorted(SNAPSHOT_FIELDS)}")
    values = dict(fields)
    if "phase" in values:
        values["phase"] = str(SnapshotPhase(values["phase"]))
    if "volumes" in values:
        volumes: list[SnapshotVolume] = list(values["volumes"])
        values["volumes"] = json.dumps(volumes_as_data(volumes))
    return values


class SnapshotTables:
    """Mixed into ``SqliteStore``: needs ``self._transaction``/``self._query``."""

    _transaction: Any  # context manager provided by SqliteStore
    _query: Any  # provided by SqliteStore

    def begin_snapshot(self, run_id: str, instance_id: str, token: str, at: str) -> RunSnapshot:
        with self._transaction() as db:
            server = db.execute(
                "SELECT 1 FROM run_servers WHERE run_id = ? AND instance_id = ?", (run_id, instance_id)
            ).fetchone()
            if server is None:
                raise NotFoundError(f"instance_id: {instance_id} is not a server of run {run_id}")
            db.execute(
                "INSERT INTO run_snapshots (run_id, instance_id, token, phase, requested_at, asked_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, instance_id) DO NOTHING",
                (run_id, instance_id, token, str(SnapshotPhase.ASKING), at, at),
            )
            row = db.execute(
                f"SELECT {_COLUMNS} FROM run_snapshots WHERE run_id = ? AND instance_id = ?", (run_id, instance_id)
            ).fetchone()
        return _snapshot(row)

    def update_snapshot(self, run_id: str, instance_id: str, **fields: Any) -> None:
        values = snapshot_column_values(fields)
        if not values:
            return
        assignments = ", ".join(f"{column} = ?" for column in values)  # column names come from SNAPSHOT_FIELDS
        with self._transaction() as db:
            changed = db.execute(
                f"UPDATE run_snapshots SET {assignments} WHERE run_id = ? AND instance_id = ?",
                (*values.values(), run_id, instance_id),
            ).rowcount
        if not changed:
            raise NotFoundError(f"instance_id: run {run_id} has no snapshot record of {instance_id}")

    def run_snapshot(self, run_id: str, instance_id: str) -> RunSnapshot | None:
        rows = self._query(
            f"SELECT {_COLUMNS} FROM run_snapshots WHERE run_id = ? AND instance_id = ?", (run_id, instance_id)
        )
        return _snapshot(rows[0]) if rows else None

    def run_snapshots(self, run_id: str) -> list[RunSnapshot]:
        rows = self._query(f"SELECT {_COLUMNS} FROM run_snapshots WHERE run_id = ? ORDER BY instance_id", (run_id,))
        return [_snapshot(row) for row in rows]

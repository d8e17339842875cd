"""SQLite tables of maintenance windows (the ``WindowStore`` port) and of the occurrences acted on.

An occurrence is claimed by inserting its row: the primary key (window, start) makes the second
scheduler's insert fail inside the same IMMEDIATE transaction that checked it, so two processes
never both start a run for one occurrence.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

from autopatch.domain.patching import RunStatus
from autopatch.domain.windows import MaintenanceWindow, OccurrenceRecord
from autopatch.errors import ConflictError, NotFoundError
from autopatch.store.base import now

WINDOWS_MIGRATION = """
    CREATE TABLE windows (
        name TEXT PRIMARY KEY,
        cron TEXT NOT NULL,
        duration_minutes INTEGER NOT NULL,
        cutoff_minutes INTEGER NOT NULL,
        group_key TEXT NOT NULL,
        group_value TEXT NOT NULL,
        timezone TEXT NOT NULL,
        baseline TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE window_occurrences (
        window_name TEXT NOT NULL,
        starts_at TEXT NOT NULL,
        claimed_by TEXT NOT NULL,
        claimed_at TEXT NOT NULL,
        run_id TEXT,
        note TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (window_name, starts_at)
    ) WITHOUT ROWID
"""
_COLUMNS = (
    "name, cron, duration_minutes, cutoff_minutes, group_key, group_value, timezone, baseline, created_at, updated_at"
)


def _minutes(duration: timedelta) -> int:
    return int(duration.total_seconds() // 60)


def _window(row: tuple[Any, ...]) -> MaintenanceWindow:
    name, cron, duration, cutoff, group_key, group_value, timezone, baseline, created_at, updated_at = row
    return MaintenanceWindow(
        name,
        cron,
        timedelta(minutes=duration),
        timedelta(minutes=cutoff),
        group_key,
        group_value,
        timezone,
        baseline,
        created_at,
        updated_at,
    )


class WindowTables:
    """Mixed into ``SqliteStore``: needs ``self._transaction``/``self._query``."""

    _transaction: Any  # context manager provided by SqliteStore
    _query: Any  # provided by SqliteStore

    def create_window(self, window: MaintenanceWindow) -> MaintenanceWindow:
        stamp = now()
        stored = replace(window, created_at=stamp, updated_at=stamp)
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM windows WHERE name = ?", (window.name,)).fetchone():
                raise ConflictError(f"name: a window named {window.name!r} exists; update or delete it first")
            db.execute(f"INSERT INTO windows ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _row(stored))
        return stored

    def replace_window(self, window: MaintenanceWindow) -> MaintenanceWindow:
        with self._transaction() as db:
            row = db.execute("SELECT created_at FROM windows WHERE name = ?", (window.name,)).fetchone()
            if row is None:
                raise NotFoundError(f"window: {window.name!r} is not a known window (see `autopatch window list`)")
            stored = replace(window, created_at=row[0], updated_at=now())
            db.execute(
                "UPDATE windows SET cron = ?, duration_minutes = ?, cutoff_minutes = ?, group_key = ?, "
                "group_value = ?, timezone = ?, baseline = ?, updated_at = ? WHERE name = ?",
                (*_row(stored)[1:8], stored.updated_at, stored.name),
            )
        return stored

    def get_window(self, name: str) -> MaintenanceWindow | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM windows WHERE name = ?", (name,))
        return _window(rows[0]) if rows else None

    def list_windows(self) -> list[MaintenanceWindow]:
        return [_window(row) for row in self._query(f"SELECT {_COLUMNS} FROM windows ORDER BY name")]

    def delete_window(self, name: str) -> bool:
        with self._transaction() as db:
            db.execute("DELETE FROM window_occurrences WHERE window_name = ?", (name,))
            return bool(db.execute("DELETE FROM windows WHERE name = ?", (name,)).rowcount)

    def claim_occurrence(self, window: str, starts_at: str, owner: str, claimed_at: str, stale_owner: str = "") -> bool:
        with self._transaction() as db:
            row = db.execute(
                "SELECT claimed_by, run_id FROM window_occurrences WHERE window_name = ? AND starts_at = ?",
                (window, starts_at),
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO window_occurrences (window_name, starts_at, claimed_by, claimed_at) "
                    "VALUES (?, ?, ?, ?)",
                    (window, starts_at, owner, claimed_at),
                )
                return True
            claimed_by, run_id = row
            if run_id is not None or not stale_owner or claimed_by != stale_owner:
                return False
            db.execute(
                "UPDATE window_occurrences SET claimed_by = ?, claimed_at = ?, note = '' "
                "WHERE window_name = ? AND starts_at = ? AND claimed_by = ? AND run_id IS NULL",
                (owner, claimed_at, window, starts_at, stale_owner),
            )
            return True

    def record_occurrence(self, window: str, starts_at: str, run_id: str | None, note: str = "") -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE window_occurrences SET run_id = ?, note = ? WHERE window_name = ? AND starts_at = ?",
                (run_id, note[:500], window, starts_at),
            )

    def window_occurrences(self, window: str, limit: int = 20) -> list[OccurrenceRecord]:
        rows = self._query(
            "SELECT window_name, starts_at, claimed_by, claimed_at, run_id, note FROM window_occurrences "
            "WHERE window_name = ? ORDER BY starts_at DESC LIMIT ?",
            (window, limit),
        )
        return [OccurrenceRecord(*row) for row in rows]

    def reopen_paused_run(self, run_id: str, options: dict[str, object]) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE runs SET status = ?, reason = '', options = ? WHERE run_id = ? AND status = ?",
                (RunStatus.RUNNING, json.dumps(options), run_id, RunStatus.PAUSED),
            )
            return bool(cursor.rowcount == 1)


def _row(window: MaintenanceWindow) -> tuple[object, ...]:
    return (
        window.name,
        window.cron,
        _minutes(window.duration),
        _minutes(window.cutoff),
        window.group_key,
        window.group_value,
        window.timezone,
        window.baseline,
        window.created_at,
        window.updated_at,
    )

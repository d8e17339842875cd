"""SQLite tables for settings overrides, runs' exposure snapshots and Step Functions waiters.

Settings: one row per key an admin set (``autopatch settings set`` or ``PUT /api/v1/settings``);
which keys exist and how their values are checked is ``autopatch.admin_settings``'s business, the
table only keeps text. Run exposure: the open CVE counts of a run's servers when it was planned
and when it finished, so "before and after" is a stored fact, not something a browser remembered.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from autopatch.errors import NotFoundError

WAITERS_MIGRATION = """
    CREATE TABLE waiters (
        key TEXT PRIMARY KEY,
        token TEXT NOT NULL,
        created_at TEXT NOT NULL
    ) WITHOUT ROWID
"""
SETTINGS_MIGRATION = """
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE run_exposure (
        run_id TEXT NOT NULL REFERENCES runs ON DELETE CASCADE,
        phase TEXT NOT NULL,
        counts TEXT NOT NULL,
        PRIMARY KEY (run_id, phase)
    ) WITHOUT ROWID
"""


class SettingsTables:
    """Mixed into ``SqliteStore``: needs ``self._transaction``/``self._query``."""

    _transaction: Any  # context manager provided by SqliteStore
    _query: Any  # provided by SqliteStore

    def stored_settings(self) -> dict[str, str]:
        return {str(key): str(value) for key, value in self._query("SELECT key, value FROM settings ORDER BY key")}

    def put_setting(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO settings VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                "value = excluded.value, updated_at = excluded.updated_at",
                (key, value, datetime.now(UTC).isoformat(timespec="seconds")),
            )

    def delete_setting(self, key: str) -> bool:
        with self._transaction() as db:
            return bool(db.execute("DELETE FROM settings WHERE key = ?", (key,)).rowcount)

    def save_run_exposure(self, run_id: str, phase: str, counts: dict[str, Any]) -> None:
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                raise NotFoundError(f"run: {run_id!r} is not a known run")
            row = (run_id, phase, json.dumps(counts, sort_keys=True))
            db.execute("INSERT OR REPLACE INTO run_exposure VALUES (?, ?, ?)", row)

    def put_waiter(self, key: str, token: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO waiters VALUES (?, ?, ?)",
                (key, token, datetime.now(UTC).isoformat(timespec="seconds")),
            )

    def take_waiter(self, key: str) -> str | None:
        with self._transaction() as db:
            row = db.execute("DELETE FROM waiters WHERE key = ? RETURNING token", (key,)).fetchone()
        return str(row[0]) if row else None

    def run_exposure(self, run_id: str) -> dict[str, dict[str, Any]]:
        rows = self._query("SELECT phase, counts FROM run_exposure WHERE run_id = ?", (run_id,))
        return {str(phase): json.loads(counts) for phase, counts in rows}

"""SQLite table of patch baselines (the ``BaselineStore`` port).

A baseline is kept whole as JSON (``domain/baselines.baseline_record``) under its name: it is read
whole by every plan and written whole by every change, and its fields (rings, snapshot) grow with
the features that use them without a migration each.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from autopatch.domain.baselines import Baseline, baseline_from_record, baseline_record
from autopatch.errors import ConflictError, NotFoundError
from autopatch.store.base import now

BASELINES_MIGRATION = """
    CREATE TABLE baselines (
        name TEXT PRIMARY KEY,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) WITHOUT ROWID
"""


def _baseline(row: tuple[Any, ...]) -> Baseline:
    body, created_at, updated_at = row
    return replace(baseline_from_record(json.loads(body)), created_at=created_at, updated_at=updated_at)


def _body(baseline: Baseline) -> str:
    return json.dumps(baseline_record(baseline), sort_keys=True)


class BaselineTables:
    """Mixed into ``SqliteStore``: needs ``self._transaction``/``self._query``."""

    _transaction: Any  # context manager provided by SqliteStore
    _query: Any  # provided by SqliteStore

    def create_baseline(self, baseline: Baseline) -> Baseline:
        stamp = now()
        stored = replace(baseline, created_at=stamp, updated_at=stamp)
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM baselines WHERE name = ?", (baseline.name,)).fetchone():
                raise ConflictError(f"name: a baseline named {baseline.name!r} exists; update or delete it first")
            db.execute("INSERT INTO baselines VALUES (?, ?, ?, ?)", (stored.name, _body(stored), stamp, stamp))
        return stored

    def replace_baseline(self, baseline: Baseline) -> Baseline:
        with self._transaction() as db:
            row = db.execute("SELECT created_at FROM baselines WHERE name = ?", (baseline.name,)).fetchone()
            if row is None:
                raise NotFoundError(
                    f"baseline: {baseline.name!r} is not a known baseline (see `autopatch baseline list`)"
                )
            stored = replace(baseline, created_at=row[0], updated_at=now())
            db.execute(
                "UPDATE baselines SET body = ?, updated_at = ? WHERE name = ?",
                (_body(stored), stored.updated_at, stored.name),
            )
        return stored

    def get_baseline(self, name: str) -> Baseline | None:
        rows = self._query("SELECT body, created_at, updated_at FROM baselines WHERE name = ?", (name,))
        return _baseline(rows[0]) if rows else None

    def list_baselines(self) -> list[Baseline]:
        return [
            _baseline(row) for row in self._query("SELECT body, created_at, updated_at FROM baselines ORDER BY name")
        ]

    def delete_baseline(self, name: str) -> bool:
        with self._transaction() as db:
            return bool(db.execute("DELETE FROM baselines WHERE name = ?", (name,)).rowcount)

"""Change counters of the catalog, the fleet and runs, so readers keep what they computed until one moves.

The API's fleet summary costs seconds at 10,000 servers, and its status view is polled many
times a second; one-row reads tell it whether what it holds is still the truth. Every write that
changes what they are computed from (a catalog document, discovery, a scan, a run's KBs) bumps
its counter in the same transaction, so a reader never sees new data under an old counter.
Counters only grow; their values mean nothing else.
"""

from __future__ import annotations

import sqlite3
from typing import Any

REVISIONS_MIGRATION = """
    CREATE TABLE revisions (
        part TEXT PRIMARY KEY,
        counter INTEGER NOT NULL
    ) WITHOUT ROWID
"""
CATALOG = "catalog"
FLEET = "fleet"
RUNS = "runs"


def bump_revision(db: sqlite3.Connection, part: str) -> None:
    """Inside the caller's transaction: ``part`` changed."""
    db.execute(
        "INSERT INTO revisions (part, counter) VALUES (?, 1) ON CONFLICT (part) DO UPDATE SET counter = counter + 1",
        (part,),
    )


class RevisionTables:
    """The counters of ``CatalogStore.catalog_revision`` and ``FleetStore.fleet_revision``."""

    _query: Any  # provided by SqliteStore

    def _revision(self, part: str) -> int:
        rows = self._query("SELECT counter FROM revisions WHERE part = ?", (part,))
        return int(rows[0][0]) if rows else 0

    def catalog_revision(self) -> int:
        return self._revision(CATALOG)

    def fleet_revision(self) -> int:
        return self._revision(FLEET)

    def runs_revision(self) -> int:
        return self._revision(RUNS)

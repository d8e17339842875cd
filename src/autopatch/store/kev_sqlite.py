"""SQLite tables of CISA's KEV catalog (the ``KevStore`` port): one row per CVE and one header row.

An import replaces every entry in one transaction (the feed is published whole and is small), and
moves the catalog counter with it: exposure kept by the API's fleet summary carries ``kev`` and
due dates, so it must be recomputed when the KEV catalog changes, as when an MSRC month does.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from autopatch.domain.catalog import ImportCounts
from autopatch.domain.kev import KevCatalog, KevCatalogInfo, KevEntry, compare_entries
from autopatch.store.revisions_sqlite import CATALOG, bump_revision

KEV_MIGRATION = """
    CREATE TABLE kev_entries (
        cve TEXT PRIMARY KEY,
        date_added TEXT NOT NULL,
        due_date TEXT NOT NULL,
        vendor_project TEXT NOT NULL,
        product TEXT NOT NULL,
        vulnerability_name TEXT NOT NULL,
        short_description TEXT NOT NULL,
        known_ransomware_campaign_use TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE kev_catalog (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        catalog_version TEXT NOT NULL,
        date_released TEXT NOT NULL,
        source TEXT NOT NULL,
        imported_at TEXT NOT NULL
    )
"""
_COLUMNS = (
    "cve, date_added, due_date, vendor_project, product, vulnerability_name, short_description, "
    "known_ransomware_campaign_use"
)


def _row(entry: KevEntry) -> tuple[str, ...]:
    return (
        entry.cve,
        entry.date_added.isoformat(),
        entry.due_date.isoformat(),
        entry.vendor_project,
        entry.product,
        entry.vulnerability_name,
        entry.short_description,
        entry.known_ransomware_campaign_use,
    )


def _entry(row: tuple[Any, ...]) -> KevEntry:
    cve, added, due, vendor, product, name, description, ransomware = row
    return KevEntry(
        str(cve), date.fromisoformat(added), date.fromisoformat(due), vendor, product, name, description, ransomware
    )


class KevTables:
    """Mixed into ``SqliteStore``: needs ``self._transaction``/``self._query``."""

    _transaction: Any  # context manager provided by SqliteStore
    _query: Any  # provided by SqliteStore

    def replace_kev_catalog(self, catalog: KevCatalog, source: str, imported_at: str) -> ImportCounts:
        with self._transaction() as db:
            old = [_entry(row) for row in db.execute(f"SELECT {_COLUMNS} FROM kev_entries")]
            counts = compare_entries(old, catalog.entries)
            db.execute("DELETE FROM kev_entries")
            db.executemany(
                f"INSERT INTO kev_entries ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", map(_row, catalog.entries)
            )
            db.execute(
                "INSERT OR REPLACE INTO kev_catalog VALUES (1, ?, ?, ?, ?)",
                (catalog.catalog_version, catalog.date_released, source, imported_at),
            )
            bump_revision(db, CATALOG)
        return counts

    def kev_catalog_info(self) -> KevCatalogInfo | None:
        rows = self._query(
            "SELECT catalog_version, date_released, source, imported_at, (SELECT count(*) FROM kev_entries) "
            "FROM kev_catalog WHERE id = 1"
        )
        if not rows:
            return None
        version, released, source, imported_at, count = rows[0]
        return KevCatalogInfo(version, released, imported_at, source, int(count))

    def list_kev_entries(self) -> list[KevEntry]:
        return [_entry(row) for row in self._query(f"SELECT {_COLUMNS} FROM kev_entries ORDER BY cve")]

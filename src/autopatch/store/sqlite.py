"""SQLite adapter of the store port: the embedded store (WAL, foreign keys, versioned schema).

One connection per store object; every write is one transaction, so an import that fails half
way leaves the database exactly as it was. ``sqlite3`` errors are translated into ``StoreError``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from autopatch.domain.catalog import (
    AffectedRecord,
    CatalogDocument,
    FixRecord,
    ImportCounts,
    Product,
    ProductSummary,
    StoredDocument,
)
from autopatch.domain.fleet import Instance, ScanReport
from autopatch.errors import StoreError, ValidationError
from autopatch.store.access_sqlite import ACCESS_MIGRATION, AccessTables
from autopatch.store.baselines_sqlite import BASELINES_MIGRATION, BaselineTables
from autopatch.store.catalog_rows_sqlite import CatalogRowDecoder, catalog_search_url
from autopatch.store.fleet_sqlite import (
    FLEET_MIGRATION,
    INSTANCE_COLUMNS,
    OFFLINE_SINCE_MIGRATION,
    SCAN_BOOT_MIGRATION,
    SCAN_COLUMNS,
    instance_from_row,
    instance_row,
    scan_from_row,
)
from autopatch.store.fleet_view_sqlite import (
    FLEET_VIEW_MIGRATION,
    NEWEST_SCAN_FACTS_MIGRATION,
    FleetViewTables,
    document_footprint,
    log_catalog_change,
    log_fleet_change,
    record_newest,
    scan_rows,
)
from autopatch.store.history_sqlite import HISTORY_MIGRATION, HistoryTables
from autopatch.store.jobs_sqlite import JOBS_MIGRATION, JobTables
from autopatch.store.kev_sqlite import KEV_MIGRATION, KevTables
from autopatch.store.revisions_sqlite import REVISIONS_MIGRATION, RevisionTables
from autopatch.store.rings_sqlite import RINGS_MIGRATION, RingTables
from autopatch.store.runs_sqlite import (
    RUN_EXPLOITED_MIGRATION,
    RUN_OWNER_MIGRATION,
    RUN_REBOOT_MIGRATION,
    RUNS_MIGRATION,
    RunTables,
)
from autopatch.store.settings_sqlite import SETTINGS_MIGRATION, WAITERS_MIGRATION, SettingsTables
from autopatch.store.snapshots_sqlite import SNAPSHOTS_MIGRATION, SnapshotTables
from autopatch.store.windows_sqlite import WINDOWS_MIGRATION, WindowTables

# Each entry upgrades the schema by one version; PRAGMA user_version records how far we are.
# Child rows reference their document only (not each other): per-row composite foreign keys
# cost a third of the import time, and rows never outlive their document anyway. Fix rows are
# kept narrow because there are hundreds of thousands: the KB article URL is derived from the
# KB, and the download URL is stored only when it is not the usual catalog search link.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE documents (
        document_id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        revision TEXT NOT NULL,
        initial_release_date TEXT,
        current_release_date TEXT,
        source_format TEXT NOT NULL,
        source_sha256 TEXT NOT NULL,
        imported_at TEXT NOT NULL
    );
    CREATE TABLE products (
        product_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        family TEXT
    );
    CREATE INDEX products_by_name ON products (name COLLATE NOCASE);
    CREATE TABLE vulnerabilities (
        document_id TEXT NOT NULL REFERENCES documents ON DELETE CASCADE,
        cve TEXT NOT NULL,
        title TEXT NOT NULL,
        cwe TEXT NOT NULL,
        exploited INTEGER,
        publicly_disclosed INTEGER,
        release_date TEXT,
        PRIMARY KEY (document_id, cve)
    ) WITHOUT ROWID;
    CREATE TABLE affected (
        document_id TEXT NOT NULL REFERENCES documents ON DELETE CASCADE,
        cve TEXT NOT NULL,
        product_id TEXT NOT NULL REFERENCES products,
        severity TEXT,
        impact TEXT,
        cvss_base REAL,
        cvss_temporal REAL,
        cvss_vector TEXT,
        PRIMARY KEY (document_id, cve, product_id)
    ) WITHOUT ROWID;
    CREATE INDEX affected_by_product ON affected (product_id, cve);
    CREATE TABLE fixes (
        document_id TEXT NOT NULL REFERENCES documents ON DELETE CASCADE,
        cve TEXT NOT NULL,
        product_id TEXT NOT NULL,
        kb INTEGER NOT NULL,
        subtype TEXT,
        fixed_build TEXT,
        supersedes TEXT NOT NULL,
        restart_required TEXT,
        download_url TEXT,
        PRIMARY KEY (document_id, cve, product_id, kb)
    ) WITHOUT ROWID;
    CREATE INDEX fixes_by_kb ON fixes (kb);
    CREATE TABLE supersedence (
        document_id TEXT NOT NULL REFERENCES documents ON DELETE CASCADE,
        kb INTEGER NOT NULL,
        superseded_kb INTEGER NOT NULL,
        PRIMARY KEY (document_id, kb, superseded_kb)
    ) WITHOUT ROWID;
    CREATE INDEX supersedence_by_kb ON supersedence (kb);
    CREATE INDEX supersedence_by_superseded ON supersedence (superseded_kb);
    """,
    FLEET_MIGRATION,
    RUNS_MIGRATION,
    OFFLINE_SINCE_MIGRATION,
    RUN_OWNER_MIGRATION,
    SCAN_BOOT_MIGRATION,
    RUN_REBOOT_MIGRATION,
    ACCESS_MIGRATION,
    f"{REVISIONS_MIGRATION};{SETTINGS_MIGRATION}",
    WAITERS_MIGRATION,
    JOBS_MIGRATION,
    WINDOWS_MIGRATION,
    RINGS_MIGRATION,
    SNAPSHOTS_MIGRATION,
    BASELINES_MIGRATION,
    KEV_MIGRATION,
    RUN_EXPLOITED_MIGRATION,
    HISTORY_MIGRATION,
    FLEET_VIEW_MIGRATION,
    NEWEST_SCAN_FACTS_MIGRATION,
)
SCHEMA_VERSION = len(MIGRATIONS)
BUSY_TIMEOUT_SECONDS = 5.0  # SQLite's own wait for a lock, per statement
LOCK_WAIT_SECONDS = 120.0  # how long a write waits in all for another process's write to end


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def _day(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


def _compact_download_url(kb: int, url: str | None) -> str | None:
    """NULL for the usual catalog link, '' for "Microsoft gave none", the URL otherwise (``expand_download_url``)."""
    if url is None:
        return ""
    return None if url == catalog_search_url(kb) else url


def _placeholders(values: Collection[object]) -> str:
    return ",".join("?" * len(values))


class SqliteStore(
    RingTables,
    RunTables,
    AccessTables,
    SettingsTables,
    RevisionTables,
    JobTables,
    WindowTables,
    SnapshotTables,
    BaselineTables,
    KevTables,
    HistoryTables,
    FleetViewTables,
):
    """The embedded store. ``path`` may be ``":memory:"`` for throwaway use."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._known_products: dict[str, tuple[str, str | None]] | None = None
        self._lock = threading.RLock()
        file = Path(self.path)
        # A database we may not write (a copy handed to an auditor, a read-only mount) still answers reads.
        self.read_only = self.path != ":memory:" and file.is_file() and not os.access(file, os.W_OK)
        try:
            if self.path != ":memory:":
                file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValidationError("db", self.path, f"its folder cannot be created ({exc.strerror})") from exc
        try:
            if self.read_only:
                self._db = sqlite3.connect(
                    f"{file.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
                )
            else:
                self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from exc

    # --- infrastructure ------------------------------------------------------------------------

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {version}; this AutoPatch knows up to {SCHEMA_VERSION}")
        if self.read_only and version < SCHEMA_VERSION:
            raise StoreError(f"{self.path} is read-only and needs a schema upgrade ({version} → {SCHEMA_VERSION})")
        for number in range(version, SCHEMA_VERSION):
            with self._transaction():
                self._run_script(MIGRATIONS[number])
                self._db.execute(f"PRAGMA user_version = {number + 1}")

    def _run_script(self, script: str) -> None:
        # executescript() would COMMIT our transaction; run statement by statement instead.
        for statement in script.split(";"):
            if statement.strip():
                self._db.execute(statement)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # One connection shared by the engine's worker threads: the lock keeps each
        # transaction whole (BEGIN … COMMIT never interleaves).
        if self.read_only:
            raise StoreError(f"the database {self.path} is read-only: this command needs to write to it")
        with self._lock:
            try:
                self._begin()
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"database write failed: {exc}") from exc

    def _begin(self) -> None:
        """Take the write lock, waiting out another process's long write (a catalog import) with backoff.

        SQLite's busy timeout already waits; beyond it the lock is retried for ``LOCK_WAIT_SECONDS``
        in all, so a patch run never fails a KB because an import held the database for a while.
        """
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        delay = 0.05
        while True:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                locked = "locked" in str(exc) or "busy" in str(exc)
                if not locked or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _query(self, sql: str, parameters: Iterable[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(parameters)).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"database read failed: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    # --- documents -----------------------------------------------------------------------------

    def get_document(self, document_id: str) -> StoredDocument | None:
        rows = self._query("SELECT * FROM documents WHERE document_id = ?", (document_id,))
        return self._document(rows[0]) if rows else None

    def list_documents(self) -> list[StoredDocument]:
        return [self._document(row) for row in self._query("SELECT * FROM documents ORDER BY document_id")]

    @staticmethod
    def _document(row: tuple[object, ...]) -> StoredDocument:
        document_id, title, revision, initial, current, source_format, sha256, imported_at = row
        return StoredDocument(
            document_id=str(document_id),
            title=str(title),
            revision=str(revision),
            initial_release_date=_day(initial),  # type: ignore[arg-type]
            current_release_date=_day(current),  # type: ignore[arg-type]
            source_format=str(source_format),
            source_sha256=str(sha256),
            imported_at=str(imported_at),
        )

    def replace_document(self, document: CatalogDocument, source_sha256: str) -> ImportCounts:
        info = document.info
        fix_rows = [
            (
                info.document_id,
                fix.cve,
                fix.product_id,
                fix.kb,
                fix.subtype,
                fix.fixed_build,
                ",".join(map(str, fix.supersedes)),
                fix.restart_required,
                _compact_download_url(fix.kb, fix.download_url),
            )
            for fix in document.fixes
        ]
        changed_products = self._changed_products(document)
        with self._transaction() as db:
            replaced_products, replaced_kbs = document_footprint(db, info.document_id)  # what the old version listed
            old_rows = {
                row[1:4]: row for row in db.execute("SELECT * FROM fixes WHERE document_id = ?", (info.document_id,))
            }
            db.execute("DELETE FROM documents WHERE document_id = ?", (info.document_id,))
            db.execute(
                "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    info.document_id,
                    info.title,
                    info.revision,
                    _iso(info.initial_release_date),
                    _iso(info.current_release_date),
                    info.source_format,
                    source_sha256,
                    datetime.now(UTC).isoformat(timespec="seconds"),
                ),
            )
            db.executemany(
                "INSERT INTO products VALUES (?, ?, ?) ON CONFLICT (product_id) DO UPDATE SET "
                "name = excluded.name, family = coalesce(excluded.family, products.family)",
                changed_products,
            )
            db.executemany(
                "INSERT INTO vulnerabilities VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        info.document_id,
                        v.cve,
                        v.title,
                        json.dumps(v.cwe),
                        v.exploited,
                        v.publicly_disclosed,
                        _iso(v.release_date),
                    )
                    for v in document.vulnerabilities
                ),
            )
            db.executemany(
                "INSERT INTO affected VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ((info.document_id, *row) for row in document.affected),
            )
            db.executemany("INSERT INTO fixes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", fix_rows)
            # One edge per (KB, older KB): an LCU repeats the same edge for every CVE and product.
            edges = {(fix.kb, old) for fix in document.fixes for old in fix.supersedes}
            db.executemany("INSERT INTO supersedence VALUES (?, ?, ?)", ((info.document_id, *edge) for edge in edges))
            products, kbs = document_footprint(db, info.document_id)
            log_catalog_change(db, products | replaced_products, kbs | replaced_kbs)
        assert self._known_products is not None
        for product_id, name, family in changed_products:  # only once the transaction committed
            self._known_products[product_id] = (name, family or self._known_products.get(product_id, ("", None))[1])
        return self._compare(old_rows, fix_rows)

    def _changed_products(self, document: CatalogDocument) -> list[tuple[str, str, str | None]]:
        """Only new or renamed products: every month repeats the whole product tree."""
        if self._known_products is None:
            self._known_products = {
                str(pid): (str(name), family) for pid, name, family in self._query("SELECT * FROM products")
            }
        known = self._known_products
        return [
            (p.product_id, p.name, p.family)
            for p in document.products
            if (old := known.get(p.product_id)) is None or old[0] != p.name or (p.family and old[1] != p.family)
        ]

    @staticmethod
    def _compare(
        old_rows: dict[tuple[object, ...], tuple[object, ...]], new_rows: Sequence[tuple[object, ...]]
    ) -> ImportCounts:
        if not old_rows:
            return ImportCounts(added=len(new_rows))
        added = updated = unchanged = 0
        for row in new_rows:
            previous = old_rows.pop(row[1:4], None)
            if previous is None:
                added += 1
            elif previous == row:
                unchanged += 1
            else:
                updated += 1
        return ImportCounts(added=added, updated=updated, unchanged=unchanged, removed=len(old_rows))

    # --- catalog reads -------------------------------------------------------------------------

    def list_products(self) -> list[Product]:
        return [Product(*row) for row in self._query("SELECT * FROM products ORDER BY name")]

    def products_named(self, name: str, product_id: str) -> list[Product]:
        rows = self._query(
            "SELECT * FROM products WHERE name = ? COLLATE NOCASE OR product_id = ? ORDER BY product_id",
            (name, product_id),
        )
        return [Product(*row) for row in rows]

    def product_summaries(self) -> list[ProductSummary]:
        # One grouped pass over each table: per-product correlated counts would scan fixes
        # once per product (there is no fixes-by-product index; see MIGRATIONS).
        rows = self._query(
            """
            SELECT p.product_id, p.name, p.family, coalesce(a.cves, 0), coalesce(f.kbs, 0)
            FROM products p
            LEFT JOIN (SELECT product_id, count(DISTINCT cve) AS cves FROM affected GROUP BY product_id) a
                USING (product_id)
            LEFT JOIN (SELECT product_id, count(DISTINCT kb) AS kbs FROM fixes GROUP BY product_id) f
                USING (product_id)
            ORDER BY p.name
            """
        )
        return [ProductSummary(*row) for row in rows]

    def affected(
        self,
        product_ids: Collection[str],
        document_ids: Collection[str] | None = None,
        cves: Collection[str] | None = None,
    ) -> list[AffectedRecord]:
        sql = [
            """
            SELECT a.document_id, a.cve, a.product_id, p.name, p.family, v.title, a.severity, a.impact,
                   a.cvss_base, a.cvss_temporal, a.cvss_vector, v.cwe, v.exploited,
                   v.publicly_disclosed, v.release_date
            FROM affected a
            JOIN products p ON p.product_id = a.product_id
            JOIN vulnerabilities v ON v.document_id = a.document_id AND v.cve = a.cve
            """
            f"WHERE a.product_id IN ({_placeholders(product_ids)})"
        ]
        parameters: list[object] = list(product_ids)
        for column, values in (("a.document_id", document_ids), ("a.cve", cves)):
            if values is not None:
                sql.append(f"AND {column} IN ({_placeholders(values)})")
                parameters.extend(values)
        rows = self._query(" ".join(sql), parameters)
        return list(map(CatalogRowDecoder().affected, rows))

    def fixes_for_products(self, product_ids: Collection[str], cves: Collection[str] | None = None) -> list[FixRecord]:
        sql = f"SELECT * FROM fixes WHERE product_id IN ({_placeholders(product_ids)})"
        parameters: list[object] = list(product_ids)
        if cves is not None:
            sql += f" AND cve IN ({_placeholders(cves)})"
            parameters.extend(cves)
        return list(map(CatalogRowDecoder().fix, self._query(sql, parameters)))

    def fixes_for_kbs(self, kbs: Iterable[int]) -> list[FixRecord]:
        wanted = list(kbs)
        sql = f"SELECT * FROM fixes WHERE kb IN ({_placeholders(wanted)})"
        return list(map(CatalogRowDecoder().fix, self._query(sql, wanted)))

    def _edges(self, column: str, other: str, kbs: Iterable[int]) -> dict[int, set[int]]:
        wanted = list(kbs)
        result: dict[int, set[int]] = {kb: set() for kb in wanted}
        sql = f"SELECT DISTINCT {column}, {other} FROM supersedence WHERE {column} IN ({_placeholders(wanted)})"
        for key, value in self._query(sql, wanted):
            result[int(key)].add(int(value))
        return result

    def superseded_by(self, kbs: Iterable[int]) -> dict[int, set[int]]:
        return self._edges("superseded_kb", "kb", kbs)

    def supersedes(self, kbs: Iterable[int]) -> dict[int, set[int]]:
        return self._edges("kb", "superseded_kb", kbs)

    def counts(self) -> dict[str, int]:
        queries = {
            "documents": "SELECT count(*) FROM documents",
            "cves": "SELECT count(DISTINCT cve) FROM vulnerabilities",
            "products": "SELECT count(*) FROM products",
            "kbs": "SELECT count(DISTINCT kb) FROM fixes",
            "entries": "SELECT count(*) FROM fixes",
        }
        return {name: int(self._query(sql)[0][0]) for name, sql in queries.items()}

    # --- fleet ---------------------------------------------------------------------------------

    def save_instances(self, instances: Iterable[Instance], discovered_at: datetime) -> None:
        """Upsert what discovery found; instances no longer listed are kept (history)."""
        listed = list(instances)
        with self._transaction() as db:
            db.executemany(
                f"INSERT INTO instances ({INSTANCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (instance_id) DO UPDATE SET "
                "name = excluded.name, platform_name = excluded.platform_name, "
                "platform_version = excluded.platform_version, online = excluded.online, "
                "ip_address = excluded.ip_address, ami_id = excluded.ami_id, ami_name = excluded.ami_name, "
                "tags = excluded.tags, discovered_at = excluded.discovered_at, "
                "offline_since = CASE WHEN excluded.online THEN NULL "
                "ELSE coalesce(instances.offline_since, excluded.offline_since) END",
                (instance_row(instance, discovered_at) for instance in listed),
            )
            log_fleet_change(db, [instance.instance_id for instance in listed])

    def list_instances(self) -> list[Instance]:
        rows = self._query(f"SELECT {INSTANCE_COLUMNS} FROM instances ORDER BY name, instance_id")
        return [instance_from_row(row) for row in rows]

    def get_instance(self, instance_id: str) -> Instance | None:
        rows = self._query(f"SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = ?", (instance_id,))
        return instance_from_row(rows[0]) if rows else None

    def save_scans(self, scans: Iterable[ScanReport]) -> None:
        rows = scan_rows(scans)  # encoded before the write lock is taken
        with self._transaction() as db:
            db.executemany(f"INSERT OR REPLACE INTO scans ({SCAN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            record_newest(db, rows)
            log_fleet_change(db, [row[0] for row in rows])

    def latest_scans(self, instance_ids: Collection[str] | None = None) -> dict[str, ScanReport]:
        """The newest scan of each instance (all instances, or the given ones)."""
        sql = (
            f"SELECT {', '.join('s.' + column for column in SCAN_COLUMNS.split(', '))} FROM newest_scans n "
            "JOIN scans s ON s.instance_id = n.instance_id AND s.scanned_at = n.scanned_at"
        )
        parameters: list[object] = []
        if instance_ids is not None:
            sql += f" WHERE n.instance_id IN ({_placeholders(instance_ids)})"
            parameters.extend(instance_ids)
        return {scan.instance_id: scan for scan in map(scan_from_row, self._query(sql, parameters))}

"""SQLite side of the fleet view: newest-scan pointers, the change log, and the narrow fleet read.

``newest_scans`` holds each instance's newest scan time and what its exposure reads of it (build,
installation type, KB lists: one row per instance, moved forward in the transaction that stores a
newer scan, never back), so "every server's latest scan" reads one row per server however long
the scan history grows (the GROUP BY it replaces read every scan ever stored), and the fleet's
exposure reads this one compact table, never the history.

``changes`` logs what each write of the catalog or the fleet touched, under the revision the
write moved its counter to (``revisions_sqlite``), in the same transaction: a reader holding
revision R asks for the rows after R and gets exactly the writes it has not seen. Rows are kept
for the last ``KEPT_REVISIONS`` revisions of each part; a write touching more than
``LOGGED_KEYS_LIMIT`` instances logs "many" (NULL), after which a reader recomputes everything,
which is what it would choose anyway.

Scans are encoded once per distinct KB list: the servers of a patch level share their lists, so
100,000 scans cost a few hundred ``json.dumps``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

from autopatch.domain.fleet import ScanReport
from autopatch.domain.fleet_view import CatalogChanges, FleetChanges, ScannedServer
from autopatch.errors import StoreError
from autopatch.store.revisions_sqlite import CATALOG, FLEET, bump_revision

FLEET_VIEW_MIGRATION = """
    CREATE TABLE newest_scans (
        instance_id TEXT PRIMARY KEY,
        scanned_at TEXT NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO newest_scans SELECT instance_id, max(scanned_at) FROM scans GROUP BY instance_id;
    CREATE TABLE changes (
        part TEXT NOT NULL,
        revision INTEGER NOT NULL,
        keys TEXT,
        PRIMARY KEY (part, revision)
    ) WITHOUT ROWID
"""
# The newest scan's time became its exposure facts too: the fleet's exposure then reads this one
# compact table instead of joining every server's row of the history.
NEWEST_SCAN_FACTS_MIGRATION = """
    DROP TABLE newest_scans;
    CREATE TABLE newest_scans (
        instance_id TEXT PRIMARY KEY,
        scanned_at TEXT NOT NULL,
        build TEXT NOT NULL,
        installation_type TEXT NOT NULL,
        installed_kbs TEXT NOT NULL,
        offered TEXT NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO newest_scans
        SELECT s.instance_id, s.scanned_at, s.build, s.installation_type, s.installed_kbs, s.offered
        FROM scans s JOIN (SELECT instance_id, max(scanned_at) AS newest FROM scans GROUP BY instance_id) m
            ON s.instance_id = m.instance_id AND s.scanned_at = m.newest
"""
KEPT_REVISIONS = 1000  # log rows kept per part
LOGGED_KEYS_LIMIT = 2000  # instances logged one by one per write; beyond, "many"
_IN_CHUNK = 500  # ids per IN (...) list
_BATCH = 2_000  # rows fetched at a time by a streamed read
_UNSCANNED: tuple[None, tuple[Any, ...]] = (None, (None, None, frozenset(), None))  # before a first scan


class ScanEncoder:
    """``scans`` rows of reports, each distinct KB list encoded once (one encoder per write)."""

    def __init__(self) -> None:
        self._installed: dict[frozenset[str], str] = {}
        self._offered: dict[tuple[Any, ...], str] = {}

    def row(self, scan: ScanReport) -> tuple[Any, ...]:
        installed = self._installed.get(scan.installed_kbs)
        if installed is None:
            installed = self._installed[scan.installed_kbs] = json.dumps(sorted(scan.installed_kbs))
        offered = self._offered.get(scan.offered)
        if offered is None:
            offered = self._offered[scan.offered] = json.dumps([[update.kb, update.title] for update in scan.offered])
        return (
            scan.instance_id,
            scan.scanned_at.isoformat(),
            scan.os_caption,
            scan.build,
            scan.installation_type,
            installed,
            offered,
            int(scan.pending_reboot),
            scan.boot_time.isoformat() if scan.boot_time else None,
            scan.error,
        )


def scan_rows(scans: Iterable[ScanReport]) -> list[tuple[Any, ...]]:
    """Encoded rows in primary-key order: a bulk insert then walks the B-tree once, not at random."""
    encoder = ScanEncoder()
    return sorted(map(encoder.row, scans), key=itemgetter(0, 1))


def record_newest(db: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Inside the caller's transaction: move each instance's newest scan forward (never back).

    A scan stored again at the same time replaces the newest, as it replaces the row in ``scans``.
    """
    db.executemany(
        "INSERT INTO newest_scans VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (instance_id) DO UPDATE SET "
        "scanned_at = excluded.scanned_at, build = excluded.build, installation_type = excluded.installation_type, "
        "installed_kbs = excluded.installed_kbs, offered = excluded.offered "
        "WHERE excluded.scanned_at >= newest_scans.scanned_at",
        ((row[0], row[1], row[3], row[4], row[5], row[6]) for row in rows),
    )


def log_change(db: sqlite3.Connection, part: str, keys: object | None) -> None:
    """Inside the caller's transaction: move ``part``'s counter and log what the write touched.

    ``keys`` is JSON-ready; None logs "not known" (a reader then starts afresh).
    """
    bump_revision(db, part)
    (revision,) = db.execute("SELECT counter FROM revisions WHERE part = ?", (part,)).fetchone()
    db.execute(
        "INSERT OR REPLACE INTO changes VALUES (?, ?, ?)",
        (part, revision, None if keys is None else json.dumps(keys, separators=(",", ":"))),
    )
    db.execute("DELETE FROM changes WHERE part = ? AND revision <= ?", (part, revision - KEPT_REVISIONS))


def log_fleet_change(db: sqlite3.Connection, instance_ids: Collection[str]) -> None:
    """The fleet write's counter move and log row: the instances it touched (or "many")."""
    log_change(db, FLEET, sorted(set(instance_ids)) if len(instance_ids) <= LOGGED_KEYS_LIMIT else None)


def log_catalog_change(db: sqlite3.Connection, products: Iterable[str], kbs: Iterable[int]) -> None:
    """The catalog write's counter move and log row: the product names and KBs it touched."""
    log_change(db, CATALOG, {"products": sorted(set(products)), "kbs": sorted(set(kbs))})


def document_footprint(db: sqlite3.Connection, document_id: str) -> tuple[set[str], set[int]]:
    """The product names and KBs a stored document lists (fixes and both ends of its supersedence edges)."""
    names = {
        name
        for (name,) in db.execute(
            "SELECT name FROM products WHERE product_id IN (SELECT product_id FROM affected WHERE document_id = ? "
            "UNION SELECT product_id FROM fixes WHERE document_id = ?)",
            (document_id, document_id),
        )
    }
    kbs = {
        int(kb)
        for (kb,) in db.execute(
            "SELECT kb FROM fixes WHERE document_id = ? UNION SELECT kb FROM supersedence WHERE document_id = ? "
            "UNION SELECT superseded_kb FROM supersedence WHERE document_id = ?",
            (document_id, document_id, document_id),
        )
    }
    return names, kbs


class _Decoder:
    """Column text to values, each distinct text decoded once per read (and its value shared)."""

    def __init__(self) -> None:
        self._installed: dict[str, frozenset[str]] = {}
        self._offered: dict[str, frozenset[str]] = {}

    def installed(self, text: str) -> frozenset[str]:
        found = self._installed.get(text)
        if found is None:
            found = self._installed[text] = frozenset(json.loads(text))
        return found

    def offered(self, text: str) -> frozenset[str]:
        found = self._offered.get(text)
        if found is None:
            found = self._offered[text] = frozenset(kb for kb, _ in json.loads(text))
        return found


# Tags are JSON text unique to each server (its Name tag): SQLite picks the one tag out.
_INSTANCES = (
    "SELECT instance_id, name, online, offline_since, platform_name, platform_version, ami_name, "
    "json_extract(tags, '$.OS') FROM instances"
)
_NEWEST = "SELECT instance_id, scanned_at, build, installation_type, installed_kbs, offered FROM newest_scans n"


class FleetViewTables:
    """Mixed into ``SqliteStore``: the narrow fleet read and the change logs (needs its connection and lock)."""

    _query: Any  # provided by SqliteStore
    _db: sqlite3.Connection
    _lock: Any

    def scanned_servers(self, instance_ids: Collection[str] | None = None) -> list[ScannedServer]:
        if instance_ids is None:
            newest = self._newest_scans(self._stream(_NEWEST))
            return self._servers(self._stream(f"{_INSTANCES} ORDER BY name, instance_id"), newest)
        wanted = list(dict.fromkeys(instance_ids))
        scans = self._rows_of(f"{_NEWEST} WHERE n.instance_id IN", wanted)
        instances = self._rows_of(f"{_INSTANCES} WHERE instance_id IN", wanted)
        return self._servers(sorted(instances, key=itemgetter(1, 0)), self._newest_scans(scans))

    def _rows_of(self, sql: str, instance_ids: list[str]) -> list[tuple[Any, ...]]:
        """``sql`` ending in ``IN`` for these instances, a bounded number of ids at a time."""
        rows = []
        for start in range(0, len(instance_ids), _IN_CHUNK):
            chunk = instance_ids[start : start + _IN_CHUNK]
            rows += self._query(f"{sql} ({','.join('?' * len(chunk))})", chunk)
        return rows

    def _stream(self, sql: str) -> Iterator[tuple[Any, ...]]:
        """The rows of a read, a batch at a time: 100,000 rows are never all held at once."""
        with self._lock:
            try:
                cursor = self._db.execute(sql)
                while batch := cursor.fetchmany(_BATCH):
                    yield from batch
            except sqlite3.Error as exc:
                raise StoreError(f"database read failed: {exc}") from exc

    @staticmethod
    def _newest_scans(rows: Iterable[tuple[Any, ...]]) -> dict[str, tuple[datetime, tuple[Any, ...]]]:
        """Instance id → (scanned at, the scan's patch level fields), each distinct level decoded once and shared."""
        decode = _Decoder()
        levels: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # (build, type, KB lists as stored) → decoded
        newest: dict[str, tuple[datetime, tuple[Any, ...]]] = {}
        parse_time = datetime.fromisoformat
        for row in rows:
            stored = row[2:]
            level = levels.get(stored)
            if level is None:
                build, kind, installed, offered = stored
                level = levels[stored] = (build, kind, decode.installed(installed), decode.offered(offered))
            newest[row[0]] = (parse_time(row[1]), level)
        return newest

    @staticmethod
    def _servers(
        instances: Iterable[tuple[Any, ...]], newest: dict[str, tuple[datetime, tuple[Any, ...]]]
    ) -> list[ScannedServer]:
        # Servers mostly share their platform, AMI and OS tag: one shared tuple (and strings) each.
        described: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        make = ScannedServer._make
        servers = []
        for row in instances:
            facts = row[2:]  # online, offline since, platform name and version, AMI name, OS tag
            shared = described.get(facts)
            if shared is None:
                shared = described[facts] = (facts[0] == 1, *facts[1:])
            scanned_at, scan = newest.get(row[0], _UNSCANNED)
            servers.append(make((row[0], row[1], scanned_at, *shared, *scan)))
        return servers

    def _changes(self, part: str, since: int) -> tuple[int, list[Any]] | None:
        rows = self._query("SELECT counter FROM revisions WHERE part = ?", (part,))
        current = int(rows[0][0]) if rows else 0
        if since > current:
            return None
        logged = self._query(
            "SELECT keys FROM changes WHERE part = ? AND revision > ? AND revision <= ?", (part, since, current)
        )
        if len(logged) != current - since or any(keys is None for (keys,) in logged):
            return None
        return current, [json.loads(keys) for (keys,) in logged]

    def fleet_changes(self, since: int) -> FleetChanges | None:
        found = self._changes(FLEET, since)
        if found is None:
            return None
        revision, entries = found
        return FleetChanges(revision, frozenset(instance_id for entry in entries for instance_id in entry))

    def catalog_changes(self, since: int) -> CatalogChanges | None:
        found = self._changes(CATALOG, since)
        if found is None:
            return None
        revision, entries = found
        return CatalogChanges(
            revision,
            frozenset(name for entry in entries for name in entry["products"]),
            frozenset(kb for entry in entries for kb in entry["kbs"]),
        )

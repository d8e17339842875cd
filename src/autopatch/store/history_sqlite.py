"""SQLite tables of exposure history (the ``HistoryStore`` port): spans of scans and exposure sets.

A span is one row per (server, first scan); extending it rewrites the row. A set is stored once
under its digest as zlib-compressed canonical text (thousands of CVE ids compress about tenfold).
``append_history`` reads the latest spans of the servers it writes and writes the result in one
transaction, so two processes recording scans of the same server never fork its history.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from autopatch.domain.exposure_history import (
    ExposureSet,
    HistorySpan,
    counts_of,
    counts_text,
    extend_spans,
    set_from_text,
    set_text,
)

HISTORY_MIGRATION = """
    CREATE TABLE exposure_history (
        instance_id TEXT NOT NULL,
        first_scanned_at TEXT NOT NULL,
        last_scanned_at TEXT NOT NULL,
        scans INTEGER NOT NULL,
        product TEXT,
        build TEXT,
        status TEXT NOT NULL,
        set_digest TEXT,
        open_counts TEXT,
        overdue_counts TEXT,
        PRIMARY KEY (instance_id, first_scanned_at)
    ) WITHOUT ROWID;
    CREATE TABLE exposure_sets (
        digest TEXT PRIMARY KEY,
        cves BLOB NOT NULL
    ) WITHOUT ROWID
"""
_COLUMNS = (
    "instance_id, first_scanned_at, last_scanned_at, scans, product, build, status, set_digest, "
    "open_counts, overdue_counts"
)
_LATEST = (
    f"SELECT {', '.join('h.' + c for c in _COLUMNS.split(', '))} FROM exposure_history h "
    "JOIN (SELECT instance_id, max(first_scanned_at) AS first FROM exposure_history {where} GROUP BY instance_id) m "
    "ON h.instance_id = m.instance_id AND h.first_scanned_at = m.first"
)
_MANY = 500  # more instance ids than this: read every latest span and pick (one scan of the index)


def _rows(spans: Iterable[HistorySpan]) -> Iterator[tuple[Any, ...]]:
    # Spans at one patch level share their count mappings: each is written out once per call.
    texts: dict[int, str | None] = {}

    def text(counts: Mapping[str, int]) -> str | None:
        key = id(counts)
        if key not in texts:
            texts[key] = counts_text(counts)
        return texts[key]

    kept = []  # the mappings stay alive while their ids are keys
    for span in spans:
        kept.append((span.open_counts, span.overdue_counts))
        yield (
            span.instance_id,
            span.first_scanned_at,
            span.last_scanned_at,
            span.scans,
            span.product,
            span.build,
            span.status,
            span.set_digest,
            text(span.open_counts),
            text(span.overdue_counts),
        )


def _span(row: tuple[Any, ...]) -> HistorySpan:
    instance_id, first, last, scans, product, build, status, digest, opened, overdue = row
    return HistorySpan(
        instance_id, first, last, scans, product, build, status, digest, counts_of(opened), counts_of(overdue)
    )


Reader = Callable[[str, list[Any]], list[tuple[Any, ...]]]


def _placeholders(values: Collection[object]) -> str:
    return ",".join("?" * len(values))


def _latest(read: Reader, instance_ids: Collection[str] | None) -> dict[str, HistorySpan]:
    if instance_ids is not None and len(instance_ids) <= _MANY:
        wanted = list(instance_ids)
        if not wanted:
            return {}
        rows = read(_LATEST.format(where=f"WHERE instance_id IN ({_placeholders(wanted)})"), wanted)
    else:
        rows = read(_LATEST.format(where=""), [])
    spans = {row[0]: _span(row) for row in rows}
    if instance_ids is not None and len(instance_ids) > _MANY:
        chosen = set(instance_ids)
        return {key: span for key, span in spans.items() if key in chosen}
    return spans


class HistoryTables:
    """Mixed into ``SqliteStore``: needs ``self._transaction``/``self._query``."""

    _transaction: Any  # context manager provided by SqliteStore
    _query: Any  # provided by SqliteStore

    def append_history(self, scans: Sequence[HistorySpan], sets: Iterable[ExposureSet]) -> None:
        if not scans:
            return
        offered = {exposure.digest: exposure for exposure in sets}
        with self._transaction() as db:
            latest = _latest(lambda sql, values: db.execute(sql, values).fetchall(), {s.instance_id for s in scans})
            spans = extend_spans(latest, scans)
            named = {span.set_digest for span in spans if span.set_digest is not None}
            if named:
                wanted = sorted(named)
                stored: set[str] = set()
                for start in range(0, len(wanted), _MANY):
                    chunk = wanted[start : start + _MANY]
                    sql = f"SELECT digest FROM exposure_sets WHERE digest IN ({_placeholders(chunk)})"
                    stored.update(row[0] for row in db.execute(sql, chunk))
                db.executemany(
                    "INSERT INTO exposure_sets VALUES (?, ?)",
                    (
                        (digest, zlib.compress(set_text(offered[digest].cves).encode()))
                        for digest in wanted
                        if digest not in stored
                    ),
                )
            db.executemany(
                f"INSERT OR REPLACE INTO exposure_history ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _rows(spans),
            )

    def latest_history(self, instance_ids: Collection[str] | None = None) -> dict[str, HistorySpan]:
        return _latest(self._query, instance_ids)

    def history_spans(self, instance_ids: Collection[str] | None = None) -> list[HistorySpan]:
        sql = f"SELECT {_COLUMNS} FROM exposure_history"
        parameters: list[object] = []
        if instance_ids is not None:
            wanted = list(instance_ids)
            if not wanted:
                return []
            if len(wanted) <= _MANY:
                sql += f" WHERE instance_id IN ({_placeholders(wanted)})"
                parameters = list(wanted)
        rows = self._query(sql + " ORDER BY instance_id, first_scanned_at", parameters)
        spans = [_span(row) for row in rows]
        if instance_ids is not None and not parameters:
            chosen = set(instance_ids)
            spans = [span for span in spans if span.instance_id in chosen]
        return spans

    def exposure_sets(self, digests: Collection[str]) -> dict[str, ExposureSet]:
        wanted = sorted(set(digests))
        found: dict[str, ExposureSet] = {}
        for start in range(0, len(wanted), _MANY):
            chunk = wanted[start : start + _MANY]
            for digest, blob in self._query(
                f"SELECT digest, cves FROM exposure_sets WHERE digest IN ({_placeholders(chunk)})", chunk
            ):
                found[digest] = set_from_text(digest, zlib.decompress(blob).decode())
        return found

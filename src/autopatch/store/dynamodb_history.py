"""DynamoDB items of exposure history (the ``HistoryStore`` port).

Items (state table)::

    HISTORY        / <instance>#<first scan>   every span (one partition: a fleet report reads it with one Query,
                                               one server's spans with a prefix)
    HISTORY_LATEST / <instance>                a copy of the server's latest span, read by key when scans are added
    HISTORY_SET    / <digest>#<part>           an exposure set: its canonical text, zlib-compressed, cut in parts
                                               under the item limit (``parts`` on each)

A set is written before any span names it and never changes (its digest is its content), so a
reader finding a span always finds its set. ``append_history`` reads the latest copies, applies
``extend_spans`` and writes the spans, then the latest copies, in batches: unlike SQLite's single
transaction, two processes adding scans of the same server at the same moment may both extend its
latest span, the last write winning (a scan recorded twice over is one scan in the count).
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Iterable, Sequence
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
from autopatch.store.dynamodb_codec import BLOB_PART_BYTES, join_blob, split_blob
from autopatch.store.dynamodb_io import PK, SK, DynamoIO, Item, pk_sk

HISTORY = "HISTORY"
HISTORY_LATEST = "HISTORY_LATEST"
HISTORY_SET = "HISTORY_SET"
_FIELDS = ("instance_id", "first_scanned_at", "last_scanned_at", "scans", "product", "build", "status", "set_digest")


def _span_fields(span: HistorySpan) -> dict[str, Any]:
    return {name: getattr(span, name) for name in _FIELDS} | {
        "open_counts": counts_text(span.open_counts),
        "overdue_counts": counts_text(span.overdue_counts),
    }


def _span(item: Item) -> HistorySpan:
    return HistorySpan(
        instance_id=item["instance_id"],
        first_scanned_at=item["first_scanned_at"],
        last_scanned_at=item["last_scanned_at"],
        scans=int(item["scans"]),
        product=item.get("product"),
        build=item.get("build"),
        status=item["status"],
        set_digest=item.get("set_digest"),
        open_counts=counts_of(item.get("open_counts")),
        overdue_counts=counts_of(item.get("overdue_counts")),
    )


def _part_key(digest: str, part: int) -> str:
    return f"{digest}#{part:03d}"


class HistoryItems:
    """Mixed into ``DynamoStore``: needs ``self._io`` and ``self.state_table``."""

    _io: DynamoIO
    state_table: str

    def append_history(self, scans: Sequence[HistorySpan], sets: Iterable[ExposureSet]) -> None:
        if not scans:
            return
        latest = self.latest_history({scan.instance_id for scan in scans})
        spans = extend_spans(latest, scans)
        offered = {exposure.digest: exposure for exposure in sets}
        named = sorted({span.set_digest for span in spans if span.set_digest is not None})
        stored = {
            item[SK].split("#")[0]
            for item in self._io.batch_get(self.state_table, [pk_sk(HISTORY_SET, _part_key(d, 0)) for d in named])
        }
        self._io.batch_write(
            self.state_table,
            puts=[item for digest in named if digest not in stored for item in self._set_items(offered[digest])],
        )
        self._io.batch_write(
            self.state_table,
            puts=[
                {PK: HISTORY, SK: f"{span.instance_id}#{span.first_scanned_at}"} | _span_fields(span) for span in spans
            ],
        )
        newest: dict[str, HistorySpan] = {}
        for span in spans:
            if span.first_scanned_at >= newest.get(span.instance_id, span).first_scanned_at:
                newest[span.instance_id] = span
        self._io.batch_write(
            self.state_table,
            puts=[{PK: HISTORY_LATEST, SK: instance_id} | _span_fields(span) for instance_id, span in newest.items()],
        )

    @staticmethod
    def _set_items(exposure: ExposureSet) -> list[Item]:
        parts = split_blob(zlib.compress(set_text(exposure.cves).encode()), BLOB_PART_BYTES)
        return [
            {PK: HISTORY_SET, SK: _part_key(exposure.digest, index), "parts": len(parts), "cves": part}
            for index, part in enumerate(parts)
        ]

    def latest_history(self, instance_ids: Collection[str] | None = None) -> dict[str, HistorySpan]:
        if instance_ids is None:
            items: Iterable[Item] = self._io.query(self.state_table, HISTORY_LATEST)
        else:
            items = self._io.batch_get(self.state_table, [pk_sk(HISTORY_LATEST, i) for i in set(instance_ids)])
        return {item[SK]: _span(item) for item in items}

    def history_spans(self, instance_ids: Collection[str] | None = None) -> list[HistorySpan]:
        if instance_ids is None:
            items = list(self._io.query(self.state_table, HISTORY))
        else:
            items = [
                item
                for instance_id in sorted(set(instance_ids))
                for item in self._io.query(self.state_table, HISTORY, f"{instance_id}#")
            ]
        return sorted(map(_span, items), key=lambda span: (span.instance_id, span.first_scanned_at))

    def exposure_sets(self, digests: Collection[str]) -> dict[str, ExposureSet]:
        wanted = sorted(set(digests))
        firsts = self._io.batch_get(self.state_table, [pk_sk(HISTORY_SET, _part_key(d, 0)) for d in wanted])
        parts: dict[str, dict[int, bytes]] = {}
        more: list[dict[str, str]] = []
        for item in firsts:
            digest = item[SK].split("#")[0]
            parts[digest] = {0: item["cves"]}
            more.extend(pk_sk(HISTORY_SET, _part_key(digest, index)) for index in range(1, int(item["parts"])))
        for item in self._io.batch_get(self.state_table, more) if more else ():
            digest, index = item[SK].split("#")
            parts[digest][int(index)] = item["cves"]
        return {
            digest: set_from_text(digest, zlib.decompress(join_blob(p[i] for i in sorted(p))).decode())
            for digest, p in parts.items()
        }

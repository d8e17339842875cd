"""DynamoDB items of CISA's KEV catalog (the ``KevStore`` port), replaced whole like the SQLite tables.

Items (state table)::

    KEV / HEADER                 version, release stamp, source, import time, count, and the live generation
    KEV / PART#<gen>#<n>         the generation's entries: packed JSON (``dynamodb_codec.pack``), cut in parts

The whole catalog packs to about 150 KB (1,404 entries in 2025), so a reader gets it with one
Query, and an import is atomic without a 100-action transaction: the parts of a new generation are
written first, then one transaction flips the header to it (conditional on the generation it
replaced, so two imports cannot both win) and moves the catalog counter, then the old parts go.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from autopatch.domain.catalog import ImportCounts
from autopatch.domain.kev import KevCatalog, KevCatalogInfo, KevEntry, compare_entries
from autopatch.errors import StoreError
from autopatch.store.dynamodb_codec import join_blob, pack, split_blob, unpack
from autopatch.store.dynamodb_fleet import CATALOG_COUNTER, counter_action
from autopatch.store.dynamodb_io import PK, SK, DynamoIO, Item, TransactionCancelled, pk_sk, put_action

KEV = "KEV"
HEADER = "HEADER"
_FIELDS = (
    "cve",
    "date_added",
    "due_date",
    "vendor_project",
    "product",
    "vulnerability_name",
    "short_description",
    "known_ransomware_campaign_use",
)


def _record(entry: KevEntry) -> list[str]:
    return [
        entry.cve,
        entry.date_added.isoformat(),
        entry.due_date.isoformat(),
        entry.vendor_project,
        entry.product,
        entry.vulnerability_name,
        entry.short_description,
        entry.known_ransomware_campaign_use,
    ]


def _entry(record: list[Any]) -> KevEntry:
    values = dict(zip(_FIELDS, record, strict=True))
    return KevEntry(
        **values
        | {"date_added": date.fromisoformat(values["date_added"]), "due_date": date.fromisoformat(values["due_date"])}
    )


class KevItems:
    """Mixed into ``DynamoStore``: needs ``self._io`` and ``self.state_table``."""

    _io: DynamoIO
    state_table: str

    def replace_kev_catalog(self, catalog: KevCatalog, source: str, imported_at: str) -> ImportCounts:
        header_key = pk_sk(KEV, HEADER)
        old = self._io.get(self.state_table, header_key)
        counts = compare_entries(self._kev_entries(old), catalog.entries)
        generation = uuid.uuid4().hex[:12]
        parts = split_blob(pack([_record(entry) for entry in sorted(catalog.entries, key=lambda e: e.cve)]))
        self._io.batch_write(
            self.state_table,
            [{PK: KEV, SK: f"PART#{generation}#{number:04d}", "data": part} for number, part in enumerate(parts)],
        )
        header = header_key | {
            "catalog_version": catalog.catalog_version,
            "date_released": catalog.date_released,
            "source": source,
            "imported_at": imported_at,
            "count": len(catalog.entries),
            "gen": generation,
            "parts": len(parts),
        }
        condition, values = ("#gen = :old", {":old": old["gen"]}) if old else ("attribute_not_exists(#pk)", None)
        try:
            self._io.transact(
                [
                    put_action(self.state_table, header, condition, values),
                    counter_action(self.state_table, CATALOG_COUNTER),
                ]
            )
        except TransactionCancelled as exc:
            self._delete_kev_parts(generation)
            raise StoreError("the KEV catalog was replaced by another import meanwhile; import it again") from exc
        if old:
            self._delete_kev_parts(old["gen"])
        return counts

    def kev_catalog_info(self) -> KevCatalogInfo | None:
        header = self._io.get(self.state_table, pk_sk(KEV, HEADER))
        if header is None:
            return None
        return KevCatalogInfo(
            header["catalog_version"],
            header["date_released"],
            header["imported_at"],
            header["source"],
            int(header["count"]),
        )

    def list_kev_entries(self) -> list[KevEntry]:
        return self._kev_entries(self._io.get(self.state_table, pk_sk(KEV, HEADER)))

    def _kev_entries(self, header: Item | None) -> list[KevEntry]:
        if header is None:
            return []
        parts = list(self._io.query(self.state_table, KEV, f"PART#{header['gen']}#"))
        if len(parts) != int(header["parts"]):
            raise StoreError(f"the KEV catalog generation {header['gen']} is incomplete: import it again")
        blob = join_blob(part["data"] for part in sorted(parts, key=lambda part: str(part[SK])))
        return [_entry(record) for record in unpack(blob)]

    def _delete_kev_parts(self, generation: str) -> None:
        keys = [pk_sk(KEV, str(part[SK])) for part in self._io.query(self.state_table, KEV, f"PART#{generation}#")]
        self._io.batch_write(self.state_table, deletes=keys)

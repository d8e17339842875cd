"""CISA's KEV catalog into the store: fetched live (``autopatch kev update``) or read from a file (``kev import``).

The live fetch goes through the MSRC client's HTTP loop (``MsrcClient.fetch_bytes``), so it obeys
the same ``http_timeout``/``http_retries`` settings, backoff and ``Retry-After`` handling; a file is
read under the same size cap as the feed. Either way the bytes are parsed by ``domain/kev.py`` and
the store replaces its catalog whole.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from autopatch.catalog.client import MsrcClient
from autopatch.domain.catalog import ImportCounts
from autopatch.domain.kev import KEV_SIZE_LIMIT, KevCatalog, parse_kev_bytes
from autopatch.errors import ValidationError
from autopatch.kev_lookup import kev_entries
from autopatch.settings import Settings
from autopatch.store.base import KevStore

SERVICE = "CISA's KEV feed"
# A gzip file is read whole before inflating: the real one is 137 KB, and its inflated size is capped again.
FILE_SIZE_LIMIT = KEV_SIZE_LIMIT


@dataclass(frozen=True, slots=True)
class KevImportSummary:
    """What one KEV import did: the feed's identity, its size, and what changed in the store."""

    source: str
    catalog_version: str
    date_released: str
    entries: int
    counts: ImportCounts
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "catalog_version": self.catalog_version,
            "date_released": self.date_released,
            "entries": self.entries,
            "added": self.counts.added,
            "updated": self.counts.updated,
            "unchanged": self.counts.unchanged,
            "removed": self.counts.removed,
            "seconds": self.seconds,
        }


def store_kev(store: KevStore, catalog: KevCatalog, source: str, started: float) -> KevImportSummary:
    """Replace the stored KEV catalog with ``catalog`` and say what changed."""
    imported_at = datetime.now(UTC).isoformat(timespec="seconds")
    counts = store.replace_kev_catalog(catalog, source, imported_at)
    seconds = round(time.monotonic() - started, 2)
    return KevImportSummary(
        source, catalog.catalog_version, catalog.date_released, len(catalog.entries), counts, seconds
    )


def import_kev_file(store: KevStore, path: Path) -> KevImportSummary:
    """``autopatch kev import FILE``: CISA's JSON, plain or gzip (detected from the bytes), offline."""
    started = time.monotonic()
    try:
        with path.open("rb") as handle:
            data = handle.read(FILE_SIZE_LIMIT + 1)
    except OSError as exc:
        raise ValidationError("file", str(path), f"must be a readable file ({exc.strerror})") from exc
    catalog = parse_kev_bytes(data, path.name)
    return store_kev(store, catalog, str(path), started)


def fetch_kev(store: KevStore, settings: Settings, client: MsrcClient | None = None) -> KevImportSummary:
    """``autopatch kev update``: the feed at ``settings.kev_url``, with the MSRC client's retry rules."""
    started = time.monotonic()
    if client is None:
        with MsrcClient(settings.msrc_base_url, timeout=settings.http_timeout, retries=settings.http_retries) as own:
            data = own.fetch_bytes(settings.kev_url, KEV_SIZE_LIMIT, "KEV JSON", SERVICE)
    else:
        data = client.fetch_bytes(settings.kev_url, KEV_SIZE_LIMIT, "KEV JSON", SERVICE)
    catalog = parse_kev_bytes(data, settings.kev_url)
    return store_kev(store, catalog, settings.kev_url, started)


def list_kev(
    store: KevStore, as_of: date | None = None, vendor: str | None = None, cves: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """Stored KEV entries (CISA's field names), newest addition first: those listed by ``as_of``, of a vendor
    whose name contains ``vendor`` (any case), or only ``cves``."""
    needle = vendor.strip().casefold() if vendor else None
    wanted = set(cves) if cves is not None else None
    entries = [
        entry
        for entry in kev_entries(store, as_of).values()
        if (needle is None or needle in entry.vendor_project.casefold()) and (wanted is None or entry.cve in wanted)
    ]
    entries.sort(key=lambda entry: (entry.date_added, entry.cve), reverse=True)
    return [entry.as_dict() for entry in entries]


def kev_status(store: KevStore) -> dict[str, Any] | None:
    """The stored feed's version, release stamp, source, import time and count; None before any import."""
    info = store.kev_catalog_info()
    return info.as_dict() if info else None

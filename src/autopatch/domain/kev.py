"""CISA's Known Exploited Vulnerabilities catalog: its entries and how the feed is read (pure).

MSRC's own "Exploited: Yes" says what Microsoft saw when it published; CISA's KEV catalog says
what is exploited in the wild now, and when US federal agencies must have fixed it (``dueDate``).
The two are kept apart because they are different facts: CVE-2024-21338 (Windows Kernel, released
2024-02-13) was added to KEV only on 2024-03-04, so an evaluation as of 2024-02-20 must not call it
KEV yet, and one as of 2024-03-05 must. That is why every entry keeps its ``dateAdded``.

The feed is CISA's JSON (``known_exploited_vulnerabilities.json``, schema in
``../shared/data/kev/``): an object with ``catalogVersion``, ``dateReleased`` and a list of
``vulnerabilities``. Parsing is strict about what AutoPatch uses (a CVE id, two dates) and lenient
about the rest: CISA adds fields (``cwes`` in 2024) and leaves ``notes`` empty.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from autopatch.domain.catalog import ImportCounts
from autopatch.domain.identifiers import is_cve_id
from autopatch.errors import DocumentFormatError

# Inflated; the real catalog is 1.3 MB for 1,404 entries (2025-08).
KEV_SIZE_LIMIT = 64 * 1024 * 1024
KEV_SIZE_RULE = "more than 64 MiB, the size cap for the KEV catalog"
TEXT_LIMIT = 2000  # characters kept of a free-text field (a description is ~300)


@dataclass(frozen=True, slots=True)
class KevEntry:
    """One KEV entry: the CVE, when CISA listed it, and the date agencies must have fixed it by."""

    cve: str
    date_added: date
    due_date: date
    vendor_project: str = ""
    product: str = ""
    vulnerability_name: str = ""
    short_description: str = ""
    known_ransomware_campaign_use: str = "Unknown"  # "Known" | "Unknown", CISA's words

    @property
    def ransomware(self) -> bool:
        return self.known_ransomware_campaign_use.strip().lower() == "known"

    def as_dict(self) -> dict[str, Any]:
        """The API/JSON form, CISA's field names where they exist."""
        return {
            "cveID": self.cve,
            "dateAdded": self.date_added.isoformat(),
            "dueDate": self.due_date.isoformat(),
            "vendorProject": self.vendor_project,
            "product": self.product,
            "vulnerabilityName": self.vulnerability_name,
            "shortDescription": self.short_description,
            "knownRansomwareCampaignUse": self.known_ransomware_campaign_use,
        }


@dataclass(frozen=True, slots=True)
class KevCatalog:
    """A whole feed as read: its version and release stamp, and its entries (one per CVE)."""

    catalog_version: str
    date_released: str
    entries: tuple[KevEntry, ...]


def listed_by(entries: Iterable[KevEntry], as_of: date | None) -> dict[str, KevEntry]:
    """Entries CISA had added on or before ``as_of`` (all when None), by CVE id."""
    return {entry.cve: entry for entry in entries if as_of is None or entry.date_added <= as_of}


def parse_kev_bytes(data: bytes, source: str) -> KevCatalog:
    """Read CISA's KEV JSON, plain or gzip; a ``DocumentFormatError`` naming ``source`` otherwise."""
    if data[:2] == b"\x1f\x8b":
        data = _inflate(data, source)
    if len(data) > KEV_SIZE_LIMIT:
        raise DocumentFormatError(f"{source}: {KEV_SIZE_RULE}")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DocumentFormatError(f"{source}: not CISA's KEV catalog (not JSON: {exc})") from None
    return parse_kev_document(document, source)


def parse_kev_document(document: object, source: str) -> KevCatalog:
    """The KEV catalog from its decoded JSON (see the module docstring for what is checked)."""
    if not isinstance(document, Mapping) or not isinstance(document.get("vulnerabilities"), list):
        raise DocumentFormatError(f"{source}: not CISA's KEV catalog (no 'vulnerabilities' list)")
    entries: dict[str, KevEntry] = {}
    for index, raw in enumerate(document["vulnerabilities"]):
        entry = _entry(raw, f"{source}: vulnerabilities[{index}]")
        entries[entry.cve] = entry  # CISA lists each CVE once; a repeat keeps the later row
    return KevCatalog(
        catalog_version=_text(document.get("catalogVersion"), 64),
        date_released=_text(document.get("dateReleased"), 64),
        entries=tuple(entries.values()),
    )


def _entry(raw: object, where: str) -> KevEntry:
    if not isinstance(raw, Mapping):
        raise DocumentFormatError(f"{where}: an entry is an object")
    cve = raw.get("cveID")
    if not isinstance(cve, str) or not is_cve_id(cve.strip().upper()):
        raise DocumentFormatError(f"{where}.cveID: {str(cve)[:40]!r} is not a CVE id (CVE-YYYY-NNNN)")
    return KevEntry(
        cve=cve.strip().upper(),
        date_added=_date(raw.get("dateAdded"), f"{where}.dateAdded"),
        due_date=_date(raw.get("dueDate"), f"{where}.dueDate"),
        vendor_project=_text(raw.get("vendorProject"), 200),
        product=_text(raw.get("product"), 200),
        vulnerability_name=_text(raw.get("vulnerabilityName"), 400),
        short_description=_text(raw.get("shortDescription"), TEXT_LIMIT),
        known_ransomware_campaign_use=_text(raw.get("knownRansomwareCampaignUse"), 20) or "Unknown",
    )


def _date(value: object, where: str) -> date:
    try:
        if isinstance(value, str) and len(value) == 10:
            return date.fromisoformat(value)
    except ValueError:
        pass
    raise DocumentFormatError(f"{where}: {str(value)[:40]!r} is not a date (YYYY-MM-DD)")


def _text(value: object, limit: int) -> str:
    return value.strip()[:limit] if isinstance(value, str) else ""


def _inflate(data: bytes, source: str) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, KEV_SIZE_LIMIT + 1)
    except zlib.error as exc:
        raise DocumentFormatError(f"{source}: damaged gzip ({exc})") from None
    if len(out) > KEV_SIZE_LIMIT or inflater.unconsumed_tail:
        raise DocumentFormatError(f"{source}: inflated, {KEV_SIZE_RULE}")
    if not inflater.eof:
        raise DocumentFormatError(f"{source}: truncated gzip")
    return out


@dataclass(frozen=True, slots=True)
class KevCatalogInfo:
    """What the store holds: which feed version, when it was imported, and how many entries."""

    catalog_version: str
    date_released: str
    imported_at: str
    source: str
    count: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "catalog_version": self.catalog_version,
            "date_released": self.date_released,
            "imported_at": self.imported_at,
            "source": self.source,
            "count": self.count,
        }


def compare_entries(old: Iterable[KevEntry], new: Iterable[KevEntry]) -> ImportCounts:
    """What replacing the ``old`` entries with the ``new`` ones changes, by CVE (every adapter counts so)."""
    before = {entry.cve: entry for entry in old}
    after = {entry.cve: entry for entry in new}
    common = before.keys() & after.keys()
    updated = sum(1 for cve in common if before[cve] != after[cve])
    return ImportCounts(
        added=len(after.keys() - before.keys()),
        updated=updated,
        unchanged=len(common) - updated,
        removed=len(before.keys() - after.keys()),
    )

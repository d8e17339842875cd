"""The catalog's data model and the normalisation rules for Microsoft's raw values.

Every parser (CVRF XML, CVRF JSON, SUG OData) produces a ``CatalogDocument``; the rules below are
the one place where MSRC quirks are decided, so the three formats cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any, NamedTuple

from autopatch.domain.identifiers import kb_number
from autopatch.errors import DocumentFormatError

_SPACES = re.compile(r"\s+")
_LIST_SEPARATORS = re.compile(r"[,;\s]+")

# SubType spellings seen in real documents → one canonical name (MSRC_DATA.md §3).
_SUBTYPE_ALIASES = {
    "securityhotpatchupdate": "Security Hotpatch Update",
    "azurehotpatch": "Azure Hotpatch",
    "servicingstackupdate": "Servicing Stack Update",
    "securityupdate": "Security Update",
    "monthlyrollup": "Monthly Rollup",
    "securityonly": "Security Only",
    "standalonesecurityupdate": "Standalone Security Update",
}
HOTPATCH_SUBTYPES = frozenset({"Security Hotpatch Update", "Azure Hotpatch"})
SEVERITIES = ("Critical", "Important", "Moderate", "Low")
RESTART_VALUES = ("Yes", "No", "Maybe")
# Real revisions are "369", "3.1", "20240109"; anything past these bounds is not a revision (and
# int() of a 10,000-digit number raises instead of comparing).
REVISION_MAX_LENGTH = 64
REVISION_MAX_DIGITS = 20


def collapse_spaces(text: str) -> str:
    """Product names carry double spaces in older JSON ("Windows Server 2019  (Server Core installation)")."""
    return _SPACES.sub(" ", text).strip()


@lru_cache(maxsize=4096)
def normalise_subtype(raw: str | None) -> str | None:
    """One spelling per remediation kind: hotpatch alone has three in the real files."""
    if raw is None or not raw.strip():
        return None
    key = _SPACES.sub("", raw).lower()
    return _SUBTYPE_ALIASES.get(key, collapse_spaces(raw))


@lru_cache(maxsize=4096)
def normalise_severity(raw: str | None) -> str | None:
    """Severity is sometimes absent, empty or the literal string "None" (ADV230001 in 2023-Jul)."""
    if raw is None:
        return None
    text = raw.strip()
    return text if text in SEVERITIES else None


@lru_cache(maxsize=4096)
def normalise_restart(raw: str | None) -> str | None:
    """Yes / No / Maybe, or None when Microsoft did not say."""
    if raw is None:
        return None
    text = raw.strip().capitalize()
    return text if text in RESTART_VALUES else None


@lru_cache(maxsize=4096)
def parse_supersedes(raw: str | None) -> tuple[int, ...]:
    """Supercedence is absent, one KB, or a list ("5018543, 5021086"); old rows name bulletins (MS15-131)."""
    if not raw:
        return ()
    numbers = (kb_number(token) for token in _LIST_SEPARATORS.split(raw) if token)
    return tuple(dict.fromkeys(number for number in numbers if number is not None))


@lru_cache(maxsize=4096)
def parse_exploit_status(raw: str | None) -> tuple[bool | None, bool | None]:
    """(exploited, publicly_disclosed) from "Publicly Disclosed:Yes;Exploited:No;…"."""
    if not raw:
        return None, None
    flags: dict[str, bool] = {}
    for part in raw.split(";"):
        name, _, value = part.partition(":")
        if value.strip() in ("Yes", "No"):
            flags[name.strip().lower()] = value.strip() == "Yes"
    return flags.get("exploited"), flags.get("publicly disclosed")


def kb_article_url(kb: int) -> str:
    """Microsoft's support article for a KB (what the Release Notes remediation links to)."""
    return f"https://support.microsoft.com/help/{kb}"


def format_kb(kb: int) -> str:
    return f"KB{kb}"


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """Identity of one monthly document: its id, revision and dates, as Microsoft published them."""

    document_id: str
    title: str
    revision: str
    initial_release_date: date | None
    current_release_date: date | None
    source_format: str  # "cvrf-xml" | "cvrf-json" | "sug"

    @property
    def revision_key(self) -> tuple[int, ...]:
        return self.revision_sort_key(self.revision)

    @staticmethod
    def revision_sort_key(revision: str) -> tuple[int, ...]:
        """Revisions are counters ("369") or versions ("3.1"): compare them numerically.

        A revision longer than 64 characters, or with a number of more than 20 digits, is a
        ``DocumentFormatError``: no document revises itself 10^20 times.
        """
        parts = re.findall(r"[0-9]+", revision) if len(revision) <= REVISION_MAX_LENGTH else None
        if parts is None or any(len(part) > REVISION_MAX_DIGITS for part in parts):
            shown = repr(revision) if len(revision) <= 24 else f"{revision[:20]!r}… ({len(revision)} characters)"
            raise DocumentFormatError(
                f"revision {shown} is invalid: at most {REVISION_MAX_LENGTH} characters"
                f" and {REVISION_MAX_DIGITS} digits per number"
            )
        return tuple(int(part) for part in parts) or (0,)

    @staticmethod
    def latest_revision(revisions: Iterable[str], source: str) -> str:
        """The highest of a document's revision numbers ("0" when it lists none); errors name ``source``."""
        try:
            return max(revisions, key=DocumentInfo.revision_sort_key, default="0")
        except DocumentFormatError as exc:
            raise DocumentFormatError(f"{source}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    name: str
    family: str | None


class Vulnerability(NamedTuple):
    cve: str
    title: str
    cwe: tuple[str, ...]
    exploited: bool | None
    publicly_disclosed: bool | None
    release_date: date | None


class AffectedProduct(NamedTuple):
    """One (CVE, product) pair with the scores Microsoft gives for that product.

    Row types are named tuples: hundreds of thousands cross a process boundary per import.
    """

    cve: str
    product_id: str
    severity: str | None
    impact: str | None
    cvss_base: float | None
    cvss_temporal: float | None
    cvss_vector: str | None


class KbFix(NamedTuple):
    """One Vendor Fix KB for one (CVE, product): the unit the catalog is made of."""

    cve: str
    product_id: str
    kb: int
    subtype: str | None
    fixed_build: str | None
    supersedes: tuple[int, ...]
    restart_required: str | None
    kb_url: str | None
    download_url: str | None

    @property
    def is_hotpatch(self) -> bool:
        return self.subtype in HOTPATCH_SUBTYPES


@dataclass(slots=True)
class CatalogDocument:
    """Everything one document says, normalised; what the store imports in one transaction."""

    info: DocumentInfo
    products: list[Product] = field(default_factory=list)
    vulnerabilities: list[Vulnerability] = field(default_factory=list)
    affected: list[AffectedProduct] = field(default_factory=list)
    fixes: list[KbFix] = field(default_factory=list)

    def __reduce__(self) -> tuple[object, ...]:
        # Parsed documents cross a process boundary on import: plain tuples pickle about four
        # times faster than named tuples, so rows travel bare and are re-typed on arrival.
        rows = (list(map(tuple, self.vulnerabilities)), list(map(tuple, self.affected)), list(map(tuple, self.fixes)))
        return (_rebuild_document, (self.info, self.products, *rows))


def _rebuild_document(
    info: DocumentInfo,
    products: list[Product],
    vulnerabilities: list[tuple[Any, ...]],
    affected: list[tuple[Any, ...]],
    fixes: list[tuple[Any, ...]],
) -> CatalogDocument:
    return CatalogDocument(
        info,
        products,
        list(map(Vulnerability._make, vulnerabilities)),
        list(map(AffectedProduct._make, affected)),
        list(map(KbFix._make, fixes)),
    )


# --- What the store hands back to the queries ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A document as the catalog recorded it: which revision of which month, from which bytes."""

    document_id: str
    title: str
    revision: str
    initial_release_date: date | None
    current_release_date: date | None
    source_format: str
    source_sha256: str
    imported_at: str

    @property
    def revision_key(self) -> tuple[int, ...]:
        return DocumentInfo.revision_sort_key(self.revision)


@dataclass(frozen=True, slots=True)
class ProductSummary:
    product_id: str
    name: str
    family: str | None
    cve_count: int
    kb_count: int


class AffectedRecord(NamedTuple):
    """One (document, CVE, product) row joined with its vulnerability's facts."""

    document_id: str
    cve: str
    product_id: str
    product: str
    family: str | None
    title: str
    severity: str | None
    impact: str | None
    cvss_base: float | None
    cvss_temporal: float | None
    cvss_vector: str | None
    cwe: tuple[str, ...]
    exploited: bool | None
    publicly_disclosed: bool | None
    release_date: date | None


class FixRecord(NamedTuple):
    """A ``KbFix`` with the document it came from."""

    document_id: str
    fix: KbFix


@dataclass(frozen=True, slots=True)
class ImportCounts:
    """What importing one document changed, by (CVE, product, KB) entry."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0

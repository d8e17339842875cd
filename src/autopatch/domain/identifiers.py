"""One validator per identifier, reused by every edge (CLI, HTTP, parsers, adapters).

Each returns the canonical form or raises ``ValidationError`` naming the field and the rule, so
that no unvalidated string ever travels inward (into SQL, PowerShell or a shell).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from autopatch.errors import ValidationError

_KB = re.compile(r"(?:KB)?(\d{6,7})", re.IGNORECASE)
_CVE = re.compile(r"CVE-\d{4}-\d{4,7}|ADV\d{6}")
_MONTH = re.compile(r"(\d{4})-(\d{2})")
_DOCUMENT_ID = re.compile(r"(\d{4})-([A-Z][a-z]{2})")
_BUILD = re.compile(r"\d{1,5}\.\d{1,5}\.\d{1,6}\.\d{1,6}")

MONTH_ABBREVIATIONS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
KB_RULE = "a KB is 'KB' followed by 6 or 7 digits, e.g. KB5034129"


def parse_kb(value: str, field: str = "kb") -> str:
    """Return the canonical ``KB1234567`` form of a KB id typed with or without the prefix."""
    match = _KB.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValidationError(field, value, KB_RULE)
    return f"KB{match.group(1)}"


@lru_cache(maxsize=16384)
def kb_number(value: str) -> int | None:
    """The numeric part of a KB-shaped string, or None: MSRC fields mix KBs with package names."""
    match = _KB.fullmatch(value.strip())
    return int(match.group(1)) if match else None


def is_cve_id(value: str) -> bool:
    """True for CVE ids and MSRC advisories (``ADV990001`` lists servicing stack updates).

    Junk ids seen in real documents ("CVE-2022-2601-M", "CVE-2023-38039 mariner - do not use this
    one") are rejected: they duplicate real CVEs with third-party package fixes.
    """
    return _CVE.fullmatch(value) is not None


def parse_cve(value: str, field: str = "cve") -> str:
    """Return an upper-cased CVE (or ADV) id or raise."""
    candidate = value.strip().upper()
    if not is_cve_id(candidate):
        raise ValidationError(field, value, "a CVE id is CVE-YYYY-NNNN (or an advisory ADVnnnnnn), e.g. CVE-2024-20674")
    return candidate


@dataclass(frozen=True, order=True, slots=True)
class Month:
    """A monthly MSRC release: ``2024-01`` on our side, document id ``2024-Jan`` on Microsoft's."""

    year: int
    month: int

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @property
    def document_id(self) -> str:
        return f"{self.year:04d}-{MONTH_ABBREVIATIONS[self.month - 1]}"

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Month:
        return Month(self.year - (self.month == 1), (self.month - 2) % 12 + 1)


def parse_month(value: str, field: str = "month") -> Month:
    """Parse ``YYYY-MM`` (our form) or ``YYYY-Mon`` (an MSRC document id)."""
    text = value.strip()
    numeric = _MONTH.fullmatch(text)
    if numeric and 1 <= int(numeric.group(2)) <= 12:
        return Month(int(numeric.group(1)), int(numeric.group(2)))
    named = _DOCUMENT_ID.fullmatch(text)
    if named and named.group(2) in MONTH_ABBREVIATIONS:
        return Month(int(named.group(1)), MONTH_ABBREVIATIONS.index(named.group(2)) + 1)
    raise ValidationError(field, value, "a month is YYYY-MM with MM from 01 to 12, e.g. 2024-01")


def month_of_document(document_id: str) -> Month | None:
    """The month a monthly document id names; None for odd ids such as ``2017-May-B``."""
    named = _DOCUMENT_ID.fullmatch(document_id)
    if named is None or named.group(2) not in MONTH_ABBREVIATIONS:
        return None
    return Month(int(named.group(1)), MONTH_ABBREVIATIONS.index(named.group(2)) + 1)


def is_windows_build(value: str) -> bool:
    """True for four-part Windows builds; Mariner rows carry package versions like ``5.15.111.1-1``."""
    return _BUILD.fullmatch(value) is not None


def parse_build(value: str, field: str = "build") -> tuple[int, int, int, int]:
    """Parse ``10.0.20348.2227`` into a comparable tuple."""
    text = value.strip()
    if not is_windows_build(text):
        raise ValidationError(field, value, "a build is four dot-separated numbers, e.g. 10.0.20348.2227")
    major, minor, build, revision = (int(part) for part in text.split("."))
    return major, minor, build, revision

"""One validator per identifier, reused by every edge (CLI, HTTP, parsers, adapters).

Each returns the canonical form or raises ``ValidationError`` naming the field and the rule, so
that no unvalidated string ever travels inward (into SQL, PowerShell or a shell).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from autopatch.errors import ValidationError

# Identifiers are ASCII: ``\d`` would accept any Unicode digit (full-width "KB5034129"), which is then
# stored, sent to SSM and fails there; re.ASCII also keeps IGNORECASE from matching the Kelvin sign.
_KB = re.compile(r"(?:KB)?([0-9]{6,7})", re.IGNORECASE | re.ASCII)
_CVE = re.compile(r"CVE-[0-9]{4}-[0-9]{4,7}|ADV[0-9]{6}", re.ASCII)
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})", re.ASCII)
# Microsoft's ids: "2024-Jan", but also "2018-FEB" (the index's only upper-cased one) and
# out-of-band documents such as "2017-May-B".
_DOCUMENT_ID = re.compile(r"([0-9]{4})-([A-Za-z]{3})(?:-[A-Za-z0-9]{1,8})?", re.ASCII)
_BUILD = re.compile(r"[0-9]{1,5}\.[0-9]{1,5}\.[0-9]{1,6}\.[0-9]{1,6}", re.ASCII)
_RUN_ID = re.compile(r"[a-z]-[0-9]{8}-[0-9]{6}-[0-9a-f]{6}", re.ASCII)
_PARTIAL_BUILD = re.compile(r"[0-9]{1,5}\.[0-9]{1,5}\.[0-9]{1,6}(?:\.[0-9]{1,6})?", re.ASCII)

MONTH_ABBREVIATIONS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBERS = {name.lower(): number for number, name in enumerate(MONTH_ABBREVIATIONS, start=1)}
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
    named = month_of_document(text)
    if named is not None:
        return named
    raise ValidationError(field, value, "a month is YYYY-MM with MM from 01 to 12, e.g. 2024-01")


def month_of_document(document_id: str) -> Month | None:
    """The month an MSRC document id names, whatever its case ("2018-FEB") or suffix ("2017-May-B").

    Out-of-band documents belong to the month they were released in; None for ids that name no
    month at all (the index's "1999-Sep" Mariner notes still parse: they are dated, not monthly).
    """
    named = _DOCUMENT_ID.fullmatch(document_id.strip())
    number = _MONTH_NUMBERS.get(named.group(2).lower()) if named else None
    if named is None or number is None:
        return None
    return Month(int(named.group(1)), number)


def parse_run_id(value: str, field: str = "run") -> str:
    """A run id as AutoPatch makes them: kind letter, UTC date and time, six hex digits."""
    candidate = value.strip() if isinstance(value, str) else ""
    if _RUN_ID.fullmatch(candidate) is None:
        raise ValidationError(field, value, "a run id looks like p-20240109-081500-1a2b3c (see `autopatch runs`)")
    return candidate


def is_windows_build(value: str) -> bool:
    """True for four-part Windows builds; Mariner rows carry package versions like ``5.15.111.1-1``."""
    return _BUILD.fullmatch(value) is not None


def parse_build(value: str, field: str = "build") -> tuple[int, int, int, int]:
    """Parse ``10.0.20348.2227`` into a comparable tuple."""
    text = value.strip() if isinstance(value, str) else ""
    if not is_windows_build(text):
        raise ValidationError(field, value, "a build is four dot-separated numbers, e.g. 10.0.20348.2227")
    major, minor, build, revision = (int(part) for part in text.split("."))
    return major, minor, build, revision


def parse_partial_build(value: str, field: str = "build") -> tuple[tuple[int, int, int], int | None]:
    """``10.0.17763.253`` → ((10, 0, 17763), 253); ``10.0.17763`` → ((10, 0, 17763), None).

    ``systeminfo`` prints the build without its revision (the UBR), so typed-in facts may lack it.
    """
    text = value.strip() if isinstance(value, str) else ""
    if _PARTIAL_BUILD.fullmatch(text) is None:
        raise ValidationError(
            field, value, "a build is three or four dot-separated numbers, e.g. 10.0.20348.2227 or 10.0.20348"
        )
    parts = [int(part) for part in text.split(".")]
    return (parts[0], parts[1], parts[2]), parts[3] if len(parts) == 4 else None

"""Catalog rows of the SQLite store as domain records, each repeated value decoded once per read.

Loading a product's catalog reads tens of thousands of rows whose CWE lists, release dates,
supersedence lists and KB links repeat (one cumulative update is listed for hundreds of CVEs):
a decoder remembers what it already decoded during one read and hands out the same value.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from autopatch.domain.catalog import AffectedRecord, FixRecord, KbFix, kb_article_url


def catalog_search_url(kb: int) -> str:
    return f"https://catalog.update.microsoft.com/v7/site/Search.aspx?q=KB{kb}"


def expand_download_url(kb: int, stored: str | None) -> str | None:
    """NULL is the usual catalog link, '' is "Microsoft gave none", anything else the URL itself."""
    if stored is None:
        return catalog_search_url(kb)
    return stored or None


class CatalogRowDecoder:
    """``affected`` and ``fixes`` rows to records (one decoder per read: its memory is that read's)."""

    def __init__(self) -> None:
        self._cwes: dict[str, tuple[str, ...]] = {}
        self._days: dict[str, date] = {}
        self._supersedes: dict[str, tuple[int, ...]] = {}
        self._links: dict[tuple[int, str | None], tuple[str, str | None]] = {}

    def affected(self, row: tuple[Any, ...]) -> AffectedRecord:
        cwe = self._cwes.get(row[11])
        if cwe is None:
            cwe = self._cwes[row[11]] = tuple(json.loads(row[11]))
        released = row[14]
        if released and released not in self._days:
            self._days[released] = date.fromisoformat(released)
        return AffectedRecord._make(  # the row's first eleven columns are the record's first eleven fields
            (
                *row[:11],
                cwe,
                None if row[12] is None else bool(row[12]),
                None if row[13] is None else bool(row[13]),
                self._days[released] if released else None,
            )
        )

    def fix(self, row: tuple[Any, ...]) -> FixRecord:
        document_id, cve, product_id, kb, subtype, build, supersedes, restart, download = row
        older = self._supersedes.get(supersedes)
        if older is None:
            older = self._supersedes[supersedes] = tuple(int(number) for number in str(supersedes).split(",") if number)
        links = self._links.get((kb, download))
        if links is None:
            links = self._links[(kb, download)] = (kb_article_url(int(kb)), expand_download_url(int(kb), download))
        return FixRecord(
            str(document_id),
            KbFix(str(cve), str(product_id), int(kb), subtype, build, older, restart, *links),
        )

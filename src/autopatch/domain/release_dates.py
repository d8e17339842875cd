"""When a KB was released, and the catalog as it stood on a past date (pure).

A baseline's "approve after N days" and ``patch --dry-run --as-of`` both need a KB's release date,
and Microsoft's data has none: a Vendor Fix carries no date, and the monthly documents are living
(MSRC_DATA.md §6.10). A document is revised for years after its Patch Tuesday and then lists later
months' KBs beside its own: the 2024-Mar document lists April 2024's cumulative updates (KB5036909
for Windows Server 2022) for two CVEs re-released with them, and ADV990001 in 2018-Nov lists the
servicing stack update of September 2024 (KB5043124 for Windows Server 2016). The first document
that mentions a KB is therefore not when it was released. A KB belongs to a monthly release, and
its release date is that release's (an out-of-band KB gets its month's date), decided by three
rules that agree with the real documents 2016-2026 (``tests/test_release_dates.py``):

1. **Listings.** A KB is listed in the most (CVE, product) rows by the document of its own month
   (KB5036909: 2 rows in 2024-Mar, 154 in 2024-Apr); ties go to the later document. When every CVE
   it fixes there was published after the document's release, it is that month's out-of-band
   update and takes their date (KB4483229, Internet Explorer's fix of CVE-2018-8653 on 2018-12-19).
2. **Supersedence.** A KB is a later release than every KB it supersedes. When the documents say
   otherwise — the older KB is dated later, or both are homed in one document that lists the newer
   KB less often (April's KB5036909 and March's KB5035857 when only 2024-Mar is imported) — the
   newer KB's own document is missing, and it is dated the Patch Tuesday after the older one's
   (estimated). Out-of-band KBs are why "less often" matters: July 2021's cumulative update
   KB5004238 supersedes the PrintNightmare fix KB5004948, both homed in 2021-Jul, and is listed
   there 112 times against 2.
3. **Builds.** Windows builds only grow: an update with a FixedBuild belongs to the release of the
   first cumulative update of its branch at or above that build (KB5043124 at 10.0.14393.7334
   ships with KB5043051, 10.0.14393.7336, September 2024), and it is a later release than every
   monthly cumulative update below its build. Listed beside its document's cumulative update, an
   update more than ``OUT_OF_BAND_REVISIONS`` above it is a later month's (KB5036909, April 2024's
   at 10.0.20348.2402, in 2024-Mar beside KB5035857 at .2340), not an out-of-band one of the month
   (KB5070884, October 2025's WSUS fix, 3 revisions above KB5066782).
"""

from __future__ import annotations

import calendar
from bisect import bisect_left
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import date

from autopatch.domain.identifiers import Month, month_of_document
from autopatch.domain.product_catalog import (
    CUMULATIVE_LINE,
    ROLLUP_LINE,
    Branch,
    Build,
    CatalogKb,
    ProductCatalog,
    infer_cumulative_builds,
    newest_successors,
)

# The updates whose builds form a product's ladder: its cumulative updates and monthly rollups.
LADDER_SUBTYPES = CUMULATIVE_LINE | ROLLUP_LINE
# An out-of-band update is a few revisions above its month's cumulative update (October 2025's WSUS
# fixes: 3 to 6); the next month's is dozens above (43 to over 100 on Windows Server 2016-2025).
OUT_OF_BAND_REVISIONS = 20

Listings = Mapping[int, Mapping[str, int]]  # KB → document id → (CVE, product) rows listing it


def patch_tuesday(month: Month) -> date:
    """The second Tuesday of ``month``: Microsoft's monthly release day."""
    first_weekday = calendar.weekday(month.year, month.month, 1)
    return date(month.year, month.month, 1 + (calendar.TUESDAY - first_weekday) % 7 + 7)


def next_patch_tuesday(after: date) -> date:
    """The first Patch Tuesday strictly after ``after``."""
    month = Month(after.year, after.month)
    day = patch_tuesday(month)
    return day if day > after else patch_tuesday(month.next())


@dataclass(frozen=True, slots=True)
class KbRelease:
    """The monthly release a KB belongs to: its date, its document and which rule decided it."""

    kb: int
    released: date
    document_id: str | None  # None when the KB's own document is not in the catalog (estimated)
    basis: str
    estimated: bool = False


def document_dates(documents: Mapping[str, date | None]) -> dict[str, date]:
    """Each document's release date: its InitialReleaseDate, or its month's Patch Tuesday when it has none."""
    dated: dict[str, date] = {}
    for document_id, initial in documents.items():
        month = month_of_document(document_id)
        if initial is not None:
            dated[document_id] = initial
        elif month is not None:
            dated[document_id] = patch_tuesday(month)
    return dated


def month_release_dates(documents: Mapping[str, date]) -> dict[str, date]:
    """``YYYY-MM`` → the earliest release date of that month's documents (2017-May and 2017-May-B)."""
    months: dict[str, date] = {}
    for document_id, released in documents.items():
        month = month_of_document(document_id)
        if month is not None and (str(month) not in months or released < months[str(month)]):
            months[str(month)] = released
    return months


def _listed_release(
    kb: int, listed: Mapping[str, int], documents: Mapping[str, date], published: Mapping[str, date]
) -> KbRelease | None:
    dated = [(count, documents[doc], doc) for doc, count in listed.items() if doc in documents and count > 0]
    if not dated:
        return None
    count, released, document_id = max(dated)
    basis = f"listed most by {document_id} ({count} rows)"
    late = published.get(document_id)
    if late is not None and late > released:
        return KbRelease(kb, late, document_id, f"{basis}; out of band: its CVEs there were published {late}")
    return KbRelease(kb, released, document_id, basis)


class _Releases:
    """The fixpoint of rules 2 and 3 over the listing dates: dates only ever move later."""

    def __init__(self, catalog: ProductCatalog, listings: Listings, releases: dict[int, KbRelease]) -> None:
        self.listings = listings
        self.releases = releases
        self.older: dict[int, set[int]] = {}
        for kb, newer in catalog.superseded_by.items():
            for successor in newer:
                self.older.setdefault(successor, set()).add(kb)
        self.builds = {
            number: entry.build
            for number, entry in catalog.kbs.items()
            if entry.build is not None and not entry.build_inferred
        }
        self.ladders = self._ladders(catalog)

    def _ladders(self, catalog: ProductCatalog) -> dict[Branch, list[tuple[Build, int]]]:
        """Per branch, the monthly cumulative updates by build: in each document, the most listed one.

        Only those: a document also lists other "Security Update"s of lower builds (KB5042322, the
        August 2024 Recovery Environment update, is at 10.0.20348.2201, below January's KB5034129).
        """
        monthly: dict[str, tuple[int, int]] = {}
        for number, build in self.builds.items():
            release = self.releases.get(number)
            if catalog.kbs[number].subtype not in LADDER_SUBTYPES or release is None or release.document_id is None:
                continue
            count = self.listings.get(number, {}).get(release.document_id, 0)
            key = f"{release.document_id}#{'.'.join(map(str, build[:3]))}"
            if (count, number) > monthly.get(key, (0, 0)):
                monthly[key] = (count, number)
        ladders: dict[Branch, list[tuple[Build, int]]] = {}
        for _, number in monthly.values():
            ladders.setdefault(self.builds[number][:3], []).append((self.builds[number], number))
        for ladder in ladders.values():
            ladder.sort()
        return ladders

    def after(self, kb: int, older: int, why: str) -> KbRelease:
        released = self.releases[older].released
        return KbRelease(kb, next_patch_tuesday(released), None, f"{why}: the release after {released}", True)

    def _superseded_later(self, older: int, kb: int) -> bool:
        """``older`` (which ``kb`` supersedes) is dated after ``kb``, or homed with it and listed more."""
        first, second = self.releases[older], self.releases[kb]
        if first.released != second.released:
            return first.released > second.released
        document = second.document_id
        if document is None or first.document_id != document:
            return False
        return self.listings.get(kb, {}).get(document, 0) < self.listings.get(older, {}).get(document, 0)

    def _by_build(self, kb: int) -> KbRelease | None:
        """Rule 3: dated before a cumulative update of a lower build, ``kb`` ships with the first one above."""
        build = self.builds.get(kb)
        ladder = self.ladders.get(build[:3], []) if build is not None else []
        if build is None or not ladder:
            return None
        current = self.releases[kb]
        position = bisect_left(ladder, (build, 0))
        below = [self.releases[n] for _, n in ladder[:position] if n != kb and n in self.releases]
        latest = max(below, key=lambda release: (release.released, self.builds[release.kb]), default=None)
        if latest is None:
            return None
        if latest.released <= current.released:
            gap = build[3] - self.builds[latest.kb][3]
            if latest.document_id != current.document_id or gap <= OUT_OF_BAND_REVISIONS:
                return None
            return self.after(kb, latest.kb, f"its build is {gap} revisions above KB{latest.kb}'s, listed with it")
        above = [self.releases[n] for _, n in ladder[position:] if n != kb and n in self.releases]
        if above and above[0].released >= latest.released:
            text = ".".join(map(str, build))
            basis = f"ships with KB{above[0].kb}, the first cumulative update at or above its build {text}"
            return KbRelease(kb, above[0].released, above[0].document_id, basis, above[0].estimated)
        return self.after(kb, latest.kb, f"its build is above KB{latest.kb}'s")

    def bound(self, kb: int) -> KbRelease | None:
        """The latest release the rules allow for ``kb``, if one is later than its current one."""
        current = self.releases[kb]
        candidates = [
            self.after(kb, older, f"supersedes KB{older}, listed as if released later")
            for older in self.older.get(kb, ())
            if older in self.releases and self._superseded_later(older, kb)
        ]
        by_build = self._by_build(kb)
        if by_build is not None:
            candidates.append(by_build)
        best = max(candidates, key=lambda release: (release.released, not release.estimated), default=None)
        return best if best is not None and best.released > current.released else None

    def settle(self) -> dict[int, KbRelease]:
        for _ in range(len(self.releases) + 1):
            moved = False
            for kb in sorted(self.releases):
                bound = self.bound(kb)
                if bound is not None:
                    self.releases[kb] = bound
                    moved = True
            if not moved:
                break
        return self.releases


def release_dates(
    catalog: ProductCatalog,
    listings: Listings,
    documents: Mapping[str, date],
    published: Mapping[int, Mapping[str, date]] | None = None,
) -> dict[int, KbRelease]:
    """The release of every listed KB (the product's and the other products' KBs its chains reach).

    ``listings`` counts, per KB and document, the (CVE, product) rows that list it; ``documents``
    dates each document (``document_dates``); ``published`` gives, per KB and document, when the
    earliest of the CVEs it fixes there was published. A KB no dated document lists is left out.
    """
    late = published or {}
    releases = {
        kb: found
        for kb, listed in listings.items()
        if (found := _listed_release(kb, listed, documents, late.get(kb, {}))) is not None
    }
    return _Releases(catalog, listings, releases).settle()


def catalog_as_of(
    catalog: ProductCatalog,
    releases: Mapping[int, KbRelease],
    month_dates: Mapping[str, date],
    as_of: date,
) -> ProductCatalog:
    """The product's catalog as it stood on ``as_of``: later KBs and CVEs do not exist yet.

    Supersedence only reaches KBs released by then, so the cumulative update that was the newest
    that day is not "Superseded" by one that came later. Builds inferred from later cumulative
    updates are inferred again from what existed. A KB whose release is unknown is kept.
    """

    def existed(kb: int) -> bool:
        release = releases.get(kb)
        return release is None or release.released <= as_of

    kept: dict[int, CatalogKb] = {
        number: replace(entry, build=None, build_inferred=False) if entry.build_inferred else entry
        for number, entry in catalog.kbs.items()
        if existed(number)
    }
    kbs = infer_cumulative_builds(kept)
    superseded_by = {
        kb: frozenset(newer for newer in successors if existed(newer))
        for kb, successors in catalog.superseded_by.items()
        if kb in kbs
    }
    cves = tuple(
        replace(cve, kbs=tuple(kb for kb in cve.kbs if kb in kbs))
        for cve in catalog.cves
        if month_dates.get(cve.month) is None or month_dates[cve.month] <= as_of
    )
    line = {kb: entry for kb, entry in catalog.line.items() if existed(kb)}
    return ProductCatalog(
        catalog.product, catalog.branch, cves, kbs, superseded_by, line, newest_successors(kbs, superseded_by)
    )


def released_by(releases: Mapping[int, KbRelease], kbs: Collection[int], as_of: date) -> set[int]:
    """Those of ``kbs`` released on or before ``as_of`` (a KB of unknown release counts as released)."""
    return {kb for kb in kbs if (release := releases.get(kb)) is None or release.released <= as_of}

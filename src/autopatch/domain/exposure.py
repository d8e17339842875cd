"""Exposure: which catalog CVEs a server is open to, and which KBs would close them (pure).

The original matched KB numbers against ``Get-HotFix`` and so reported every CVE of an older
cumulative update as open on an up-to-date server (defect 5). Here a CVE is *fixed* when, in this
order of evidence:

1. the server's build is at or past a fix's FixedBuild *on the same branch* (10.0.20348.x says
   nothing about 10.0.25398.y), or past the build inferred for a build-less cumulative update;
2. a fixing KB — or any KB that supersedes it, following the chain across products — is installed;
3. when neither builds nor chains say anything, an installed cumulative update of the product's
   line is of a later month than a fixing cumulative update of that line (it contains it).

Rule 3 is what a chain with holes needs (KB3200970, November 2016, names no successor), and it is
not what WES-NG does: a CVE is never dropped because a newer KB *exists*, only because a newer
cumulative update is *installed*, so Zerologon stays open on a server patched up to 2018.

Per KB, the original's classes plus one: ``Already Installed``, ``Superseded`` (a newer KB for
this product covers it: never install it, never count it open), ``Available`` (Windows Update
offers it), ``Not Available``. Per open CVE, whether its fix is offered, must be installed by hand
("not offered": Windows Update does not offer it, e.g. Setup Dynamic Updates), or does not exist.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from threading import Lock
from typing import NamedTuple

from autopatch.domain.catalog import SEVERITIES
from autopatch.domain.identifiers import is_windows_build, parse_build
from autopatch.domain.product_catalog import (
    NO_MONTH,
    Branch,
    Build,
    CatalogCve,
    LineKb,
    MonthKey,
    ProductCatalog,
)

FIX_OFFERED = "offered"  # Windows Update offers a KB that closes it
FIX_NOT_OFFERED = "not offered"  # KBs exist, Windows Update offers none: install by hand
FIX_NONE = "none"  # Microsoft lists no KB
FIX_UNKNOWN = "unknown"  # typed-in facts: nobody asked Windows Update
FIX_KINDS = (FIX_OFFERED, FIX_NOT_OFFERED, FIX_NONE, FIX_UNKNOWN)


class KbStatus(StrEnum):
    ALREADY_INSTALLED = "Already Installed"
    SUPERSEDED = "Superseded"
    AVAILABLE = "Available"
    NOT_AVAILABLE = "Not Available"


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What a scan (or an operator) says about one server."""

    build: Build | None  # the full build; None when unknown or known without its revision
    installed: frozenset[int]
    offered: frozenset[int] | None  # None: not known (typed-in facts)
    branch: Branch | None = None  # set when only the first three parts are known (systeminfo)

    @property
    def on_branch(self) -> Branch | None:
        return self.build[:3] if self.build is not None else self.branch


@dataclass(frozen=True, slots=True)
class CveDecision:
    cve: str
    severity: str | None
    title: str
    month: str
    status: str  # "open" | "fixed"
    reason: str
    fixing_kbs: tuple[str, ...]  # for open CVEs: the KBs that would close it
    offered: bool | None  # whether Windows Update offers one of them (None: not known)
    fix: str | None = None  # open CVEs: one of FIX_KINDS


@dataclass(frozen=True, slots=True)
class ExposureSummary:
    open_by_severity: Mapping[str | None, int]
    open_total: int
    fixed_total: int
    closing: tuple[int, ...]
    open_by_fix: Mapping[str, int]


class _Fix(NamedTuple):
    """Why a CVE is fixed: which rule, the fixing KB, and the evidence."""

    rule: str  # "build" | "inferred" | "installed" | "chain" | "line"
    kb: int
    build: Build | None = None
    installed: int | None = None


@dataclass(frozen=True, slots=True)
class _IndexedCve:
    """What deciding one CVE needs, precomputed once per product (not once per server)."""

    cve: CatalogCve
    real_builds: Mapping[Branch, tuple[Build, int]]  # branch → (lowest FixedBuild, its KB)
    inferred_builds: Mapping[Branch, tuple[Build, int]]  # branch → (lowest inferred build, its KB)
    closing: tuple[int, ...]  # newest successors of its non-hotpatch KBs
    hotpatches: tuple[int, ...]
    line_fix: LineKb | None  # its earliest fixing KB on the product's update line

    def reached(self, build: Build) -> tuple[str, Build, int] | None:
        for rule, builds in (("build", self.real_builds), ("inferred", self.inferred_builds)):
            found = builds.get(build[:3])
            if found is not None and build >= found[0]:
                return rule, *found
        return None

    def first_build(self, branch: Branch) -> Build | None:
        """The lowest build on ``branch`` at which the CVE is fixed (real or inferred)."""
        builds = [found[0] for found in (self.real_builds.get(branch), self.inferred_builds.get(branch)) if found]
        return min(builds) if builds else None


@lru_cache(maxsize=64)
def _index(catalog: ProductCatalog) -> tuple[_IndexedCve, ...]:
    known = _known_entries(catalog)
    indexed = []
    for cve in catalog.cves:
        found = known.get(id(cve))
        if found is None or found.cve is not cve:  # the entry holds its CVE: an id is never reused under it
            found = known[id(cve)] = _indexed_cve(catalog, cve)
        indexed.append(found)
    return tuple(indexed)


def _indexed_cve(catalog: ProductCatalog, cve: CatalogCve) -> _IndexedCve:
    real: dict[Branch, tuple[Build, int]] = {}
    inferred: dict[Branch, tuple[Build, int]] = {}
    for kb in cve.kbs:
        entry = catalog.kbs[kb]
        if entry.build is None:
            continue
        target = inferred if entry.build_inferred else real
        branch = entry.build[:3]
        if branch not in target or entry.build < target[branch][0]:
            target[branch] = (entry.build, kb)
    closing = tuple(sorted({catalog.successor(kb) for kb in cve.kbs if not catalog.kbs[kb].is_hotpatch}))
    hotpatches = tuple(kb for kb in cve.kbs if catalog.kbs[kb].is_hotpatch)
    on_line = [catalog.line[kb] for kb in cve.kbs if kb in catalog.line]
    line_fix = min(on_line, key=lambda line: line.month) if on_line else None
    return _IndexedCve(cve, real, inferred, closing, hotpatches, line_fix)


# A CVE's entry depends on the product's KBs, successors and update line, not on which other CVEs
# the catalog holds: catalogs narrowed to some CVEs (``dataclasses.replace(catalog, cves=…)``, the
# overdue and exploited views of ``domain/deadlines.py``) share those mappings and reuse the entries.
_ENTRIES_KEPT = 64
_entries: OrderedDict[tuple[int, ...], tuple[tuple[object, ...], dict[int, _IndexedCve]]] = OrderedDict()
_entries_lock = Lock()


def _known_entries(catalog: ProductCatalog) -> dict[int, _IndexedCve]:
    """The entries already made for catalogs sharing ``catalog``'s mappings (kept with the mappings)."""
    mappings = (catalog.kbs, catalog.successors, catalog.line)
    key = tuple(map(id, mappings))
    with _entries_lock:
        found = _entries.get(key)
        if found is not None and all(kept is mapping for kept, mapping in zip(found[0], mappings, strict=True)):
            _entries.move_to_end(key)
            return found[1]
        entries: dict[int, _IndexedCve] = {}
        _entries[key] = (mappings, entries)
        while len(_entries) > _ENTRIES_KEPT:
            _entries.popitem(last=False)
        return entries


@lru_cache(maxsize=4096)
def _installed_line(catalog: ProductCatalog, installed: frozenset[int]) -> LineKb | None:
    """The newest installed cumulative update of the product's line, if any."""
    found = [catalog.line[kb] for kb in installed if kb in catalog.line]
    return max(found, key=lambda line: (line.month, line.kb)) if found else None


def _fixed_by(catalog: ProductCatalog, entry: _IndexedCve, facts: ServerFacts, line: LineKb | None) -> _Fix | None:
    if facts.build is not None:
        reached = entry.reached(facts.build)
        if reached is not None:
            return _Fix(reached[0], reached[2], reached[1])
    covered = _installed_cover(catalog, entry.cve.kbs, facts.installed)
    if covered is not None:
        return (
            _Fix("installed", covered[1])
            if covered[0] == covered[1]
            else _Fix("chain", covered[1], installed=covered[0])
        )
    # The line rule speaks only when builds cannot: never against a known FixedBuild on this branch.
    decisive = facts.build is not None and facts.build[:3] in entry.real_builds
    if line is not None and entry.line_fix is not None and not decisive and entry.line_fix.month < line.month:
        return _Fix("line", entry.line_fix.kb, installed=line.kb)
    return None


def _installed_cover(
    catalog: ProductCatalog, kbs: tuple[int, ...], installed: frozenset[int]
) -> tuple[int, int] | None:
    """(installed KB, fixing KB it is or supersedes), the newest installed one winning; None if none."""
    found = [
        (newer, kb) for newer in installed for kb in kbs if newer == kb or newer in catalog.superseded_by.get(kb, ())
    ]
    return max(found) if found else None


def classify_kb(catalog: ProductCatalog, kb: int, facts: ServerFacts) -> KbStatus:
    """One KB on one server: installed (or contained in what is), superseded, offered, or not."""
    entry = catalog.kbs.get(kb)
    if kb in facts.installed or not facts.installed.isdisjoint(catalog.superseded_by.get(kb, ())):
        return KbStatus.ALREADY_INSTALLED
    build = entry.build if entry is not None else None
    if build is not None and facts.build is not None and build[:3] == facts.build[:3] and facts.build >= build:
        return KbStatus.ALREADY_INSTALLED
    line = _installed_line(catalog, facts.installed)
    if line is not None and kb in catalog.line and catalog.line[kb].month < line.month:
        return KbStatus.ALREADY_INSTALLED
    if catalog.newer_product_kbs(kb):
        return KbStatus.SUPERSEDED
    return KbStatus.AVAILABLE if facts.offered and kb in facts.offered else KbStatus.NOT_AVAILABLE


class _Update(NamedTuple):
    build: Build
    kb: int


@lru_cache(maxsize=4096)
def _offered_update(catalog: ProductCatalog, offered: frozenset[int] | None, branch: Branch | None) -> _Update | None:
    """The newest offered non-hotpatch update with a FixedBuild on the server's branch.

    Installing it closes every CVE fixed at or below its build, whatever the chains say: a
    patch run installs what Windows Update offers, so that is the KB to show, not a stale
    successor of a broken chain that Windows Update no longer offers.
    """
    found = [
        (entry.build, kb)
        for kb in offered or ()
        if (entry := catalog.kbs.get(kb)) is not None
        and entry.build is not None
        and not entry.build_inferred
        and not entry.is_hotpatch
        and entry.build[:3] == branch
    ]
    return _Update(*max(found)) if found else None


def _closing(catalog: ProductCatalog, entry: _IndexedCve, facts: ServerFacts) -> tuple[int, ...]:
    branch = facts.on_branch
    update = _offered_update(catalog, facts.offered, branch)
    if update is not None and branch is not None:
        first = entry.first_build(branch)
        if first is not None and first <= update.build:
            return (update.kb,)
    if not entry.hotpatches or not facts.offered:
        return entry.closing
    offered = {catalog.successor(kb) for kb in entry.hotpatches if kb in facts.offered}
    return tuple(sorted(offered.union(entry.closing)))


def _fix_kind(catalog: ProductCatalog, entry: _IndexedCve, closing: tuple[int, ...], facts: ServerFacts) -> str:
    if not entry.cve.kbs:
        return FIX_NONE
    if not closing or all(catalog.kbs[kb].never_offered for kb in closing if kb in catalog.kbs):
        return FIX_NOT_OFFERED
    if facts.offered is None:
        return FIX_UNKNOWN
    return FIX_OFFERED if not facts.offered.isdisjoint(closing) else FIX_NOT_OFFERED


def assess(catalog: ProductCatalog, facts: ServerFacts) -> list[CveDecision]:
    """Decide every CVE of the product for one server, each with its reason."""
    return list(_assess_cached(catalog, facts))


@lru_cache(maxsize=4096)
def _assess_cached(catalog: ProductCatalog, facts: ServerFacts) -> tuple[CveDecision, ...]:
    line = _installed_line(catalog, facts.installed)
    return tuple(_decide(catalog, entry, facts, line) for entry in _index(catalog))


def _decide(catalog: ProductCatalog, entry: _IndexedCve, facts: ServerFacts, line: LineKb | None) -> CveDecision:
    cve = entry.cve
    fixed = _fixed_by(catalog, entry, facts, line)
    if fixed is not None:
        reason = _fixed_reason(catalog, entry, facts, fixed)
        return CveDecision(cve.cve, cve.severity, cve.title, cve.month, "fixed", reason, (), None)
    closing = _closing(catalog, entry, facts)
    fix = _fix_kind(catalog, entry, closing, facts)
    offered = None if facts.offered is None else not facts.offered.isdisjoint(closing)
    reason = _open_reason(catalog, entry, facts, line, closing)
    fixing = tuple(f"KB{kb}" for kb in closing)
    return CveDecision(cve.cve, cve.severity, cve.title, cve.month, "open", reason, fixing, offered, fix)


def _fixed_reason(catalog: ProductCatalog, entry: _IndexedCve, facts: ServerFacts, fixed: _Fix) -> str:
    build = _text(facts.build) if facts.build else "?"
    if fixed.rule == "build":
        return f"build {build} is at or past KB{fixed.kb}'s fixed build {_text(fixed.build)}"
    if fixed.rule == "inferred":
        return (
            f"build {build} is at or past {_text(fixed.build)}, the first later cumulative update "
            f"with a known build, which contains KB{fixed.kb}"
        )
    if fixed.rule == "installed":
        return f"KB{fixed.kb} is installed"
    assert fixed.installed is not None
    if fixed.rule == "chain":
        return f"KB{fixed.installed} is installed and supersedes KB{fixed.kb}"
    installed = catalog.line[fixed.installed]
    return (
        f"KB{fixed.installed}, a cumulative update of {_month(installed.month)}, is installed and contains "
        f"KB{fixed.kb} of {_month(catalog.line[fixed.kb].month)} (same update line; no supersedence chain "
        "or build in Microsoft's data connects them)"
    )


def _open_reason(
    catalog: ProductCatalog, entry: _IndexedCve, facts: ServerFacts, line: LineKb | None, closing: tuple[int, ...]
) -> str:
    if not entry.cve.kbs:
        return (
            "Microsoft lists no KB for this CVE on this product (advisories and some CVEs are closed by a "
            "configuration change or an update outside Windows Update)"
        )
    if not closing:
        return "only hotpatch KBs fix it and Windows Update offers none"
    if all(catalog.kbs[kb].never_offered for kb in closing if kb in catalog.kbs):
        kinds = ", ".join(f"KB{kb} ({catalog.kbs[kb].subtype})" for kb in closing)
        return (
            f"its fix, {kinds}, is a Dynamic Update of Windows Setup, which Windows Update does not offer to "
            "an installed server: install it by hand from the Microsoft Update Catalog"
        )
    branch = facts.on_branch
    lowest = entry.real_builds.get(branch) if branch else None
    if facts.build is not None and lowest is not None:
        return (
            f"build {_text(facts.build)} is older than KB{lowest[1]}'s fixed build {_text(lowest[0])}, "
            "and no installed KB supersedes it"
        )
    elsewhere = [found for found_branch, found in sorted(entry.real_builds.items()) if found_branch != branch]
    if branch is not None and elsewhere and branch not in entry.inferred_builds:
        build, kb = elsewhere[0]
        return (
            f"Microsoft lists its fixed build only on another build branch ({_text(build)} for KB{kb}); "
            f"this server is on {_text(branch)}, and no installed KB supersedes the fix"
        )
    parts = ["no fixing KB, nor a KB that supersedes one, is installed"]
    inferred = entry.inferred_builds.get(branch) if branch else None
    if facts.build is None:
        parts.append("the build's revision is not known" if branch else "the build is not known")
    elif inferred is not None:
        parts.append(f"build {_text(facts.build)} is older than {_text(inferred[0])} (a later cumulative update)")
    else:
        parts.append("Microsoft gives no fixed build to compare with")
    if entry.line_fix is not None:
        if line is None:
            parts.append("no cumulative update of this product's line is among the installed KBs")
        else:
            parts.append(
                f"the newest installed cumulative update, KB{line.kb} ({_month(line.month)}), is not newer than "
                f"KB{entry.line_fix.kb} ({_month(entry.line_fix.month)})"
            )
    return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class _BranchIndex:
    """The product's CVEs for one build branch, sorted by the lowest build that fixes them.

    A server's build then splits them with one binary search: everything before the split is
    fixed by the build; suffix tables give the open counts and closing KBs of the rest, so a
    patch level costs O(log n) plus the few CVEs its installed KBs cover beyond the split.
    """

    builds: tuple[Build, ...]
    entries: tuple[_IndexedCve, ...]
    suffix_counts: tuple[Mapping[str | None, int], ...]  # len(entries) + 1
    suffix_line_month: tuple[MonthKey | None, ...]  # earliest line-rule candidate from i on
    positions: Mapping[int, tuple[int, ...]]  # closing KB → sorted positions of entries it closes
    last_covered: Mapping[int, int]  # KB → the last position whose CVE it covers (installed, it fixes it)
    unbuilt: tuple[_IndexedCve, ...]  # no fix build on this branch: decided one by one
    hotpatch_kbs: frozenset[int]
    # Closing KBs by the last position they close, ascending: the closing KBs of the entries from
    # i on are those whose last position is at least i (a suffix of this order, not a set per i).
    closing_last: tuple[int, ...]
    closing_kbs: tuple[int, ...]

    def closing_from(self, position: int) -> frozenset[int]:
        """Every KB closing one of the entries from ``position`` on."""
        return frozenset(self.closing_kbs[bisect_left(self.closing_last, position) :])


@lru_cache(maxsize=256)
def _branch_index(catalog: ProductCatalog, branch: Branch | None, severities: frozenset[str] | None) -> _BranchIndex:
    wanted = [e for e in _index(catalog) if severities is None or e.cve.severity in severities]
    firsts = [e.first_build(branch) if branch is not None else None for e in wanted]
    keyed = [(first, e) for first, e in zip(firsts, wanted, strict=True) if first is not None]
    keyed.sort(key=lambda pair: pair[0])
    built = [e for _, e in keyed]
    counts: list[Mapping[str | None, int]] = [{}]
    line_month: list[MonthKey | None] = [None]
    for entry in reversed(built):
        previous = counts[-1]
        counts.append({**previous, entry.cve.severity: previous.get(entry.cve.severity, 0) + 1})
        candidate = entry.line_fix.month if entry.line_fix and branch not in entry.real_builds else None
        months = [month for month in (line_month[-1], candidate) if month is not None]
        line_month.append(min(months) if months else None)
    positions: dict[int, list[int]] = {}
    last_listed: dict[int, int] = {}
    for position, entry in enumerate(built):
        for kb in entry.closing:
            positions.setdefault(kb, []).append(position)
        for kb in entry.cve.kbs:
            last_listed[kb] = position
    last_covered = dict(last_listed)
    for kb, position in last_listed.items():  # per KB, not per CVE: chains are long, CVEs many
        for newer in catalog.superseded_by.get(kb, ()):
            if last_covered.get(newer, -1) < position:
                last_covered[newer] = position
    closing_order = sorted((found[-1], kb) for kb, found in positions.items())
    return _BranchIndex(
        builds=tuple(first for first, _ in keyed),
        entries=tuple(built),
        suffix_counts=tuple(reversed(counts)),
        suffix_line_month=tuple(reversed(line_month)),
        positions={kb: tuple(found) for kb, found in positions.items()},
        last_covered=last_covered,
        unbuilt=tuple(e for first, e in zip(firsts, wanted, strict=True) if first is None),
        hotpatch_kbs=frozenset(kb for e in wanted for kb in e.hotpatches),
        closing_last=tuple(last for last, _ in closing_order),
        closing_kbs=tuple(kb for _, kb in closing_order),
    )


def summarise(catalog: ProductCatalog, facts: ServerFacts, severities: frozenset[str] | None = None) -> ExposureSummary:
    """Counts and closing KBs only: the fleet view, without building a decision per CVE."""
    build = facts.build
    index = _branch_index(catalog, facts.on_branch, severities)
    line = _installed_line(catalog, facts.installed)
    split = bisect_right(index.builds, build) if build is not None else 0
    rest = index.entries[split:]
    tally = _Tally(fixed=split)
    earliest = index.suffix_line_month[split]
    # Installed KBs may cover CVEs past the split, offered hotpatches change closing KBs, an
    # installed cumulative update may contain build-less fixes, and without a build or an offer
    # list nothing can be read from the tables: then the rest is decided one by one.
    if (
        build is None
        or facts.offered is None
        or not index.hotpatch_kbs.isdisjoint(facts.offered)
        or (line is not None and earliest is not None and earliest < line.month)
        or any(index.last_covered.get(kb, -1) >= split for kb in facts.installed)
    ):
        for entry in rest:
            tally.add(catalog, entry, facts, line)
    else:
        tally.open_by_severity = dict(index.suffix_counts[split])
        # Entries up to the offered update's build are closed by it; the rest by their own KBs.
        update = _offered_update(catalog, facts.offered, facts.on_branch)
        cut = max(split, bisect_right(index.builds, update.build)) if update is not None else split
        tally.closing = set(index.closing_from(cut)) | ({update.kb} if update is not None and cut > split else set())
        offered_positions = {
            position
            for kb in facts.offered
            for position in index.positions.get(kb, ())[bisect_left(index.positions.get(kb, ()), cut) :]
        }
        tally.by_fix[FIX_OFFERED] += cut - split + len(offered_positions)
        tally.by_fix[FIX_NOT_OFFERED] += len(index.entries) - cut - len(offered_positions)
    for entry in index.unbuilt:
        tally.add(catalog, entry, facts, line)
    open_total = sum(tally.open_by_severity.values())
    by_fix = {kind: count for kind, count in tally.by_fix.items() if count or kind != FIX_UNKNOWN}
    return ExposureSummary(tally.open_by_severity, open_total, tally.fixed, tuple(sorted(tally.closing)), by_fix)


class _Tally:
    """Running totals of one summary."""

    def __init__(self, fixed: int) -> None:
        self.open_by_severity: dict[str | None, int] = {}
        self.closing: set[int] = set()
        self.fixed = fixed
        self.by_fix: dict[str, int] = dict.fromkeys(FIX_KINDS, 0)

    def add(self, catalog: ProductCatalog, entry: _IndexedCve, facts: ServerFacts, line: LineKb | None) -> None:
        if _fixed_by(catalog, entry, facts, line) is not None:
            self.fixed += 1
            return
        severity = entry.cve.severity
        self.open_by_severity[severity] = self.open_by_severity.get(severity, 0) + 1
        closing = _closing(catalog, entry, facts)
        self.closing.update(closing)
        self.by_fix[_fix_kind(catalog, entry, closing, facts)] += 1


def _text(build: tuple[int, ...] | None) -> str:
    return ".".join(map(str, build)) if build else "?"


def _month(month: MonthKey) -> str:
    return f"{month[0]:04d}-{month[1]:02d}" if month != NO_MONTH else "an unknown month"


def build_of(text: str | None) -> Build | None:
    return parse_build(text) if text and is_windows_build(text) else None


def severity_rank(severity: str | None) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)

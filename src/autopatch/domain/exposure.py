"""Exposure: which catalog CVEs a server is open to, and which KBs would close them (pure).

The original matched KB numbers against ``Get-HotFix`` and so reported every CVE of an older
cumulative update as open on an up-to-date server (defect 5). Here a CVE is fixed when the
server's build is at or past the fixed build of any of its fixes *on the same branch*, or when a
fixing KB — or any KB that supersedes it, following the chain — is installed.

Per KB, the original's classes plus one: ``Already Installed``, ``Superseded`` (a newer KB for
this product covers it: never install it, never count it open), ``Available`` (Windows Update
offers it), ``Not Available``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import lru_cache

from autopatch.domain.catalog import HOTPATCH_SUBTYPES, SEVERITIES
from autopatch.domain.identifiers import is_windows_build, parse_build

Build = tuple[int, int, int, int]


class KbStatus(StrEnum):
    ALREADY_INSTALLED = "Already Installed"
    SUPERSEDED = "Superseded"
    AVAILABLE = "Available"
    NOT_AVAILABLE = "Not Available"


@dataclass(frozen=True, slots=True)
class CatalogKb:
    """A KB as one product sees it."""

    kb: int
    build: Build | None
    subtype: str | None
    restart_required: str | None
    month: tuple[int, int] = (0, 0)  # (year, month) of the document that lists the KB most
    build_inferred: bool = False

    @property
    def is_hotpatch(self) -> bool:
        return self.subtype in HOTPATCH_SUBTYPES


# Updates that contain every earlier one of their kind. "Security Only" (2016-2022, ESU era) and
# hotpatches are not cumulative; before 2018 MSRC left SubType empty on cumulative updates.
CUMULATIVE_SUBTYPES = frozenset({None, "Security Update", "Monthly Rollup", "Servicing Stack Update"})


def infer_cumulative_builds(kbs: Mapping[int, CatalogKb]) -> dict[int, CatalogKb]:
    """Give build-less cumulative KBs the build of the first later cumulative update with one.

    MSRC documents before about 2021 carry no FixedBuild, and their supersedence chains break on
    bulletin ids ("MS16-087"), so an up-to-date 2016 server would look open to every CVE of 2016.
    A cumulative update of month M is contained in every later cumulative update of the product:
    if the server's build reached the first one with a known build, it has M's fixes too.
    """
    known = [
        (kb.month, kb.build)
        for kb in kbs.values()
        if kb.build is not None and kb.subtype in CUMULATIVE_SUBTYPES and kb.month != (0, 0)
    ]
    if not known:
        return dict(kbs)
    branches = Counter(build[:3] for _, build in known)
    branch = branches.most_common(1)[0][0]
    ladder = sorted((month, build) for month, build in known if build[:3] == branch)
    result = dict(kbs)
    for number, kb in kbs.items():
        if kb.build is not None or kb.subtype not in CUMULATIVE_SUBTYPES or kb.month == (0, 0):
            continue
        later = [build for month, build in ladder if month >= kb.month]
        if later:
            result[number] = replace(kb, build=min(later), build_inferred=True)
    return result


@dataclass(frozen=True, slots=True)
class CatalogCve:
    cve: str
    severity: str | None
    title: str
    month: str
    kbs: tuple[int, ...]


@dataclass(frozen=True, slots=True, eq=False)  # hashed by identity: one object per product per load
class ProductCatalog:
    """Everything exposure needs about one product, loaded once for the whole fleet."""

    product: str
    cves: tuple[CatalogCve, ...]
    kbs: Mapping[int, CatalogKb]
    superseded_by: Mapping[int, frozenset[int]]  # transitive, restricted to this product's KBs

    def successor(self, kb: int) -> int:
        """The newest KB of this product that supersedes ``kb`` (``kb`` itself if none)."""
        newer = self.superseded_by.get(kb, frozenset())
        if not newer:
            return kb
        return max(newer, key=lambda k: (self.kbs[k].build or (0, 0, 0, 0), k))


@dataclass(frozen=True, slots=True)
class CveDecision:
    cve: str
    severity: str | None
    title: str
    month: str
    status: str  # "open" | "fixed"
    reason: str
    fixing_kbs: tuple[str, ...]  # for open CVEs: the KBs that would close it
    offered: bool  # whether Windows Update offers one of them


@dataclass(frozen=True, slots=True)
class ServerFacts:
    build: Build | None
    installed: frozenset[int]
    offered: frozenset[int]


def closure(edges: Mapping[int, Iterable[int]], within: Iterable[int]) -> dict[int, frozenset[int]]:
    """Transitive ``superseded_by`` for each KB in ``within``, keeping only KBs in ``within``."""
    members = set(within)
    result: dict[int, frozenset[int]] = {}

    def reach(kb: int, stack: frozenset[int]) -> frozenset[int]:
        if kb in result:
            return result[kb]
        found: set[int] = set()
        for newer in edges.get(kb, ()):
            if newer in stack:  # defensive: a cycle in Microsoft's data must not hang us
                continue
            if newer in members:
                found.add(newer)
            found |= reach(newer, stack | {newer})
        result[kb] = frozenset(found)
        return result[kb]

    for kb in members:
        reach(kb, frozenset({kb}))
    return {kb: result[kb] for kb in members}


def _build_reached(entry: CatalogKb | None, facts: ServerFacts) -> bool:
    """Builds only compare within one branch: 10.0.20348.x says nothing about 10.0.25398.y."""
    if entry is None or entry.build is None or facts.build is None:
        return False
    return entry.build[:3] == facts.build[:3] and facts.build >= entry.build


def classify_kb(catalog: ProductCatalog, kb: int, facts: ServerFacts) -> KbStatus:
    """One KB on one server: installed (or its build reached), superseded, offered, or not."""
    entry = catalog.kbs.get(kb)
    if kb in facts.installed:
        return KbStatus.ALREADY_INSTALLED
    if _build_reached(entry, facts):
        return KbStatus.ALREADY_INSTALLED
    if catalog.superseded_by.get(kb):
        return KbStatus.SUPERSEDED
    return KbStatus.AVAILABLE if kb in facts.offered else KbStatus.NOT_AVAILABLE


@dataclass(frozen=True, slots=True)
class _IndexedCve:
    """What deciding one CVE needs, precomputed once per product (not once per server)."""

    cve: CatalogCve
    min_build: Mapping[tuple[int, int, int], tuple[Build, int]]  # branch → (lowest fixed build, its KB)
    covering: frozenset[int]  # its KBs and every KB that supersedes one of them
    closing: tuple[int, ...]  # newest successors of its non-hotpatch KBs
    hotpatches: tuple[int, ...]


@lru_cache(maxsize=64)
def _index(catalog: ProductCatalog) -> tuple[_IndexedCve, ...]:
    indexed = []
    for cve in catalog.cves:
        min_build: dict[tuple[int, int, int], tuple[Build, int]] = {}
        for kb in cve.kbs:
            build = catalog.kbs[kb].build
            if build is not None and (build[:3] not in min_build or build < min_build[build[:3]][0]):
                min_build[build[:3]] = (build, kb)
        covering = frozenset(cve.kbs).union(*(catalog.superseded_by.get(kb, frozenset()) for kb in cve.kbs))
        closing = tuple(sorted({catalog.successor(kb) for kb in cve.kbs if not catalog.kbs[kb].is_hotpatch}))
        hotpatches = tuple(kb for kb in cve.kbs if catalog.kbs[kb].is_hotpatch)
        indexed.append(_IndexedCve(cve, min_build, covering, closing, hotpatches))
    return tuple(indexed)


def _fixed_by(entry: _IndexedCve, facts: ServerFacts) -> tuple[Build, int] | int | None:
    """(build, KB) when the build reached a fix, the installed KB when one covers it, else None."""
    if facts.build is not None:
        reached = entry.min_build.get(facts.build[:3])
        if reached is not None and facts.build >= reached[0]:
            return reached
    if not entry.covering.isdisjoint(facts.installed):
        return max(entry.covering & facts.installed)
    return None


def _closing(catalog: ProductCatalog, entry: _IndexedCve, facts: ServerFacts) -> tuple[int, ...]:
    if not entry.hotpatches:
        return entry.closing
    offered = {catalog.successor(kb) for kb in entry.hotpatches if kb in facts.offered}
    return tuple(sorted(offered.union(entry.closing)))


def assess(catalog: ProductCatalog, facts: ServerFacts) -> list[CveDecision]:
    """Decide every CVE of the product for one server, each with its reason."""
    return list(_assess_cached(catalog, facts))


@lru_cache(maxsize=4096)
def _assess_cached(catalog: ProductCatalog, facts: ServerFacts) -> tuple[CveDecision, ...]:
    return tuple(_decide(catalog, entry, facts) for entry in _index(catalog))


def _decide(catalog: ProductCatalog, entry: _IndexedCve, facts: ServerFacts) -> CveDecision:
    cve = entry.cve

    def decision(status: str, reason: str, fixing: tuple[str, ...] = (), offered: bool = False) -> CveDecision:
        return CveDecision(cve.cve, cve.severity, cve.title, cve.month, status, reason, fixing, offered)

    fixed = _fixed_by(entry, facts)
    if isinstance(fixed, tuple):
        build, kb = fixed
        assert facts.build is not None
        if catalog.kbs[kb].build_inferred:
            return decision(
                "fixed",
                f"build {_text(facts.build)} is at or past {_text(build)}, the first later cumulative update "
                f"with a known build, which contains KB{kb}",
            )
        return decision("fixed", f"build {_text(facts.build)} is at or past KB{kb}'s fixed build {_text(build)}")
    if fixed is not None:
        if fixed in cve.kbs:
            return decision("fixed", f"KB{fixed} is installed")
        superseded = next(kb for kb in cve.kbs if fixed in catalog.superseded_by.get(kb, frozenset()))
        return decision("fixed", f"KB{fixed} is installed and supersedes KB{superseded}")
    if not cve.kbs:
        return decision("open", "Microsoft lists no KB for this CVE on this product")
    closing = _closing(catalog, entry, facts)
    if not closing:
        return decision("open", "only hotpatch KBs fix it and Windows Update offers none")
    offered = any(kb in facts.offered for kb in closing)
    reason = "no fixing KB is installed and the build is older than every fixed build"
    return decision("open", reason, tuple(f"KB{kb}" for kb in closing), offered)


@dataclass(frozen=True, slots=True)
class ExposureSummary:
    open_by_severity: Mapping[str | None, int]
    open_total: int
    fixed_total: int
    closing: tuple[int, ...]


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
    suffix_closing: tuple[frozenset[int], ...]  # len(entries) + 1
    unbuilt: tuple[_IndexedCve, ...]  # no fix build on this branch: decided one by one
    hotpatch_kbs: frozenset[int]


@lru_cache(maxsize=256)
def _branch_index(
    catalog: ProductCatalog, branch: tuple[int, int, int] | None, severities: frozenset[str] | None
) -> _BranchIndex:
    wanted = [e for e in _index(catalog) if severities is None or e.cve.severity in severities]
    built = sorted((e for e in wanted if branch in e.min_build), key=lambda e: e.min_build[branch][0])  # type: ignore[index]
    counts: list[Mapping[str | None, int]] = [{}]
    closing: list[frozenset[int]] = [frozenset()]
    for entry in reversed(built):
        previous = counts[-1]
        counts.append({**previous, entry.cve.severity: previous.get(entry.cve.severity, 0) + 1})
        closing.append(closing[-1] | frozenset(entry.closing))
    return _BranchIndex(
        builds=tuple(e.min_build[branch][0] for e in built),  # type: ignore[index]
        entries=tuple(built),
        suffix_counts=tuple(reversed(counts)),
        suffix_closing=tuple(reversed(closing)),
        unbuilt=tuple(e for e in wanted if branch not in e.min_build),
        hotpatch_kbs=frozenset(kb for e in wanted for kb in e.hotpatches),
    )


def summarise(catalog: ProductCatalog, facts: ServerFacts, severities: frozenset[str] | None = None) -> ExposureSummary:
    """Counts and closing KBs only: the fleet view, without building a decision per CVE."""
    build = facts.build
    index = _branch_index(catalog, build[:3] if build is not None else None, severities)
    split = bisect_right(index.builds, build) if build is not None else 0
    open_by_severity = dict(index.suffix_counts[split])
    closing = set(index.suffix_closing[split])
    fixed_total = split
    rest = index.entries[split:]
    # Installed KBs may cover CVEs past the split, and offered hotpatches change closing KBs:
    # both are rare, and then the rest is decided one by one.
    if not index.hotpatch_kbs.isdisjoint(facts.offered) or any(
        not e.covering.isdisjoint(facts.installed) for e in rest
    ):
        open_by_severity, closing, fixed_total = {}, set(), split
        for entry in rest:
            fixed_total += _tally(catalog, entry, facts, open_by_severity, closing)
    for entry in index.unbuilt:
        fixed_total += _tally(catalog, entry, facts, open_by_severity, closing)
    return ExposureSummary(open_by_severity, sum(open_by_severity.values()), fixed_total, tuple(sorted(closing)))


def _tally(
    catalog: ProductCatalog,
    entry: _IndexedCve,
    facts: ServerFacts,
    open_by_severity: dict[str | None, int],
    closing: set[int],
) -> int:
    """Add one CVE to the running totals; return 1 if it is fixed."""
    if _fixed_by(entry, facts) is not None:
        return 1
    open_by_severity[entry.cve.severity] = open_by_severity.get(entry.cve.severity, 0) + 1
    closing.update(_closing(catalog, entry, facts))
    return 0


def _text(build: Build) -> str:
    return ".".join(map(str, build))


def build_of(text: str | None) -> Build | None:
    return parse_build(text) if text and is_windows_build(text) else None


def severity_rank(severity: str | None) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)

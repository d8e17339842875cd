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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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

    @property
    def is_hotpatch(self) -> bool:
        return self.subtype in HOTPATCH_SUBTYPES


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


def assess(catalog: ProductCatalog, facts: ServerFacts) -> list[CveDecision]:
    """Decide every CVE of the product for one server. Servers with equal facts share the work."""
    return list(_assess_cached(catalog, facts))


@lru_cache(maxsize=8192)
def _assess_cached(catalog: ProductCatalog, facts: ServerFacts) -> tuple[CveDecision, ...]:
    return tuple(_decide(catalog, cve, facts) for cve in catalog.cves)


def _decide(catalog: ProductCatalog, cve: CatalogCve, facts: ServerFacts) -> CveDecision:
    def decision(status: str, reason: str, fixing: tuple[str, ...] = (), offered: bool = False) -> CveDecision:
        return CveDecision(cve.cve, cve.severity, cve.title, cve.month, status, reason, fixing, offered)

    for kb in cve.kbs:
        entry = catalog.kbs[kb]
        if _build_reached(entry, facts):
            assert entry.build is not None and facts.build is not None
            return decision(
                "fixed", f"build {_text(facts.build)} is at or past KB{kb}'s fixed build {_text(entry.build)}"
            )
        if kb in facts.installed:
            return decision("fixed", f"KB{kb} is installed")
        newer = catalog.superseded_by.get(kb, frozenset()) & facts.installed
        if newer:
            return decision("fixed", f"KB{max(newer)} is installed and supersedes KB{kb}")
    closing = sorted(
        {catalog.successor(kb) for kb in cve.kbs if not catalog.kbs[kb].is_hotpatch or kb in facts.offered}
    )
    if not cve.kbs:
        return decision("open", "Microsoft lists no KB for this CVE on this product")
    if not closing:
        return decision("open", "only hotpatch KBs fix it and Windows Update offers none", (), False)
    offered = any(kb in facts.offered for kb in closing)
    reason = "no fixing KB is installed and the build is older than every fixed build"
    return decision("open", reason, tuple(f"KB{kb}" for kb in closing), offered)


def _text(build: Build) -> str:
    return ".".join(map(str, build))


def build_of(text: str | None) -> Build | None:
    return parse_build(text) if text and is_windows_build(text) else None


def severity_rank(severity: str | None) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)

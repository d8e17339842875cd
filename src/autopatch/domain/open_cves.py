"""Which of a product's CVEs are open at one patch level, fast enough for every scan of a fleet (pure).

``domain/exposure.assess`` decides each CVE with its reason, about 30 ms for a product of a few
thousand CVEs; ``summarise`` gives counts only. History and reports need the open CVE *ids* of
every distinct patch level each time scans are stored (hundreds of levels at 100,000 servers), so
this module answers "which are open" with the same three rules as ``assess`` (see the docstring of
``domain/exposure.py``) as set arithmetic over indexes built once per product:

1. fixed by the build: the CVEs whose lowest fixed build on the server's branch (real or inferred)
   is at or below its build — one binary search over the CVEs sorted by that build;
2. fixed by an installed KB: each KB maps to the CVEs it fixes or supersedes a fix of;
3. fixed by the update line: the CVEs whose earliest line KB is of a month before the newest
   installed cumulative update's (never against a real fixed build on the server's branch) — one
   binary search over the CVEs sorted by that month.

The answer is the positions of the open CVEs in the product's indexed order (``_index``), which is
``catalog.cves``'s order; ``tests/test_open_cves.py`` checks it equals ``assess`` on real months.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import lru_cache

from autopatch.domain.exposure import ServerFacts, _index, _installed_line
from autopatch.domain.product_catalog import Branch, Build, CatalogCve, MonthKey, ProductCatalog


@dataclass(frozen=True, slots=True)
class _BuildOrder:
    """The product's CVEs with a fixed build on one branch, sorted by their lowest such build."""

    builds: tuple[Build, ...]
    positions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _LineOrder:
    """CVEs the line rule may fix on a branch, sorted by the month of their earliest line KB."""

    months: tuple[MonthKey, ...]
    positions: tuple[int, ...]


@lru_cache(maxsize=256)
def _build_order(catalog: ProductCatalog, branch: Branch) -> _BuildOrder:
    keyed = sorted(
        (first, position)
        for position, entry in enumerate(_index(catalog))
        if (first := entry.first_build(branch)) is not None
    )
    return _BuildOrder(tuple(build for build, _ in keyed), tuple(position for _, position in keyed))


@lru_cache(maxsize=256)
def _line_order(catalog: ProductCatalog, branch: Branch | None) -> _LineOrder:
    """``branch`` None: the build is unknown, so no fixed build is decisive and every line candidate counts."""
    keyed = sorted(
        (entry.line_fix.month, position)
        for position, entry in enumerate(_index(catalog))
        if entry.line_fix is not None and (branch is None or branch not in entry.real_builds)
    )
    return _LineOrder(tuple(month for month, _ in keyed), tuple(position for _, position in keyed))


@lru_cache(maxsize=64)
def _covered_by(catalog: ProductCatalog) -> dict[int, frozenset[int]]:
    """KB → positions of the CVEs it fixes, or fixes through superseding a fixing KB (rule 2)."""
    covered: dict[int, set[int]] = {}
    for position, entry in enumerate(_index(catalog)):
        for kb in entry.cve.kbs:
            covered.setdefault(kb, set()).add(position)
            for newer in catalog.superseded_by.get(kb, ()):
                covered.setdefault(newer, set()).add(position)
    return {kb: frozenset(positions) for kb, positions in covered.items()}


def open_positions(catalog: ProductCatalog, facts: ServerFacts) -> tuple[int, ...]:
    """Positions (in ``catalog_cves(catalog)``) of the CVEs open for ``facts``, ascending."""
    fixed: set[int] = set()
    if facts.build is not None:
        order = _build_order(catalog, facts.build[:3])
        fixed.update(order.positions[: bisect_right(order.builds, facts.build)])
    covered = _covered_by(catalog)
    for kb in facts.installed:
        fixed.update(covered.get(kb, ()))
    line = _installed_line(catalog, facts.installed)
    if line is not None:
        candidates = _line_order(catalog, facts.build[:3] if facts.build is not None else None)
        fixed.update(candidates.positions[: bisect_left(candidates.months, line.month)])
    return tuple(sorted(_all_positions(catalog).difference(fixed)))


@lru_cache(maxsize=64)
def _all_positions(catalog: ProductCatalog) -> frozenset[int]:
    return frozenset(range(len(_index(catalog))))


@lru_cache(maxsize=64)
def catalog_cves(catalog: ProductCatalog) -> tuple[CatalogCve, ...]:
    """The product's CVEs in the order ``open_positions`` counts them."""
    return tuple(entry.cve for entry in _index(catalog))

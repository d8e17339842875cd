"""Supersedence chains: which KBs a KB replaces, directly and transitively.

Cumulative updates supersede each other month after month, so "is this CVE fixed?" can only be
answered by following the chain (defect 5 of the original). The walk is pure: the caller passes
a lookup that returns the neighbours of a set of KBs (one store round trip per hop, not per KB).
"""

from __future__ import annotations

from collections.abc import Callable

NeighbourLookup = Callable[[set[int]], dict[int, set[int]]]


def walk_chain(start: int, neighbours: NeighbourLookup, max_hops: int = 1000) -> list[int]:
    """Every KB reachable from ``start`` (excluding it), nearest first, each once."""
    seen = {start}
    order: list[int] = []
    frontier = {start}
    for _ in range(max_hops):
        if not frontier:
            break
        found = neighbours(frontier)
        next_frontier = {kb for kbs in found.values() for kb in kbs} - seen
        order.extend(sorted(next_frontier, reverse=True))
        seen |= next_frontier
        frontier = next_frontier
    return order

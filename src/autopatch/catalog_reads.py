"""Catalog reads that several products' catalogs share, each asked of the store once per catalog revision.

A fleet runs a handful of products whose supersedence chains overlap (Windows Server 2022 and its
Server Core installation list the same KBs; every chain runs through the same later updates).
``load_product_catalog`` walks the chains and reads the KBs of other products one product at a
time; with a ``CatalogReads`` beside it (``AssessmentMemo`` keeps one per catalog revision) each
KB's edges and listings are read once for all of them, and the fleet's products' fixes in one
read. What a KB or a product answers does not depend on who else was read with it, so the
catalogs are the same as when each is loaded alone.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from autopatch.domain.catalog import FixRecord
from autopatch.store.base import CatalogStore


class CatalogReads:
    """A store's ``superseded_by`` and ``fixes_for_kbs``, remembered per KB (valid for one catalog revision).

    The store is passed to each call, never kept: the memo outlives the store handle of a request.
    """

    def __init__(self) -> None:
        self._newer: dict[int, set[int]] = {}
        self._listings: dict[int, list[FixRecord]] = {}
        self._product_fixes: dict[str, list[FixRecord]] = {}

    def prefetch_fixes(self, store: CatalogStore, product_ids: Collection[str]) -> None:
        """Read the fixes of several products at once: SQLite has no index of fixes by product, so
        each product read alone scans every fix of every product."""
        wanted = [product_id for product_id in dict.fromkeys(product_ids) if product_id not in self._product_fixes]
        if len(wanted) < 2:
            return
        for product_id in wanted:
            self._product_fixes[product_id] = []
        for record in store.fixes_for_products(wanted):
            self._product_fixes[record.fix.product_id].append(record)

    def fixes_for_products(self, store: CatalogStore, product_ids: Sequence[str]) -> list[FixRecord]:
        """As ``store.fixes_for_products``: a single product's prefetched fixes (in the store's order), else a read."""
        if len(product_ids) == 1 and (found := self._product_fixes.get(product_ids[0])) is not None:
            return list(found)
        return store.fixes_for_products(product_ids)

    def superseded_by(self, store: CatalogStore, kbs: Iterable[int]) -> dict[int, set[int]]:
        wanted = set(kbs)
        missing = wanted - self._newer.keys()
        if missing:
            found = store.superseded_by(missing)
            for kb in missing:
                self._newer[kb] = found.get(kb, set())
        return {kb: self._newer[kb] for kb in wanted}

    def fixes_for_kbs(self, store: CatalogStore, kbs: Iterable[int]) -> list[FixRecord]:
        """The fix records naming ``kbs``, KB by KB in the store's order for each."""
        wanted = sorted(set(kbs))
        missing = [kb for kb in wanted if kb not in self._listings]
        if missing:
            for kb in missing:
                self._listings[kb] = []
            for record in store.fixes_for_kbs(missing):
                self._listings[record.fix.kb].append(record)
        return [record for kb in wanted for record in self._listings[kb]]

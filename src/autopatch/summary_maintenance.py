"""Keeping a fleet summary current from the store's change logs instead of assessing the fleet again.

A scan changes one server's row; a catalog import changes the rows of the products it touched. The
kept summary (``exposure_cache.FleetExposureCache``) asks the store which servers and products
moved since its revisions (``FleetViewStore.fleet_changes`` / ``catalog_changes``), assesses those
servers again (``fleet_exposure`` for their ids: a few lookups when their patch levels are known),
puts their rows in place and moves the totals by the difference. The result is the summary a full
assessment would give — ``tests/test_summary_maintenance.py`` compares the two after scans,
discoveries, imports and renames.

A product's catalog depends on more than its own rows: its supersedence chains run through other
products' KBs (``assessment.load_product_catalog``). A catalog write therefore makes a product
stale when it names the product, or any KB of the product's chains.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from autopatch.assessment import AssessmentMemo, fleet_totals
from autopatch.catalog_reads import CatalogReads
from autopatch.domain.catalog import collapse_spaces
from autopatch.domain.fleet_view import CatalogChanges
from autopatch.domain.product_catalog import ProductCatalog

Row = dict[str, Any]


@dataclass(frozen=True)
class KeptRows:
    """The rows of a kept summary in their order (by name, then id), where each server's row is, and the totals."""

    rows: list[Row]
    positions: Mapping[str, int]
    totals: dict[str, int]

    @classmethod
    def of(cls, rows: list[Row]) -> KeptRows:
        return cls(rows, {row["instance_id"]: position for position, row in enumerate(rows)}, fleet_totals(rows))

    def replaced(self, fresh: Iterable[Row]) -> KeptRows:
        """These rows with ``fresh`` rows in place of the servers' old ones (new servers added in order)."""
        rows = list(self.rows)
        old: list[Row] = []
        new: list[Row] = []
        moved = False
        for row in fresh:
            position = self.positions.get(row["instance_id"])
            if position is None or rows[position]["name"] != row["name"]:  # new or renamed: the order moves
                moved = True
                break
            old.append(rows[position])
            new.append(row)
            rows[position] = row
        if moved:
            merged = {row["instance_id"]: row for row in self.rows} | {row["instance_id"]: row for row in fresh}
            return KeptRows.of(sorted(merged.values(), key=lambda row: (row["name"], row["instance_id"])))
        return KeptRows(rows, self.positions, moved_totals(self.totals, old, new))


def moved_totals(totals: Mapping[str, int], removed: list[Row], added: list[Row]) -> dict[str, int]:
    """``totals`` without ``removed`` rows and with ``added`` ones (``fleet_totals`` adds up row by row)."""
    minus, plus = fleet_totals(removed), fleet_totals(added)
    return {name: value - minus.get(name, 0) + plus.get(name, 0) for name, value in totals.items()}


def catalog_footprint(catalog: ProductCatalog) -> frozenset[int]:
    """Every KB a product's catalog was built from: its own, and those its chains and update line reach."""
    reached = {kb for newer in catalog.superseded_by.values() for kb in newer}
    return frozenset(catalog.kbs.keys() | catalog.superseded_by.keys() | catalog.line.keys() | reached)


def stale_products(catalogs: Mapping[str, ProductCatalog], changes: CatalogChanges) -> set[str]:
    """The products among ``catalogs`` whose catalog the logged writes may have changed."""
    named = {collapse_spaces(name).casefold() for name in changes.products}
    return {
        product
        for product, catalog in catalogs.items()
        if collapse_spaces(product).casefold() in named or not changes.kbs.isdisjoint(catalog_footprint(catalog))
    }


def forget_products(memo: AssessmentMemo, products: set[str]) -> None:
    """Drop the products' catalogs and summaries from ``memo``, and every remembered catalog read."""
    for product in products:
        memo.catalogs.pop(product, None)
    for kept in (memo.summaries, memo.previous):
        for key in [key for key in kept if key[0] in products]:
            del kept[key]
    memo.reads = CatalogReads()  # what it remembered may have moved; a product still kept reads nothing more

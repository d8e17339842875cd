"""Products loaded together (chains, other products' KBs and fixes read once for all) equal products loaded alone."""

from __future__ import annotations

from dataclasses import fields

from autopatch.assessment import load_product_catalog, prefetch_catalogs
from autopatch.catalog_reads import CatalogReads
from autopatch.domain.product_catalog import ProductCatalog
from autopatch.store.sqlite import SqliteStore

PRODUCTS = (
    "Windows Server 2016",
    "Windows Server 2019",
    "Windows Server 2022",
    "Windows Server 2022 (Server Core installation)",
    "Windows Server 2022, 23H2 Edition (Server Core installation)",
    "Windows Server 2025",
)


def as_fields(catalog: ProductCatalog) -> dict[str, object]:
    return {field.name: getattr(catalog, field.name) for field in fields(catalog)}


def test_catalogs_loaded_together_equal_catalogs_loaded_alone(catalog: SqliteStore) -> None:
    reads = CatalogReads()
    prefetch_catalogs(catalog, PRODUCTS, reads)
    together = {product: load_product_catalog(catalog, product, reads) for product in PRODUCTS}
    for product in PRODUCTS:
        alone = load_product_catalog(catalog, product)
        assert as_fields(together[product]) == as_fields(alone), product
        assert alone.superseded_by and alone.line  # the chains and the update line were read, not left empty


def test_shared_reads_ask_the_store_once_per_kb(catalog: SqliteStore) -> None:
    asked: list[frozenset[int]] = []

    class Counting:
        def superseded_by(self, kbs: frozenset[int]) -> dict[int, set[int]]:
            asked.append(frozenset(kbs))
            return catalog.superseded_by(kbs)

    reads = CatalogReads()
    first = reads.superseded_by(Counting(), {5034129, 5034127})  # type: ignore[arg-type]
    again = reads.superseded_by(Counting(), {5034129})  # type: ignore[arg-type]
    assert asked == [frozenset({5034129, 5034127})]
    assert again == {5034129: first[5034129]}

"""``/catalog``: products, CVEs of a product, one KB — the same queries as ``autopatch catalog …``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from autopatch.api.deps import StoreDep, require
from autopatch.api.models import CatalogCve, KbDetail, Limit, Offset, Page, ProductItem, page
from autopatch.catalog import queries
from autopatch.cve_deadlines import add_catalog_fields
from autopatch.domain.access import Role
from autopatch.domain.identifiers import parse_month
from autopatch.engine.policy import parse_as_of

router = APIRouter(prefix="/catalog", tags=["catalog"], dependencies=[Depends(require(Role.VIEWER))])


@router.get("/products", response_model=Page[ProductItem])
def products(store: StoreDep, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    """Every product with its MSRC id and counts of CVEs and KBs."""
    return page(queries.list_products(store), limit, offset)


@router.get("/cves", response_model=Page[CatalogCve])
def cves(
    store: StoreDep,
    product: Annotated[str, Query(min_length=1, max_length=200, description="exact MSRC product name or id")],
    month: Annotated[str | None, Query(max_length=20, description="MSRC month, YYYY-MM")] = None,
    severity: Annotated[str | None, Query(max_length=200, description="Critical,Important,…")] = None,
    q: Annotated[str | None, Query(max_length=200, description="text in the CVE id, title or KB ids")] = None,
    as_of: Annotated[str | None, Query(max_length=40, description="YYYY-MM-DD: deadlines and KEV on that day")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """One item per (CVE, product) with the KBs that fix it, oldest month first, each with its deadline."""
    day = parse_as_of(as_of)
    rows = queries.find_cves(
        store,
        product,
        month=parse_month(month) if month is not None else None,
        severities=queries.parse_severities([severity]) if severity is not None else None,
    )
    rows = add_catalog_fields(store, rows, day)
    if q is not None and q.strip():
        rows = queries.matching_text(rows, q)
    return page(rows, limit, offset)


@router.get("/kbs/{kb}", response_model=KbDetail)
def kb(kb: str, store: StoreDep) -> dict[str, Any]:
    """One KB: products and fixed builds, CVEs, month, and its supersedence chain both ways (404 unknown)."""
    return queries.describe_kb(store, kb)

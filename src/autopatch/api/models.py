"""Request and response bodies of the ``/api/v1`` API: the CLI's JSON, with a schema.

Keys and values are those of ``--format json`` (README "JSON output"): a value not known is
``null``, never a zero. Every list is a ``Page``: ``{"items": [...], "total": N}``, ``total``
counting every match, not only the page. The bodies of ``/runs`` are in ``run_models.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

MAX_LIMIT = 1000
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items per page (1 to 1000)")]
# Bounded so a huge offset is a 422 naming it, not an integer the database cannot hold (a 500).
MAX_OFFSET = 1_000_000_000
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip (0 to 1,000,000,000)")]


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int


def page(items: Sequence[Any], limit: int, offset: int) -> dict[str, Any]:
    """One page of ``items`` (already in their final order) and the count of them all."""
    return {"items": list(items[offset : offset + limit]), "total": len(items)}


class ErrorDetail(BaseModel):
    field: str | None = Field(description="the input that broke a rule, when one did")
    rule: str | None = Field(description="the rule it broke")
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str
    version: str


# --- fleet -------------------------------------------------------------------------------------


class InstanceItem(BaseModel):
    instance_id: str
    name: str
    product: str
    build: str | None
    online: bool
    offline_since: str | None
    last_scan: str | None
    tags: dict[str, str]


class ClosingKb(BaseModel):
    kb: str
    delivery: str = Field(description="windows-update: a patch run installs it; manual: it must be installed by hand")
    download_url: str | None


class CveDecisionItem(BaseModel):
    cve: str
    severity: str | None
    month: str
    status: str
    reason: str
    fixing_kbs: list[str]
    offered: bool | None
    fix: str | None
    title: str
    kev: bool = Field(False, description="on CISA's KEV catalog by the as-of date (today by default)")
    exploited: bool = Field(False, description="Microsoft marks it Exploited: Yes")
    publicly_disclosed: bool = False
    due: str | None = Field(None, description="YYYY-MM-DD: SLA days from release, or KEV's due date if earlier")
    overdue: bool = Field(False, description="still open after its due date")


class ExposureRow(BaseModel):
    """A server's exposure from its latest scan; counts are null when it cannot be assessed (``status`` says why)."""

    instance_id: str
    name: str
    product: str | None
    build: str | None
    scanned_at: str | None
    online: bool
    status: str | None
    open_critical: int | None
    open_important: int | None
    open_total: int | None
    fixed_total: int | None
    open_fix_offered: int | None
    open_fix_not_offered: int | None
    open_no_fix: int | None
    open_fix_unknown: int | None = None
    closing_kbs: list[ClosingKb] | None
    offered_kbs: list[str] | None
    overdue_critical: int | None = None
    overdue_important: int | None = None
    overdue_moderate: int | None = None
    overdue_low: int | None = None
    overdue_total: int | None = None
    open_exploited: int | None = Field(None, description="open CVEs Microsoft marks exploited or CISA lists (KEV)")
    cves: list[CveDecisionItem] | None = None


class ExposureTotals(BaseModel):
    servers: int
    servers_assessed: int
    open_critical: int
    open_important: int
    open_total: int
    overdue_critical: int = 0
    overdue_important: int = 0
    overdue_moderate: int = 0
    overdue_low: int = 0
    overdue_total: int = 0
    open_exploited: int = 0


class FleetExposure(BaseModel):
    items: list[ExposureRow]
    total: int
    totals: ExposureTotals = Field(description="over every server matched, not only this page")
    computed_at: str = Field(description="when this summary was assessed (it is kept until a scan or an import)")


class InstanceDetail(InstanceItem):
    exposure: ExposureRow


class StatusKb(BaseModel):
    kb: str
    state: str
    run_id: str
    reboot_required: bool
    reason: str
    updated_at: str


class InstanceStatus(BaseModel):
    instance_id: str
    total: int = Field(description="KBs that needed work")
    completed: int
    percentage: float | None
    not_counted: dict[str, int] = Field(description="KBs classified without work, by state")
    kbs: list[StatusKb]


class ScanResult(BaseModel):
    instance_id: str
    name: str
    result: str | None = Field(description="'scanned', or why the scan failed")
    build: str | None
    installed: int | None
    offered: list[str] | None
    pending_reboot: bool | None


class RebootRequested(BaseModel):
    instance_id: str
    status: str


# --- catalog -----------------------------------------------------------------------------------


class ProductItem(BaseModel):
    product_id: str
    product: str
    product_family: str | None
    cves: int
    kbs: int


class CveKb(BaseModel):
    kb: str
    subtype: str | None
    fixed_build: str | None
    supersedes: list[str]
    restart_required: str | None
    url: str | None
    download_url: str | None


class CatalogCve(BaseModel):
    cve: str
    title: str
    product: str
    product_id: str
    product_family: str | None
    month: str
    release_date: str | None
    severity: str | None
    impact: str | None
    cvss_base: float | None
    cvss_temporal: float | None
    cvss_vector: str | None
    cwe: list[str]
    exploited: bool | None
    publicly_disclosed: bool | None
    kev: bool = False
    due: str | None = None
    overdue: bool = Field(False, description="its deadline has passed on the as-of date (today by default)")
    kbs: list[CveKb]


class KbProduct(BaseModel):
    product_id: str
    product: str
    fixed_build: str | None


class KbCve(BaseModel):
    cve: str
    title: str
    severity: str | None


class KbDetail(BaseModel):
    kb: str
    month: str
    subtype: str | None
    restart_required: str | None
    url: str | None
    download_url: str | None
    products: list[KbProduct]
    cves: list[KbCve]
    supersedes: list[str]
    supersedes_chain: list[str]
    superseded_by: list[str]
    superseded_by_chain: list[str]


# --- tokens and audit --------------------------------------------------------------------------


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=200, description="1 to 64 ASCII letters, digits, '.', '_' or '-'")
    role: str = Field(max_length=200, description="viewer, operator or admin")


class TokenItem(BaseModel):
    name: str
    role: str
    created_at: str
    revoked_at: str | None
    last_used_at: str | None
    active: bool


class TokenCreated(BaseModel):
    name: str
    role: str
    token: str = Field(description="shown once: only its digest is stored")
    created_at: str


class AuditItem(BaseModel):
    at: str
    actor: str
    action: str
    target: str
    result: str
    detail: str

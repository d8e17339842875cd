"""``/kev``, ``/sla`` and ``/assess``: CISA's KEV catalog, the SLA policy and air-gapped assessment.

The same steps as ``autopatch kev …``, ``autopatch sla …`` and ``autopatch assess``. A KEV update is
a job like a catalog update (``GET /jobs/{id}`` follows it): on a thread of ``autopatch serve``; in
the AWS deployment (``AUTOPATCH_CATALOG_UPDATE_FUNCTION`` set, no threads outlive a request) it
runs within the request instead — the feed is one file of about a megabyte — and the job is
answered already finished.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from autopatch.admin_settings import effective_settings
from autopatch.api.deps import AuditTrail, StoreDep, audited, get_settings, require
from autopatch.api.errors import describe_failure
from autopatch.api.jobs import JobAccepted, JobBoard, run_job
from autopatch.api.models import CveDecisionItem, Limit, Offset, page
from autopatch.assessment import assess_facts
from autopatch.catalog.kev import fetch_kev, kev_status, list_kev
from autopatch.catalog.queries import parse_severities
from autopatch.domain.access import Role
from autopatch.domain.identifiers import parse_cve, parse_kb, parse_month
from autopatch.domain.sla import SLA_MAX_DAYS
from autopatch.engine.policy import parse_as_of
from autopatch.settings import Settings
from autopatch.sla_policy import set_sla_policy, sla_view
from autopatch.store.base import Store
from autopatch.wiring import open_store

router = APIRouter(tags=["deadlines"])
AsOf = Annotated[str | None, Query(max_length=40, description="YYYY-MM-DD (default: today)")]
Days = Annotated[int | None, Field(ge=1, le=SLA_MAX_DAYS, description="days from the CVE's release")]


class KevItem(BaseModel):
    cveID: str  # noqa: N815 — CISA's field names, as the feed spells them
    dateAdded: str  # noqa: N815
    dueDate: str  # noqa: N815
    vendorProject: str  # noqa: N815
    product: str
    vulnerabilityName: str  # noqa: N815
    shortDescription: str  # noqa: N815
    knownRansomwareCampaignUse: str  # noqa: N815


class KevCatalogInfoView(BaseModel):
    catalog_version: str
    date_released: str
    imported_at: str
    source: str
    count: int


class KevPage(BaseModel):
    catalog: KevCatalogInfoView | None = Field(description="the stored feed; null before any import")
    items: list[KevItem]
    total: int


class SlaView(BaseModel):
    critical: int
    important: int
    moderate: int
    low: int
    source: str = Field(description="stored (an admin set it) or default")


class SlaChange(BaseModel):
    """Days to change; the severities left out keep theirs."""

    model_config = ConfigDict(extra="forbid")

    critical: Days = None
    important: Days = None
    moderate: Days = None
    low: Days = None


class AssessRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product: str = Field(min_length=1, max_length=200, description="exact MSRC product name")
    build: str = Field(min_length=1, max_length=40, description="e.g. 10.0.20348.2227 (10.0.20348 is accepted)")
    installed: list[str] = Field(default_factory=list, max_length=2000, description="installed KBs")
    month: str | None = Field(None, max_length=20, description="only CVEs of this MSRC month, YYYY-MM")
    severity: str | None = Field(None, max_length=200, description="Critical,Important,…")
    as_of: str | None = Field(
        None, max_length=40, description="YYYY-MM-DD: later CVEs, KBs and KEV entries do not exist"
    )


class AssessResult(BaseModel):
    product: str
    build: str
    warnings: list[str]
    summary: dict[str, int]
    cves: list[CveDecisionItem]


@router.get("/kev", response_model=KevPage, dependencies=[Depends(require(Role.VIEWER))])
def kev_catalog(
    store: StoreDep,
    as_of: AsOf = None,
    vendor: Annotated[str | None, Query(max_length=100, description="vendor name contains, e.g. Microsoft")] = None,
    cve: Annotated[str | None, Query(max_length=40, description="one CVE id")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Stored KEV entries listed by ``as_of`` (all when omitted), newest addition first, and the feed's version."""
    rows = list_kev(store, parse_as_of(as_of), vendor, [parse_cve(cve)] if cve else None)
    return page(rows, limit, offset) | {"catalog": kev_status(store)}


def kev_update_work(settings: Settings) -> Any:
    """The KEV update as a job's work, on its own store connection."""

    def work(on_progress: Any) -> dict[str, Any]:
        store = open_store(settings)
        try:
            on_progress(0, 1, "KEV")
            summary = fetch_kev(store, effective_settings(settings, store)).as_dict()
            on_progress(1, 1, "KEV")
            return summary
        finally:
            store.close()

    return work


@router.post("/kev/update", status_code=202, response_model=JobAccepted)
def update_kev_job(
    request: Request, trail: Annotated[AuditTrail, Depends(audited("kev.update", Role.ADMIN))]
) -> dict[str, Any]:
    """Fetch CISA's KEV feed (admin) as a job; 409 while one runs. Follow it at ``GET /jobs/{id}``."""
    settings = get_settings(request)
    board: JobBoard = request.app.state.jobs
    if settings.catalog_update_function is None:
        job = board.start("kev.update", kev_update_work(settings))
    else:  # no thread outlives a Lambda request: do it now, the job is finished when answered
        job = board.create("kev.update")
        store: Store = open_store(settings)
        try:
            run_job(store, job.job_id, kev_update_work(settings), describe_failure)
        finally:
            store.close()
    trail.target = job.job_id
    return {"job_id": job.job_id}


@router.get("/sla", response_model=SlaView, dependencies=[Depends(require(Role.VIEWER))])
def get_sla(store: StoreDep) -> dict[str, Any]:
    """Days per severity from a CVE's release to its deadline (a KEV due date wins when earlier)."""
    return sla_view(store)


@router.put("/sla", response_model=SlaView)
def put_sla(
    body: SlaChange, store: StoreDep, trail: Annotated[AuditTrail, Depends(audited("sla.set", Role.ADMIN))]
) -> dict[str, Any]:
    """Change some severities' days (admin); 422 naming the field for a value outside 1-3650 or no change."""
    changes = body.model_dump()
    trail.target = "sla"
    trail.detail = ", ".join(f"{name}={value}" for name, value in changes.items() if value is not None)
    return set_sla_policy(store, changes)


@router.post("/assess", response_model=AssessResult, dependencies=[Depends(require(Role.VIEWER))])
def assess(body: AssessRequest, store: StoreDep) -> dict[str, Any]:
    """``autopatch assess`` for typed-in facts: every CVE decision with its reason and deadline (on ``as_of``)."""
    return assess_facts(
        store,
        body.product,
        body.build,
        [parse_kb(kb, "installed") for kb in body.installed],
        month=parse_month(body.month) if body.month is not None else None,
        severities=parse_severities([body.severity]) if body.severity is not None else None,
        as_of=parse_as_of(body.as_of),
    )

"""``POST /catalog/update`` (admin) as a background job, and ``GET /jobs/{id}`` to follow it.

The job runs the same step as ``autopatch catalog update`` (or, with ``AUTOPATCH_CATALOG_DIR``,
imports that folder as ``make demo`` does), on its own store connection: readers of the catalog
are not held up while it imports.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from autopatch.admin_settings import effective_settings
from autopatch.api.deps import AuditTrail, audited, get_settings, require
from autopatch.api.jobs import JobAccepted, JobBoard, JobView
from autopatch.catalog.ingest import ProgressCallback
from autopatch.catalog.update import refresh_catalog
from autopatch.domain.access import Role
from autopatch.wiring import open_store

router = APIRouter(tags=["jobs"])


def _board(request: Request) -> JobBoard:
    board: JobBoard = request.app.state.jobs
    return board


@router.post("/catalog/update", status_code=202, response_model=JobAccepted)
def update_catalog_job(
    request: Request, trail: Annotated[AuditTrail, Depends(audited("catalog.update", Role.ADMIN))]
) -> dict[str, Any]:
    """Update the catalog in the background (admin); 409 while an update runs."""
    settings = get_settings(request)

    def work(on_progress: ProgressCallback) -> dict[str, Any]:
        store = open_store(settings)
        try:
            return refresh_catalog(store, effective_settings(settings, store), date.today(), on_progress).as_dict()
        finally:
            store.close()

    job = _board(request).start("catalog.update", work)
    trail.target = job.job_id
    return {"job_id": job.job_id}


@router.get("/jobs/{job_id}", response_model=JobView, dependencies=[Depends(require(Role.VIEWER))])
def get_job(job_id: str, request: Request) -> dict[str, Any]:
    """A job's status, progress (documents done of total) and, once over, its summary or error."""
    return _board(request).get(job_id).view()

"""``POST /catalog/update`` (admin) as a background job, and ``GET /jobs/{id}`` to follow it.

The job runs the same step as ``autopatch catalog update`` (or, with ``AUTOPATCH_CATALOG_DIR``,
imports that folder as ``make demo`` does), on its own store connection: readers of the catalog
are not held up while it imports.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from autopatch.api.deps import AuditTrail, audited, get_settings, require
from autopatch.api.jobs import JobAccepted, JobBoard, JobView, catalog_update_work
from autopatch.domain.access import Role
from autopatch.errors import ExecutionError
from autopatch.settings import Settings

router = APIRouter(tags=["jobs"])


def _board(request: Request) -> JobBoard:
    board: JobBoard = request.app.state.jobs
    return board


@router.post("/catalog/update", status_code=202, response_model=JobAccepted)
def update_catalog_job(
    request: Request, trail: Annotated[AuditTrail, Depends(audited("catalog.update", Role.ADMIN))]
) -> dict[str, Any]:
    """Update the catalog in the background (admin); 409 while an update runs.

    ``autopatch serve`` does the work on a thread; the AWS deployment hands it to its catalog-update
    function (``AUTOPATCH_CATALOG_UPDATE_FUNCTION``), which writes the job's progress to the store.
    """
    settings = get_settings(request)
    board = _board(request)
    if settings.catalog_update_function is None:
        job = board.start("catalog.update", catalog_update_work(settings))
    else:
        job = board.create("catalog.update")
        trail.target = job.job_id  # audited with its job, also when the invocation is refused
        try:
            invoke_async(settings, settings.catalog_update_function, {"job_id": job.job_id})
        except Exception as exc:  # botocore's errors: the job must not stay "running" for a function never called
            board.fail(job.job_id, f"the catalog-update function could not be invoked: {type(exc).__name__}: {exc}")
            raise ExecutionError(f"the catalog-update function could not be invoked: {exc}") from exc
    trail.target = job.job_id
    return {"job_id": job.job_id}


def invoke_async(settings: Settings, function: str, payload: dict[str, Any]) -> None:
    import boto3  # type: ignore[import-untyped, unused-ignore]

    client = boto3.client("lambda", region_name=settings.aws_region)
    client.invoke(FunctionName=function, InvocationType="Event", Payload=json.dumps(payload).encode())


@router.get("/jobs/{job_id}", response_model=JobView, dependencies=[Depends(require(Role.VIEWER))])
def get_job(job_id: str, request: Request) -> dict[str, Any]:
    """A job's status, progress (documents done of total) and, once over, its summary or error."""
    return _board(request).get(job_id).view()

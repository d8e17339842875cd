"""Background jobs of the API (catalog updates), stored so that any process can follow them.

A job is a record in the store (``JobStore``) and some work that writes its progress there: on a
thread of ``autopatch serve``, or in another Lambda function in the AWS deployment, while the API
answers ``GET /jobs/{id}`` from the store. One job of a kind runs at a time: a second request is
refused with 409 naming it, unless the running one has gone silent (its process died; see
``domain/jobs.py``), which then reads as failed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel, Field

from autopatch.admin_settings import effective_settings
from autopatch.catalog.update import refresh_catalog
from autopatch.domain.jobs import FAILED, RUNNING, STALE_AFTER, SUCCEEDED, JobRecord, new_job_id, parse_job_id
from autopatch.errors import NotFoundError, StoreError
from autopatch.settings import Settings
from autopatch.store.base import JobStore, Store
from autopatch.wiring import open_store

# Work receives a progress callback (done, total, label) and returns its summary.
JobWork = Callable[[Callable[[int, int, str], None]], dict[str, Any]]


def _now() -> datetime:
    return datetime.now(UTC)


def run_job(store: JobStore, job_id: str, work: JobWork, describe_error: Callable[[BaseException], str]) -> None:
    """Do the work of a stored job, writing its progress and its end (a summary, or one line of error)."""

    def progress(done: int, total: int, _label: str = "") -> None:
        store.update_job(job_id, _now(), done=done, total=total)

    try:
        summary = work(progress)
    except Exception as exc:  # recorded on the job: its reader gets one line, never a traceback
        store.update_job(job_id, _now(), status=FAILED, error=describe_error(exc))
        return
    store.update_job(job_id, _now(), status=SUCCEEDED, summary=summary)


def catalog_update_work(settings: Settings, store: Store | None = None) -> JobWork:
    """The catalog update as a job's work: on its own store connection (a thread of ``serve``), or on
    ``store`` (the AWS catalog-update function's, kept open for the container's next invocation)."""

    def work(on_progress: Callable[[int, int, str], None]) -> dict[str, Any]:
        used = store if store is not None else open_store(settings)
        try:
            return refresh_catalog(used, effective_settings(settings, used), date.today(), on_progress).as_dict()
        finally:
            if store is None:
                used.close()

    return work


class JobBoard:
    """Starts jobs (stored first, then launched) and reads them back from the store."""

    def __init__(self, open_store: Callable[[], Store], describe_error: Callable[[BaseException], str]) -> None:
        self._open_store = open_store
        self._describe_error = describe_error

    def create(self, kind: str) -> JobRecord:
        """A new running job of ``kind``, stored; ``ConflictError`` while another of the kind runs."""
        now = _now()
        job = JobRecord(new_job_id(), kind, RUNNING, now, now)
        store = self._open_store()
        try:
            store.start_job(job, stale_before=now - STALE_AFTER)
        finally:
            store.close()
        return job

    def start(self, kind: str, work: JobWork) -> JobRecord:
        """Create the job and do ``work`` on a thread of this process, with its own store connection."""
        job = self.create(kind)
        threading.Thread(target=self._run, args=(job.job_id, work), name=f"job-{job.job_id}", daemon=True).start()
        return job

    def fail(self, job_id: str, reason: str) -> None:
        """A job whose work could not even be launched (the catalog-update function refused the invocation)."""
        store = self._open_store()
        try:
            store.update_job(job_id, _now(), status=FAILED, error=reason)
        finally:
            store.close()

    def get(self, job_id: str) -> JobRecord:
        store = self._open_store()
        try:
            job = store.get_job(parse_job_id(job_id))
        finally:
            store.close()
        if job is None:
            raise NotFoundError(f"job_id: {job_id!r} is not a known job")
        return job.as_of(_now())

    def _run(self, job_id: str, work: JobWork) -> None:
        store = self._open_store()
        try:
            run_job(store, job_id, work, self._describe_error)
        except StoreError:  # the job cannot even record its end: it goes silent and reads as failed later
            pass
        finally:
            store.close()


class JobAccepted(BaseModel):
    job_id: str


class JobProgress(BaseModel):
    done: int
    total: int


class JobView(BaseModel):
    job_id: str
    kind: str
    status: str = Field(description="running, succeeded or failed")
    progress: JobProgress
    summary: dict[str, Any] | None = Field(description="the import summary, as `catalog update --format json`")
    error: str | None
    started_at: str
    updated_at: str = Field(description="the last progress written: a running job silent for 10 min has failed")

"""Background jobs of the server (catalog updates), kept in this process's memory.

A job is a thread with a progress counter and, once done, a summary or one line of error. Jobs
are not stored: a restart forgets them, which costs nothing because a catalog update is
idempotent (unchanged documents are skipped) and can simply be started again. One job of a kind
runs at a time: a second request while one runs is refused with 409 naming it.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from autopatch.errors import ConflictError, NotFoundError, ValidationError

JOB_ID = re.compile(r"j-[0-9a-f]{12}", re.ASCII)
# Work receives a progress callback (done, total, label) and returns its summary.
JobWork = Callable[[Callable[[int, int, str], None]], dict[str, Any]]


@dataclass
class Job:
    job_id: str
    kind: str
    status: str = "running"  # running | succeeded | failed
    done: int = 0
    total: int = 0
    summary: dict[str, Any] | None = None
    error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def progress(self, done: int, total: int, _label: str = "") -> None:
        with self.lock:
            self.done, self.total = done, total

    def view(self) -> dict[str, Any]:
        with self.lock:
            return {
                "job_id": self.job_id,
                "kind": self.kind,
                "status": self.status,
                "progress": {"done": self.done, "total": self.total},
                "summary": self.summary,
                "error": self.error,
            }


def parse_job_id(value: str, field_name: str = "job_id") -> str:
    if not JOB_ID.fullmatch(value):
        raise ValidationError(field_name, value, "a job id is j- and 12 hex digits, e.g. j-0123456789ab")
    return value


class JobBoard:
    """The jobs this server process started, newest kept in memory (see the module docstring)."""

    def __init__(self, describe_error: Callable[[BaseException], str]) -> None:
        self._describe_error = describe_error
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, kind: str, work: JobWork) -> Job:
        """Run ``work`` on a thread as a new job; ``ConflictError`` while a job of this kind runs."""
        with self._lock:
            running = next((j for j in self._jobs.values() if j.kind == kind and j.status == "running"), None)
            if running is not None:
                raise ConflictError(
                    f"job: {kind} job {running.job_id} is running; follow it at /api/v1/jobs/{running.job_id}"
                )
            job = Job(f"j-{uuid.uuid4().hex[:12]}", kind)
            self._jobs[job.job_id] = job
        threading.Thread(target=self._run, args=(job, work), name=f"job-{job.job_id}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(parse_job_id(job_id))
        if job is None:
            raise NotFoundError(f"job_id: {job_id!r} is not a job of this server (jobs are forgotten at restart)")
        return job

    def _run(self, job: Job, work: JobWork) -> None:
        try:
            summary = work(job.progress)
        except Exception as exc:  # recorded on the job: its reader gets one line, never a traceback
            with job.lock:
                job.status, job.error = "failed", self._describe_error(exc)
            return
        with job.lock:
            job.status, job.summary = "succeeded", summary


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

"""Background jobs (catalog updates): what a client follows at ``/api/v1/jobs/{id}``.

Jobs are stored, not kept in a process's memory: the API behind API Gateway answers from one
Lambda container while the update runs in another, and ``autopatch serve`` may restart. A job
proves it is alive by its ``updated_at`` (every progress step writes it); one silent for
``STALE_AFTER`` is dead (its process is gone), reads as failed, and no longer blocks a new one.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from autopatch.errors import ValidationError

JOB_ID = re.compile(r"j-[0-9a-f]{12}", re.ASCII)
STALE_AFTER = timedelta(minutes=10)  # longer than one document's download and import
RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"


def new_job_id() -> str:
    return f"j-{uuid.uuid4().hex[:12]}"


def parse_job_id(value: str, field_name: str = "job_id") -> str:
    if not JOB_ID.fullmatch(value):
        raise ValidationError(field_name, value, "a job id is j- and 12 hex digits, e.g. j-0123456789ab")
    return value


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    kind: str
    status: str
    started_at: datetime
    updated_at: datetime
    done: int = 0
    total: int = 0
    summary: dict[str, Any] | None = None
    error: str | None = None

    def as_of(self, now: datetime) -> JobRecord:
        """The job as a reader should see it at ``now``: a running job silent too long has failed."""
        if self.status == RUNNING and now - self.updated_at > STALE_AFTER:
            quiet = int((now - self.updated_at).total_seconds() // 60)
            return replace(self, status=FAILED, error=f"no progress for {quiet} min: the process running it stopped")
        return self

    def view(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "kind": self.kind,
            "status": self.status,
            "progress": {"done": self.done, "total": self.total},
            "summary": self.summary,
            "error": self.error,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "updated_at": self.updated_at.isoformat(timespec="seconds"),
        }

"""SQLite table of background jobs (the ``JobStore`` port): one running job per kind, checked atomically."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from autopatch.domain.jobs import RUNNING, JobRecord
from autopatch.errors import ConflictError, NotFoundError, ValidationError

JOBS_MIGRATION = """
    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        done INTEGER NOT NULL DEFAULT 0,
        total INTEGER NOT NULL DEFAULT 0,
        summary TEXT,
        error TEXT
    ) WITHOUT ROWID;
    CREATE INDEX jobs_by_kind ON jobs (kind, status)
"""
_COLUMNS = "job_id, kind, status, started_at, updated_at, done, total, summary, error"
_UPDATABLE = {"status", "done", "total", "summary", "error"}


def _job(row: tuple[Any, ...]) -> JobRecord:
    job_id, kind, status, started_at, updated_at, done, total, summary, error = row
    return JobRecord(
        job_id=job_id,
        kind=kind,
        status=status,
        started_at=datetime.fromisoformat(started_at),
        updated_at=datetime.fromisoformat(updated_at),
        done=int(done),
        total=int(total),
        summary=json.loads(summary) if summary is not None else None,
        error=error,
    )


class JobTables:
    """Mixed into ``SqliteStore``: needs ``self._transaction``/``self._query``."""

    _transaction: Any  # context manager provided by SqliteStore
    _query: Any  # provided by SqliteStore

    def start_job(self, job: JobRecord, stale_before: datetime) -> None:
        with self._transaction() as db:
            running = db.execute(
                "SELECT job_id FROM jobs WHERE kind = ? AND status = ? AND updated_at >= ?",
                (job.kind, RUNNING, stale_before.isoformat()),
            ).fetchone()
            if running is not None:
                raise ConflictError(
                    f"job: {job.kind} job {running[0]} is running; follow it at /api/v1/jobs/{running[0]}"
                )
            db.execute(
                f"INSERT INTO jobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.job_id,
                    job.kind,
                    job.status,
                    job.started_at.isoformat(),
                    job.updated_at.isoformat(),
                    job.done,
                    job.total,
                    json.dumps(job.summary) if job.summary is not None else None,
                    job.error,
                ),
            )

    def update_job(self, job_id: str, at: datetime, **fields: Any) -> None:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValidationError("fields", sorted(unknown), f"a job update sets only {sorted(_UPDATABLE)}")
        values = {k: json.dumps(v) if k == "summary" and v is not None else v for k, v in fields.items()}
        assignments = "".join(f"{column} = ?, " for column in values)
        with self._transaction() as db:
            changed = db.execute(
                f"UPDATE jobs SET {assignments}updated_at = ? WHERE job_id = ?",
                (*values.values(), at.isoformat(), job_id),
            ).rowcount
        if not changed:
            raise NotFoundError(f"job_id: {job_id!r} is not a known job")

    def get_job(self, job_id: str) -> JobRecord | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,))
        return _job(rows[0]) if rows else None

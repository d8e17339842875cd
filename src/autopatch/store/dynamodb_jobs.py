"""DynamoDB items of background jobs (the ``JobStore`` port): one running job per kind, checked atomically.

Items (state table)::

    JOB#<job id>     / JOB       the job: status, progress, summary, error, ``updated_at``
    JOBKIND#<kind>   / RUNNING   the last job started of this kind

SQLite checks "is a job of this kind running and alive?" and inserts the new one in one
transaction. Here one TransactWriteItems does the same: it puts the new job (condition: new id),
replaces the kind's item (condition: it still names the job we read), and checks that job (a
``ConditionCheck``: finished, or silent since before ``stale_before``). Two processes starting a
job of one kind at once: one condition fails, and that one gets the ``ConflictError``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from autopatch.domain.jobs import RUNNING, JobRecord
from autopatch.errors import ConflictError, NotFoundError, StoreError, ValidationError
from autopatch.store.dynamodb_io import (
    ConditionFailed,
    DynamoIO,
    Item,
    TransactionCancelled,
    check_action,
    pk_sk,
    put_action,
)
from autopatch.store.dynamodb_run_updates import assignments

_UPDATABLE = frozenset({"status", "done", "total", "summary", "error"})
_TRIES = 10


def _job_key(job_id: str) -> dict[str, str]:
    return pk_sk(f"JOB#{job_id}", "JOB")


def _job(item: Item) -> JobRecord:
    summary = item.get("summary")
    return JobRecord(
        job_id=item["job_id"],
        kind=item["kind"],
        status=item["status"],
        started_at=datetime.fromisoformat(item["started_at"]),
        updated_at=datetime.fromisoformat(item["updated_at"]),
        done=int(item.get("done", 0)),
        total=int(item.get("total", 0)),
        summary=json.loads(summary) if summary is not None else None,
        error=item.get("error"),
    )


class JobItems:
    """Mixed into ``DynamoStore``: needs ``self._io`` and ``self.state_table``."""

    _io: DynamoIO
    state_table: str

    def start_job(self, job: JobRecord, stale_before: datetime) -> None:
        """Store a new running job; ``ConflictError`` naming the running one of the same kind."""
        kind_key = pk_sk(f"JOBKIND#{job.kind}", "RUNNING")
        item = _job_key(job.job_id) | {
            "job_id": job.job_id,
            "kind": job.kind,
            "status": job.status,
            "started_at": job.started_at.isoformat(),
            "updated_at": job.updated_at.isoformat(),
            "done": job.done,
            "total": job.total,
            "summary": json.dumps(job.summary) if job.summary is not None else None,
            "error": job.error,
        }
        for _ in range(_TRIES):
            last = self._io.get(self.state_table, kind_key)
            actions = [put_action(self.state_table, item, "attribute_not_exists(#pk)")]
            latest = kind_key | {"job_id": job.job_id}
            if last is None:
                actions.append(put_action(self.state_table, latest, "attribute_not_exists(#pk)"))
            else:
                seen = last["job_id"]
                actions.append(put_action(self.state_table, latest, "#job_id = :seen", {":seen": seen}))
                actions.append(
                    check_action(
                        self.state_table,
                        _job_key(seen),
                        "attribute_not_exists(#pk) OR #status <> :running OR #updated_at < :stale",
                        {":running": RUNNING, ":stale": stale_before.isoformat()},
                    )
                )
            try:
                self._io.transact(actions)
                return
            except TransactionCancelled as exc:
                if 0 in exc.failed():
                    raise StoreError(f"job {job.job_id} already exists") from exc
                if 2 in exc.failed():  # the job we read is running and alive
                    seen = last["job_id"] if last else ""
                    raise ConflictError(
                        f"job: {job.kind} job {seen} is running; follow it at /api/v1/jobs/{seen}"
                    ) from None
                # another job of this kind started meanwhile: judge that one
        raise StoreError(f"job {job.job_id}: the {job.kind} jobs kept changing while it started")

    def update_job(self, job_id: str, at: datetime, **fields: Any) -> None:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValidationError("fields", sorted(unknown), f"a job update sets only {sorted(_UPDATABLE)}")
        values = {k: json.dumps(v) if k == "summary" and v is not None else v for k, v in fields.items()}
        update, bound = assignments(values | {"updated_at": at.isoformat()})
        try:
            self._io.update(self.state_table, _job_key(job_id), update, bound, "attribute_exists(#pk)")
        except ConditionFailed:
            raise NotFoundError(f"job_id: {job_id!r} is not a known job") from None

    def get_job(self, job_id: str) -> JobRecord | None:
        item = self._io.get(self.state_table, _job_key(job_id))
        return _job(item) if item else None

"""DynamoDB items of the EBS snapshots a run took of its servers (the ``SnapshotStore`` port).

Items (state table), in the run's own item collection::

    RUN#<run> / SNAPSHOT#<instance>     the run server's snapshot record: token, phase, volumes (JSON)…

``begin_snapshot`` is one transaction: a ``ConditionCheck`` that the run server exists and a Put on
the condition that no record does. When the record exists the Put's condition fails and the stored
record is read back (strongly consistent), so two drivers of one run server get the same ask.
"""

from __future__ import annotations

import json
from typing import Any

from autopatch.domain.snapshots import RunSnapshot, SnapshotPhase, volumes_from_data
from autopatch.errors import NotFoundError, StoreError
from autopatch.store.dynamodb_io import (
    ConditionFailed,
    DynamoIO,
    Item,
    TransactionCancelled,
    check_action,
    pk_sk,
    put_action,
)
from autopatch.store.dynamodb_run_reads import run_pk, server_key
from autopatch.store.dynamodb_run_updates import assignments
from autopatch.store.snapshots_sqlite import snapshot_column_values

SNAPSHOT_PREFIX = "SNAPSHOT#"


def snapshot_key(run_id: str, instance_id: str) -> dict[str, str]:
    return pk_sk(run_pk(run_id), f"{SNAPSHOT_PREFIX}{instance_id}")


def _snapshot(item: Item) -> RunSnapshot:
    return RunSnapshot(
        run_id=item["run_id"],
        instance_id=item["instance_id"],
        token=item["token"],
        phase=SnapshotPhase(item["phase"]),
        requested_at=item["requested_at"],
        asked_at=item["asked_at"],
        volumes=volumes_from_data(json.loads(item.get("volumes") or "[]")),
        started_at=item.get("started_at"),
        reason=item.get("reason", ""),
        tries=int(item.get("tries", 0)),
        pruned_at=item.get("pruned_at"),
    )


class SnapshotItems:
    """Mixed into ``DynamoStore``: needs ``self._io`` and ``self.state_table``."""

    _io: DynamoIO
    state_table: str

    def begin_snapshot(self, run_id: str, instance_id: str, token: str, at: str) -> RunSnapshot:
        key = snapshot_key(run_id, instance_id)
        record = key | {
            "run_id": run_id,
            "instance_id": instance_id,
            "token": token,
            "phase": str(SnapshotPhase.ASKING),
            "requested_at": at,
            "asked_at": at,
            "volumes": "[]",
            "reason": "",
            "tries": 0,
        }
        try:
            self._io.transact(
                [
                    check_action(self.state_table, server_key(run_id, instance_id), "attribute_exists(#pk)"),
                    put_action(self.state_table, record, "attribute_not_exists(#pk)"),
                ]
            )
        except TransactionCancelled as exc:
            if 0 in exc.failed():
                raise NotFoundError(f"instance_id: {instance_id} is not a server of run {run_id}") from exc
        stored = self._io.get(self.state_table, key)
        if stored is None:  # pragma: no cover - written above or by the driver that won
            raise StoreError(f"the snapshot record of {instance_id} in run {run_id} vanished")
        return _snapshot(stored)

    def update_snapshot(self, run_id: str, instance_id: str, **fields: Any) -> None:
        values = snapshot_column_values(fields)
        if not values:
            return
        update, bound = assignments(values)
        try:
            self._io.update(self.state_table, snapshot_key(run_id, instance_id), update, bound, "attribute_exists(#pk)")
        except ConditionFailed as exc:
            raise NotFoundError(f"instance_id: run {run_id} has no snapshot record of {instance_id}") from exc

    def run_snapshot(self, run_id: str, instance_id: str) -> RunSnapshot | None:
        item = self._io.get(self.state_table, snapshot_key(run_id, instance_id))
        return _snapshot(item) if item else None

    def run_snapshots(self, run_id: str) -> list[RunSnapshot]:
        records = [_snapshot(item) for item in self._io.query(self.state_table, run_pk(run_id), SNAPSHOT_PREFIX)]
        return sorted(records, key=lambda record: record.instance_id)

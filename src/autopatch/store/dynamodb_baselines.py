"""DynamoDB items of patch baselines (the ``BaselineStore`` port).

Items (state table)::

    BASELINES / <name>        a baseline, whole, as JSON (one partition: every plan lists them with one Query)

Creating is a PutItem conditional on the item not existing, so two admins creating the same name
get one baseline and one ``ConflictError``; replacing is conditional on it existing and keeps its
creation time.
"""

from __future__ import annotations

import json
from dataclasses import replace

from autopatch.domain.baselines import Baseline, baseline_from_record, baseline_record
from autopatch.errors import ConflictError, NotFoundError
from autopatch.store.base import now
from autopatch.store.dynamodb_io import PK, SK, ConditionFailed, DynamoIO, Item, pk_sk

BASELINES = "BASELINES"


def _item(baseline: Baseline) -> Item:
    body = json.dumps(baseline_record(baseline), sort_keys=True)
    return {
        PK: BASELINES,
        SK: baseline.name,
        "body": body,
        "created_at": baseline.created_at,
        "updated_at": baseline.updated_at,
    }


def _baseline(item: Item) -> Baseline:
    stored = baseline_from_record(json.loads(item["body"]))
    return replace(stored, created_at=item["created_at"], updated_at=item["updated_at"])


class BaselineItems:
    """Mixed into ``DynamoStore``: needs ``self._io`` and ``self.state_table``."""

    _io: DynamoIO
    state_table: str

    def create_baseline(self, baseline: Baseline) -> Baseline:
        stamp = now()
        stored = replace(baseline, created_at=stamp, updated_at=stamp)
        try:
            self._io.put(self.state_table, _item(stored), "attribute_not_exists(#pk)")
        except ConditionFailed:
            raise ConflictError(f"name: a baseline named {baseline.name!r} exists; update or delete it first") from None
        return stored

    def replace_baseline(self, baseline: Baseline) -> Baseline:
        current = self.get_baseline(baseline.name)
        missing = f"baseline: {baseline.name!r} is not a known baseline (see `autopatch baseline list`)"
        if current is None:
            raise NotFoundError(missing)
        stored = replace(baseline, created_at=current.created_at, updated_at=now())
        try:
            self._io.put(self.state_table, _item(stored), "attribute_exists(#pk)")
        except ConditionFailed:  # deleted meanwhile
            raise NotFoundError(missing) from None
        return stored

    def get_baseline(self, name: str) -> Baseline | None:
        item = self._io.get(self.state_table, pk_sk(BASELINES, name))
        return _baseline(item) if item else None

    def list_baselines(self) -> list[Baseline]:
        return sorted(map(_baseline, self._io.query(self.state_table, BASELINES)), key=lambda baseline: baseline.name)

    def delete_baseline(self, name: str) -> bool:
        return bool(self._io.delete(self.state_table, pk_sk(BASELINES, name)))

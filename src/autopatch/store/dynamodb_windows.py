"""DynamoDB items of maintenance windows (the ``WindowStore`` port).

Items (state table)::

    WINDOWS / <name>                         a window's definition (one partition: listed by one Query)
    OCCURRENCE#<window> / <starts_at>        an occurrence a scheduler claimed, and the run it started

A claim is a PutItem conditional on the item not existing: of two schedulers claiming the same
occurrence, one condition fails. Taking over the claim of a dead scheduler that started no run
is an UpdateItem conditional on that owner still being recorded and no run named yet. Reopening
a paused run is one UpdateItem on the run's item, conditional on its status still being Paused.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

from autopatch.domain.patching import RunStatus
from autopatch.domain.windows import MaintenanceWindow, OccurrenceRecord
from autopatch.errors import ConflictError, NotFoundError
from autopatch.store.base import now
from autopatch.store.dynamodb_io import PK, SK, ConditionFailed, DynamoIO, Item, pk_sk
from autopatch.store.dynamodb_run_reads import run_key

WINDOWS = "WINDOWS"


def _occurrence_pk(window: str) -> str:
    return f"OCCURRENCE#{window}"


def _window_item(window: MaintenanceWindow) -> Item:
    return {
        PK: WINDOWS,
        SK: window.name,
        "name": window.name,
        "cron": window.cron,
        "duration_minutes": int(window.duration.total_seconds() // 60),
        "cutoff_minutes": int(window.cutoff.total_seconds() // 60),
        "group_key": window.group_key,
        "group_value": window.group_value,
        "timezone": window.timezone,
        "baseline": window.baseline,
        "created_at": window.created_at,
        "updated_at": window.updated_at,
    }


def _window(item: Item) -> MaintenanceWindow:
    return MaintenanceWindow(
        name=item["name"],
        cron=item["cron"],
        duration=timedelta(minutes=int(item["duration_minutes"])),
        cutoff=timedelta(minutes=int(item["cutoff_minutes"])),
        group_key=item["group_key"],
        group_value=item["group_value"],
        timezone=item["timezone"],
        baseline=item.get("baseline"),
        created_at=item["created_at"],
        updated_at=item["updated_at"],
    )


def _occurrence(item: Item) -> OccurrenceRecord:
    return OccurrenceRecord(
        window=item["window"],
        starts_at=item[SK],
        claimed_by=item["claimed_by"],
        claimed_at=item["claimed_at"],
        run_id=item.get("run_id"),
        note=item.get("note", ""),
    )


class WindowItems:
    """Mixed into ``DynamoStore``: needs ``self._io`` and ``self.state_table``."""

    _io: DynamoIO
    state_table: str

    def create_window(self, window: MaintenanceWindow) -> MaintenanceWindow:
        stamp = now()
        stored = replace(window, created_at=stamp, updated_at=stamp)
        try:
            self._io.put(self.state_table, _window_item(stored), "attribute_not_exists(#pk)")
        except ConditionFailed:
            raise ConflictError(f"name: a window named {window.name!r} exists; update or delete it first") from None
        return stored

    def replace_window(self, window: MaintenanceWindow) -> MaintenanceWindow:
        current = self.get_window(window.name)
        if current is None:
            raise NotFoundError(f"window: {window.name!r} is not a known window (see `autopatch window list`)")
        stored = replace(window, created_at=current.created_at, updated_at=now())
        try:
            self._io.put(self.state_table, _window_item(stored), "attribute_exists(#pk)")
        except ConditionFailed:  # deleted meanwhile
            raise NotFoundError(f"window: {window.name!r} is not a known window") from None
        return stored

    def get_window(self, name: str) -> MaintenanceWindow | None:
        item = self._io.get(self.state_table, pk_sk(WINDOWS, name))
        return _window(item) if item else None

    def list_windows(self) -> list[MaintenanceWindow]:
        return sorted(map(_window, self._io.query(self.state_table, WINDOWS)), key=lambda window: window.name)

    def delete_window(self, name: str) -> bool:
        claimed = [pk_sk(item[PK], item[SK]) for item in self._io.query(self.state_table, _occurrence_pk(name))]
        self._io.batch_write(self.state_table, deletes=claimed)
        return bool(self._io.delete(self.state_table, pk_sk(WINDOWS, name)))

    def claim_occurrence(self, window: str, starts_at: str, owner: str, claimed_at: str, stale_owner: str = "") -> bool:
        item = pk_sk(_occurrence_pk(window), starts_at) | {
            "window": window,
            "claimed_by": owner,
            "claimed_at": claimed_at,
        }
        try:
            self._io.put(self.state_table, item, "attribute_not_exists(#pk)")
            return True
        except ConditionFailed:
            if not stale_owner:
                return False
        try:
            self._io.update(
                self.state_table,
                pk_sk(_occurrence_pk(window), starts_at),
                "SET #claimed_by = :owner, #claimed_at = :at REMOVE #note",
                {":owner": owner, ":at": claimed_at, ":stale": stale_owner},
                "#claimed_by = :stale AND attribute_not_exists(#run_id)",
            )
        except ConditionFailed:
            return False
        return True

    def record_occurrence(self, window: str, starts_at: str, run_id: str | None, note: str = "") -> None:
        fields: dict[str, Any] = {":note": note[:500]}
        update = "SET #note = :note"
        if run_id is None:
            update += " REMOVE #run_id"
        else:
            update += ", #run_id = :run"
            fields[":run"] = run_id
        try:
            self._io.update(
                self.state_table, pk_sk(_occurrence_pk(window), starts_at), update, fields, "attribute_exists(#pk)"
            )
        except ConditionFailed:  # its window was deleted meanwhile: nothing to record it on (as SQLite's UPDATE)
            return

    def window_occurrences(self, window: str, limit: int = 20) -> list[OccurrenceRecord]:
        if limit <= 0:
            return []
        return [
            _occurrence(item)
            for item in self._io.query(self.state_table, _occurrence_pk(window), forward=False, limit=limit)
        ]

    def reopen_paused_run(self, run_id: str, options: dict[str, object]) -> bool:
        try:
            self._io.update(
                self.state_table,
                run_key(run_id),
                "SET #status = :running, #reason = :empty, #options = :options",
                {
                    ":running": str(RunStatus.RUNNING),
                    ":empty": "",
                    ":options": json.dumps(options),
                    ":paused": str(RunStatus.PAUSED),
                },
                "#status = :paused AND attribute_not_exists(#aborted)",
            )
        except ConditionFailed:
            return False
        return True

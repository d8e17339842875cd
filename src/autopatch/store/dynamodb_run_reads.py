"""DynamoDB items of patch runs, and every read of them (``RunStore``'s queries).

One run is one item collection (partition ``RUN#<run id>``) of the state table::

    RUN#<run> / RUN                              the run (status, options, owner and lease)
    RUN#<run> / SERVER#<instance>                a server of the run
    RUN#<run> / ITEM#<instance>#<kb>             one KB on one server: its state and the number
                                                 (``seq``) of its last transition
    RUN#<run> / TRANS#<instance>#<kb>#<seq>      every state change, kept (no TTL: defect 3)
    RUN#<run> / ATTEMPT#<instance>#<kb>#<n>      every install attempt
    RUN#<run> / NOTE#<ns>#<nonce>, EXPOSURE#<phase>   notifications, exposure snapshots
    RUNS       / <created_at>#<run>              every run, for newest-first pages
    UNFINISHED / <created_at>#<run>              runs not yet terminal, oldest first
    COUNTERS   / runs                            how many runs exist (``count_runs``)
    COUNTERS   / run-items                       moves after every change of a run's KBs (``runs_revision``)

Everything the engine reads back after writing it is read from the base table with strongly
consistent reads. The status view (``items_of_instance``) reads the ``by_instance`` index — the
original's ``PATCH#<instance>`` / ``KB#<kb>`` keys, with the run's creation time and id after the
KB — which is eventually consistent: it may lag a write by a moment, never lose one.

Sort keys put related items together; results are still sorted in code, so the order is exactly
the SQLite adapter's whatever characters the ids contain.
"""

from __future__ import annotations

import json
from typing import Any

from autopatch.domain.patching import UNFINISHED_RUN_STATUSES, KbState, RunStatus
from autopatch.domain.runs import Attempt, RunItem, RunRecord, RunServer, Transition, start_order
from autopatch.errors import NotFoundError
from autopatch.store.dynamodb_fleet import COUNTERS, read_counter
from autopatch.store.dynamodb_io import PK, SK, DynamoIO, Item, pk_sk

RUNS = "RUNS"
UNFINISHED = "UNFINISHED"
RUN_COUNTER = "runs"
# Moves after every change of a run's KBs (see ``RunStore.runs_revision``): bumped after the write,
# outside its transaction, so that a busy run's transitions do not all contend for one item.
ITEMS_COUNTER = "run-items"
RUN_SK = "RUN"
BY_INSTANCE = "by_instance"


def run_pk(run_id: str) -> str:
    return f"RUN#{run_id}"


def run_key(run_id: str) -> dict[str, str]:
    return pk_sk(run_pk(run_id), RUN_SK)


def server_key(run_id: str, instance_id: str) -> dict[str, str]:
    return pk_sk(run_pk(run_id), f"SERVER#{instance_id}")


def item_key(run_id: str, instance_id: str, kb: str) -> dict[str, str]:
    return pk_sk(run_pk(run_id), f"ITEM#{instance_id}#{kb}")


def index_sk(created_at: str, run_id: str) -> str:
    return f"{created_at}#{run_id}"


def run_fields(run: RunRecord) -> dict[str, Any]:
    return {
        PK: run_pk(run.run_id),
        SK: RUN_SK,
        "run_id": run.run_id,
        "kind": run.kind,
        "status": str(run.status),
        "created_at": run.created_at,
        "options": json.dumps(run.options),
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "reason": run.reason,
        "owner": run.owner,
        "lease_expires": run.lease_expires,
        "planned": run.planned,
    }


def server_fields(server: RunServer) -> dict[str, Any]:
    fields: dict[str, Any] = {name: getattr(server, name) for name in RunServer.__dataclass_fields__}
    return fields | server_key(server.run_id, server.instance_id)


def item_fields(item: RunItem, created_at: str, stamp: str) -> dict[str, Any]:
    """A KB item; ``patch``/``patch_key`` are the ``by_instance`` index's keys (the status view)."""
    return item_key(item.run_id, item.instance_id, item.kb) | {
        "run_id": item.run_id,
        "instance_id": item.instance_id,
        "kb": item.kb,
        "position": item.position,
        "state": str(item.state),
        "subtype": item.subtype,
        "fixed_build": item.fixed_build,
        "restart_required": item.restart_required,
        "reboot_required": False,
        "reason": item.reason,
        "updated_at": stamp,
        "seq": 0,
        "created_at": created_at,
        "patch": f"PATCH#{item.instance_id}",
        "patch_key": f"KB#{item.kb}#{created_at}#{item.run_id}",
    }


def transition_fields(
    run_id: str, instance_id: str, kb: str, seq: int, old: KbState | None, new: KbState, at: str, note: str
) -> dict[str, Any]:
    return pk_sk(run_pk(run_id), f"TRANS#{instance_id}#{kb}#{seq:06d}") | {
        "run_id": run_id,
        "instance_id": instance_id,
        "kb": kb,
        "seq": seq,
        "from_state": str(old) if old else None,
        "to_state": str(new),
        "at": at,
        "note": note,
    }


def run_record(item: Item) -> RunRecord:
    lease = item.get("lease_expires")
    return RunRecord(
        item["run_id"],
        item["kind"],
        RunStatus(item["status"]),
        item["created_at"],
        json.loads(item["options"]),
        item.get("started_at"),
        item.get("finished_at"),
        item.get("reason", ""),
        item.get("owner"),
        None if lease is None else float(lease),
        bool(item.get("planned", True)),
    )


def run_server(item: Item) -> RunServer:
    values: dict[str, Any] = {name: item.get(name) for name in RunServer.__dataclass_fields__}
    values["reboots"] = int(item.get("reboots", 0))
    values["reason"] = item.get("reason", "")
    values["open_exploited"] = int(item.get("open_exploited") or 0)
    return RunServer(**values)


def run_item(item: Item) -> RunItem:
    return RunItem(
        item["run_id"],
        item["instance_id"],
        item["kb"],
        int(item["position"]),
        KbState(item["state"]),
        item.get("subtype"),
        item.get("fixed_build"),
        item.get("restart_required"),
        bool(item.get("reboot_required", False)),
        item.get("reason", ""),
        item.get("updated_at", ""),
    )


def attempt_record(item: Item) -> Attempt:
    values: dict[str, Any] = {name: item.get(name) for name in Attempt.__dataclass_fields__}
    values["attempt"] = int(item["attempt"])
    values["output_tail"] = item.get("output_tail", "")
    return Attempt(**values)


def is_live_run(item: Item | None) -> bool:
    """A stored run: not absent, and not the tombstone of a creation that was fenced off."""
    return item is not None and not item.get("aborted")


class RunReads:
    """Mixed into ``DynamoStore``: the reads of ``RunStore``."""

    _io: DynamoIO
    state_table: str

    def _run_item(self, run_id: str) -> Item:
        item = self._io.get(self.state_table, run_key(run_id))
        if item is None or not is_live_run(item):
            raise NotFoundError(f"run: {run_id!r} is not a known run (see `autopatch runs`)")
        return item

    def get_run(self, run_id: str) -> RunRecord:
        return run_record(self._run_item(run_id))

    def _runs_in_order(self, entries: list[Item]) -> list[RunRecord]:
        found = {i["run_id"]: i for i in self._io.batch_get(self.state_table, [run_key(e["run_id"]) for e in entries])}
        return [run_record(found[e["run_id"]]) for e in entries if is_live_run(found.get(e["run_id"]))]

    def list_runs(self, limit: int = 50, offset: int = 0) -> list[RunRecord]:
        """Newest first: a backwards Query of the ``RUNS`` index items, then the runs themselves."""
        if limit <= 0:
            return []
        entries = list(self._io.query(self.state_table, RUNS, forward=False, limit=offset + limit))[offset:]
        return self._runs_in_order(entries)

    def count_runs(self) -> int:
        return read_counter(self._io, self.state_table, RUN_COUNTER)

    def runs_revision(self) -> int:
        return read_counter(self._io, self.state_table, ITEMS_COUNTER)

    def _items_changed(self) -> None:
        self._io.update(self.state_table, pk_sk(COUNTERS, ITEMS_COUNTER), "ADD #value :one", {":one": 1})

    def unfinished_runs(self) -> list[RunRecord]:
        runs = self._runs_in_order(list(self._io.query(self.state_table, UNFINISHED)))
        return [run for run in runs if run.status in UNFINISHED_RUN_STATUSES]

    def run_servers(self, run_id: str) -> list[RunServer]:
        servers = map(run_server, self._io.query(self.state_table, run_pk(run_id), "SERVER#"))
        return sorted(servers, key=start_order)

    def run_server(self, run_id: str, instance_id: str) -> RunServer:
        item = self._io.get(self.state_table, server_key(run_id, instance_id))
        if item is None:
            raise NotFoundError(f"run {run_id} has no server {instance_id}")
        return run_server(item)

    def run_item(self, run_id: str, instance_id: str, kb: str) -> RunItem:
        item = self._io.get(self.state_table, item_key(run_id, instance_id, kb))
        if item is None:
            raise NotFoundError(f"run {run_id} has no KB {kb} for instance {instance_id}")
        return run_item(item)

    def run_items(self, run_id: str, instance_id: str | None = None) -> list[RunItem]:
        prefix = "ITEM#" if instance_id is None else f"ITEM#{instance_id}#"
        items = map(run_item, self._io.query(self.state_table, run_pk(run_id), prefix))
        return sorted(items, key=lambda item: (item.instance_id, item.position))

    def items_of_instance(self, instance_id: str) -> list[RunItem]:
        """The latest item per KB for one instance across runs (the status view), from ``by_instance``."""
        rows = list(
            self._io.query(
                self.state_table,
                f"PATCH#{instance_id}",
                index=BY_INSTANCE,
                hash_name="patch",
                range_name="patch_key",
            )
        )
        runs = {i["run_id"]: i for i in self._io.batch_get(self.state_table, [run_key(r["run_id"]) for r in rows])}
        latest: dict[str, Item] = {}
        # Items of a run still being created (or rolled back) have no run yet: they are not history.
        for row in sorted(rows, key=lambda r: (r["created_at"], int(r["position"]), r["run_id"])):
            if is_live_run(runs.get(row["run_id"])):
                latest[row["kb"]] = row
        return sorted(map(run_item, latest.values()), key=lambda item: item.updated_at)

    def attempts(self, run_id: str, instance_id: str | None = None, kb: str | None = None) -> list[Attempt]:
        prefix = "ATTEMPT#" if instance_id is None else f"ATTEMPT#{instance_id}#" + (f"{kb}#" if kb else "")
        found = map(attempt_record, self._io.query(self.state_table, run_pk(run_id), prefix))
        wanted = [a for a in found if kb is None or a.kb == kb]
        return sorted(wanted, key=lambda a: (a.instance_id, a.kb, a.attempt))

    def transitions(self, run_id: str) -> list[Transition]:
        rows = sorted(
            self._io.query(self.state_table, run_pk(run_id), "TRANS#"),
            key=lambda r: (r["instance_id"], r["kb"], int(r["seq"])),
        )
        return [
            Transition(r["run_id"], r["instance_id"], r["kb"], r.get("from_state"), r["to_state"], r["at"], r["note"])
            for r in rows
        ]

    def notifications(self, run_id: str) -> list[tuple[str, bool, str | None]]:
        rows = self._io.query(self.state_table, run_pk(run_id), "NOTE#")
        return [(str(r["notifier"]), bool(r["ok"]), r.get("error")) for r in rows]

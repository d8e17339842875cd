"""DynamoDB writes of patch runs: creation, plans, KB transitions, attempts, leases, cancellation.

The guarantees of the SQLite adapter, each carried by a conditional write:

- a (server, KB) moves only along ``domain.patching``'s table, and never twice from one state: a
  transition is one transaction that updates the item *on the condition* that its state and its
  transition number are still the ones read, and puts the transition record under the next
  number. Two processes starting the same KB: one condition fails, it reads again and gets a
  ``StateError`` (InProgress → InProgress is illegal) — the KB is never started twice;
- a run has one driver: ``claim_run``/``renew_lease``/``release_run`` are single UpdateItems
  conditional on the owner and the lease's expiry;
- a server is in at most one unfinished run: see ``dynamodb_holds``;
- creation is all or nothing for readers: the run's servers, items and transitions are written
  first (with BatchWriteItem: nobody knows the run yet, and the status view ignores items of a
  run that does not exist), then one transaction publishes the run record, its index items, the
  run counter and its holds. If that fails, everything written is deleted again.

What SQLite does in one transaction and DynamoDB cannot (a cancellation touching 20,000 KBs) is a
sequence of conditional writes, each atomic for its (server, KB), ordered so that every
intermediate state is one the engine already handles (see ``cancel_run``).
"""

from __future__ import annotations

from typing import Any

from autopatch.domain.patching import (
    HELD_SERVER_STATUSES,
    UNFINISHED_RUN_STATUSES,
    KbState,
    RunStatus,
    check_transition,
)
from autopatch.domain.runs import RunItem, RunRecord, RunServer
from autopatch.errors import ConflictError, NotFoundError, StateError, StoreError
from autopatch.store.base import now
from autopatch.store.dynamodb_fleet import counter_action
from autopatch.store.dynamodb_io import (
    PK,
    SK,
    TRANSACTION_ACTIONS,
    ConditionFailed,
    Item,
    TransactionCancelled,
    chunks,
    delete_action,
    pk_sk,
    put_action,
    update_action,
)
from autopatch.store.dynamodb_run_reads import (
    RUN_COUNTER,
    RUNS,
    UNFINISHED,
    index_sk,
    item_fields,
    item_key,
    run_fields,
    run_key,
    run_pk,
    server_fields,
    transition_fields,
)
from autopatch.store.dynamodb_run_updates import UNFINISHED_CONDITION, UNFINISHED_VALUES, RunUpdates

_TRIES = 10


class RunItems(RunUpdates):
    """Mixed into ``DynamoStore``: the writes of ``RunStore``."""

    def create_run(self, run: RunRecord, servers: list[RunServer], items: list[RunItem]) -> None:
        """A run, its servers and their classified KBs; ``ConflictError`` when an unfinished run holds a server."""
        stamp = now()
        for item in items:
            check_transition(None, item.state, f"{item.instance_id}/{item.kb}")
        if self._io.get(self.state_table, run_key(run.run_id)) is not None:
            raise StoreError(f"run {run.run_id} already exists")
        taken = self.holds_to_take(run.run_id, list(dict.fromkeys(s.instance_id for s in servers)))
        children = [server_fields(server) for server in servers]
        for item in items:
            children.append(item_fields(item, run.created_at, stamp))
            children.append(
                transition_fields(run.run_id, item.instance_id, item.kb, 0, None, item.state, stamp, item.reason)
            )
        self._io.batch_write(self.state_table, children)
        publish = [
            put_action(self.state_table, run_fields(run), "attribute_not_exists(#pk)"),
            put_action(self.state_table, {PK: RUNS, SK: index_sk(run.created_at, run.run_id), "run_id": run.run_id}),
            counter_action(self.state_table, RUN_COUNTER),
        ]
        if run.status in UNFINISHED_RUN_STATUSES:
            publish.append(put_action(self.state_table, self._unfinished_entry(run.created_at, run.run_id)))
        holds = self.hold_actions(run.run_id, taken)
        claimed: list[str] = []
        try:
            if len(publish) + len(holds) <= TRANSACTION_ACTIONS:  # the usual case: one atomic write
                self._io.transact(publish + holds)
            else:
                for batch in chunks(list(taken), TRANSACTION_ACTIONS):  # claims first, then the run
                    self._claim(run.run_id, batch, taken)
                    claimed.extend(batch)
                self._io.transact(publish)
        except (TransactionCancelled, ConflictError) as exc:
            self.release_holds(run.run_id, claimed)
            self._io.batch_write(self.state_table, deletes=[pk_sk(c[PK], c[SK]) for c in children])
            if isinstance(exc, ConflictError):
                raise
            self.holds_to_take(run.run_id, list(taken))  # names the run that got in first
            raise StoreError(f"run {run.run_id} could not be created: {exc}") from exc
        self._items_changed()

    def _claim(self, run_id: str, batch: list[str], taken: dict[str, str | None]) -> None:
        try:
            self._io.transact(self.hold_actions(run_id, {i: taken[i] for i in batch}))
        except TransactionCancelled as exc:
            failed = [batch[index] for index in exc.failed()]
            self.holds_to_take(run_id, failed)  # raises ConflictError naming the holder, if one binds
            raise

    def _unfinished_entry(self, created_at: str, run_id: str) -> Item:
        return {PK: UNFINISHED, SK: index_sk(created_at, run_id), "run_id": run_id}

    def save_plan(self, run_id: str, servers: list[RunServer], items: list[RunItem]) -> None:
        """Store the scanned plan of a run created unplanned; ``planned`` flips last, conditionally."""
        stamp = now()
        run = self._run_item(run_id)
        if run.get("planned", True):
            raise StateError(f"run {run_id} is already planned")
        for item in items:
            check_transition(None, item.state, f"{item.instance_id}/{item.kb}")
        for server in servers:
            fields = {
                "product": server.product,
                "build_before": server.build_before,
                "open_exploited": server.open_exploited,
            }
            self._update_server(run_id, server.instance_id, fields | {"status": server.status, "reason": server.reason})
        children: list[dict[str, Any]] = []
        for item in items:
            children.append(item_fields(item, run["created_at"], stamp))
            children.append(
                transition_fields(run_id, item.instance_id, item.kb, 0, None, item.state, stamp, item.reason)
            )
        self._io.batch_write(self.state_table, children)
        for _ in range(_TRIES):
            try:  # a cancellation meanwhile changes the status: then the plan's Pending KBs are cancelled
                self._io.update(
                    self.state_table,
                    run_key(run_id),
                    "SET #planned = :yes",
                    {":yes": True, ":no": False, ":status": run["status"]},
                    "#planned = :no AND #status = :status",
                )
                break
            except ConditionFailed:
                run = self._run_item(run_id)
                if run.get("planned", True):
                    raise StateError(f"run {run_id} is already planned") from None
        else:
            raise StoreError(f"run {run_id}: its plan could not be stored while its status kept changing")
        if run["status"] != RunStatus.PENDING:
            pending = [row for row in self._item_rows(run_id) if row["state"] == KbState.PENDING]
            self._transition_many(pending, KbState.CANCELLED, "run cancelled")
        self._items_changed()

    # --- state changes ---------------------------------------------------------------------------

    def cancel_run(self, run_id: str, reason: str) -> RunStatus:
        """Cancel: Cancelling first (the driver starts no new KB), then Pending KBs and idle servers.

        The run ends Cancelled at once when nothing is in flight, else stays Cancelling until its
        driver has recorded the in-flight installs (a KB being installed is never cut half-way).
        """
        stamp = now()
        run = self._run_item(run_id)
        if RunStatus(run["status"]).is_terminal:
            raise StateError(f"run {run_id} is already {run['status']}")
        try:
            self._io.update(
                self.state_table,
                run_key(run_id),
                "SET #status = :cancelling, #reason = :reason",
                {":reason": reason} | UNFINISHED_VALUES,
                UNFINISHED_CONDITION,
            )
        except ConditionFailed:
            raise StateError(f"run {run_id} is already {self._run_item(run_id)['status']}") from None
        rows = self._item_rows(run_id)
        refused = self._transition_many([r for r in rows if r["state"] == KbState.PENDING], KbState.CANCELLED, reason)
        busy = {r["instance_id"] for r in rows if r["state"] == KbState.IN_PROGRESS}
        # A KB the driver started while we cancelled is in flight too.
        busy |= {r["instance_id"] for r in refused if self._item_state(r) is KbState.IN_PROGRESS}
        idle = [s.instance_id for s in self.run_servers(run_id) if s.status in HELD_SERVER_STATUSES]
        for instance_id in [i for i in idle if i not in busy]:
            self._update_server(run_id, instance_id, {"status": "Cancelled", "reason": reason, "finished_at": stamp})
        if busy:
            return RunStatus.CANCELLING
        try:
            self._io.transact(
                [
                    update_action(
                        self.state_table,
                        run_key(run_id),
                        "SET #status = :cancelled, #finished_at = :at",
                        {
                            ":cancelled": str(RunStatus.CANCELLED),
                            ":at": stamp,
                            ":cancelling": str(RunStatus.CANCELLING),
                        },
                        "#status = :cancelling",
                    ),
                    delete_action(self.state_table, pk_sk(UNFINISHED, index_sk(run["created_at"], run_id))),
                ]
            )
        except TransactionCancelled:  # the driver finished it meanwhile
            return RunStatus(self._run_item(run_id)["status"])
        return RunStatus.CANCELLED

    def transition_item(
        self,
        run_id: str,
        instance_id: str,
        kb: str,
        new: KbState,
        reason: str = "",
        reboot_required: bool | None = None,
    ) -> None:
        """Move one KB to ``new`` if the state machine allows it, conditional on the state read."""
        for _ in range(_TRIES):
            row = self._io.get(self.state_table, item_key(run_id, instance_id, kb))
            if row is None:
                raise NotFoundError(f"run {run_id} has no KB {kb} for instance {instance_id}")
            if not self._transition_many([row], new, reason, reboot_required):
                return
        raise StoreError(f"{run_id}/{instance_id}/{kb}: the KB kept changing state under this transition")

    def _item_rows(self, run_id: str) -> list[Item]:
        return list(self._io.query(self.state_table, run_pk(run_id), "ITEM#"))

    def _item_state(self, row: Item) -> KbState | None:
        current = self._io.get(self.state_table, pk_sk(row[PK], row[SK]))
        return KbState(current["state"]) if current else None

    def _transition_many(
        self, rows: list[Item], new: KbState, reason: str, reboot_required: bool | None = None
    ) -> list[Item]:
        """Move stored items (as read) to ``new``, 50 per transaction, each conditional on its state and number.

        ``StateError`` when the move is illegal from a state read. Returns the rows whose item
        changed since it was read (their condition failed): they were not moved.
        """
        refused: list[Item] = []
        for batch in chunks(rows, TRANSACTION_ACTIONS // 2):
            stamp = now()
            actions: list[Item] = []
            for row in batch:
                check_transition(KbState(row["state"]), new, f"{row['run_id']}/{row['instance_id']}/{row['kb']}")
                actions.extend(self._transition_actions(row, new, reason, reboot_required, stamp))
            try:
                self._io.transact(actions)
            except TransactionCancelled as exc:
                failed = {index // 2 for index in exc.failed()}
                refused.extend(batch[index] for index in sorted(failed))
                retry = [row for index, row in enumerate(batch) if index not in failed]
                refused.extend(self._transition_many(retry, new, reason, reboot_required))
            else:
                self._items_changed()
        return refused

    def _transition_actions(
        self, row: Item, new: KbState, reason: str, reboot_required: bool | None, stamp: str
    ) -> list[Item]:
        seq, current = int(row["seq"]), KbState(row["state"])
        values: dict[str, Any] = {":new": str(new), ":reason": reason, ":at": stamp, ":next": seq + 1}
        update = "SET #state = :new, #reason = :reason, #updated_at = :at, #seq = :next"
        if reboot_required is not None:
            update += ", #reboot_required = :reboot"
            values[":reboot"] = reboot_required
        values |= {":current": str(current), ":seq": seq}
        run_id, instance_id, kb = row["run_id"], row["instance_id"], row["kb"]
        return [
            update_action(
                self.state_table, item_key(run_id, instance_id, kb), update, values, "#state = :current AND #seq = :seq"
            ),
            put_action(
                self.state_table,
                transition_fields(run_id, instance_id, kb, seq + 1, current, new, stamp, reason),
                "attribute_not_exists(#pk)",
            ),
        ]

    def set_run_status(self, run_id: str, status: RunStatus, reason: str = "") -> None:
        """Status and reason, its start and end stamped; the unfinished index moves in the same transaction."""
        stamp = now()
        run = self._io.get(self.state_table, run_key(run_id))
        if run is None or run.get("aborted"):
            return
        update = "SET #status = :status, #reason = :reason, #started_at = if_not_exists(#started_at, :at)"
        update += ", #finished_at = :at" if status.is_terminal else ""
        entry = index_sk(run["created_at"], run_id)
        index = (
            delete_action(self.state_table, pk_sk(UNFINISHED, entry))
            if status.is_terminal
            else put_action(self.state_table, self._unfinished_entry(run["created_at"], run_id))
        )
        values = {":status": str(status), ":reason": reason, ":at": stamp}
        self._io.transact([update_action(self.state_table, run_key(run_id), update, values), index])
        if status.is_terminal:
            self.release_holds(run_id, [server.instance_id for server in self.run_servers(run_id)])

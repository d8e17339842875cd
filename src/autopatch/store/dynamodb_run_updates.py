"""DynamoDB writes of a run's progress: its lease, attempts, server updates, reboots and notifications.

Each is one conditional write (a lease) or one small transaction (a reboot and the attempts it
was for): see ``dynamodb_runs`` for creation, plans, KB transitions and cancellation.

Updates that SQLite makes with ``UPDATE … WHERE`` are conditional on the item existing, because
UpdateItem would otherwise create a stray item for a key nobody wrote: a missing item stays
missing, as with SQLite.
"""

from __future__ import annotations

import contextlib
from typing import Any

from autopatch.domain.patching import HELD_SERVER_STATUSES, UNFINISHED_RUN_STATUSES
from autopatch.errors import StoreError
from autopatch.store.base import ATTEMPT_FIELDS, SERVER_FIELDS, now
from autopatch.store.dynamodb_access import unique_suffix
from autopatch.store.dynamodb_holds import HoldItems
from autopatch.store.dynamodb_io import (
    TRANSACTION_ACTIONS,
    ConditionFailed,
    TransactionCancelled,
    chunks,
    pk_sk,
    update_action,
)
from autopatch.store.dynamodb_run_reads import RunReads, run_key, run_pk, server_key

_TRIES = 10
# ":pending", ":running", ":cancelling", ":paused": one placeholder per unfinished status, named after it.
UNFINISHED_VALUES = {f":{status.name.lower()}": str(status) for status in UNFINISHED_RUN_STATUSES}
UNFINISHED_CONDITION = f"#status IN ({', '.join(UNFINISHED_VALUES)})"


def assignments(fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """SET for the given values, REMOVE for the ``None`` ones (SQLite's NULL is an absent attribute)."""
    sets = [f"#{name} = :{name}" for name, value in fields.items() if value is not None]
    removals = [f"#{name}" for name, value in fields.items() if value is None]
    update = ("SET " + ", ".join(sets) if sets else "") + (" REMOVE " + ", ".join(removals) if removals else "")
    return update.strip(), {f":{name}": value for name, value in fields.items() if value is not None}


class RunUpdates(RunReads, HoldItems):
    """Mixed into ``DynamoStore`` (through ``RunItems``): leases and the progress of a run."""

    # --- ownership -------------------------------------------------------------------------------

    def claim_run(self, run_id: str, owner: str, lease_expires: float, now_epoch: float, dead_owner: str = "") -> bool:
        """Become the run's driver if nobody drives it: no owner, an expired lease, or ``dead_owner``."""
        condition = (
            f"attribute_exists(#pk) AND attribute_not_exists(#aborted) AND {UNFINISHED_CONDITION} AND "
            "(attribute_not_exists(#owner) OR attribute_not_exists(#lease_expires) OR #lease_expires < :now "
            "OR #owner = :owner OR #owner = :dead)"
        )
        values = {":owner": owner, ":lease": lease_expires, ":now": now_epoch, ":dead": dead_owner or owner}
        try:
            self._io.update(
                self.state_table,
                run_key(run_id),
                "SET #owner = :owner, #lease_expires = :lease",
                values | UNFINISHED_VALUES,
                condition,
            )
        except ConditionFailed:
            return False
        return True

    def renew_lease(self, run_id: str, owner: str, lease_expires: float) -> bool:
        """Extend our lease; False when another process took the run over (our lease had lapsed)."""
        try:
            self._io.update(
                self.state_table,
                run_key(run_id),
                "SET #lease_expires = :lease",
                {":lease": lease_expires, ":owner": owner},
                "#owner = :owner",
            )
        except ConditionFailed:
            return False
        return True

    def release_run(self, run_id: str, owner: str) -> None:
        with contextlib.suppress(ConditionFailed):  # not (or no longer) ours: nothing to give up
            self._io.update(
                self.state_table, run_key(run_id), "REMOVE #owner, #lease_expires", {":owner": owner}, "#owner = :owner"
            )

    def start_attempt(self, run_id: str, instance_id: str, kb: str, token: str) -> int:
        """Record the intent to send BEFORE sending; the number is claimed by a conditional put."""
        prefix = f"ATTEMPT#{instance_id}#{kb}#"
        for _ in range(_TRIES):
            last = list(self._io.query(self.state_table, run_pk(run_id), prefix, forward=False, limit=1))
            number = int(last[0]["attempt"]) + 1 if last else 1
            attempt = pk_sk(run_pk(run_id), f"{prefix}{number:06d}") | {
                "run_id": run_id,
                "instance_id": instance_id,
                "kb": kb,
                "attempt": number,
                "token": token,
                "phase": "sending",
                "sent_at": now(),  # the intent's time: find_command looks for the command from then on
                "output_tail": "",
            }
            try:
                self._io.put(self.state_table, attempt, "attribute_not_exists(#pk)")
                return number
            except ConditionFailed:
                continue  # another process took this number first
        raise StoreError(f"{run_id}/{instance_id}/{kb}: no attempt number could be claimed")

    def update_attempt(self, run_id: str, instance_id: str, kb: str, attempt: int, **fields: Any) -> None:
        unknown = set(fields) - ATTEMPT_FIELDS
        if unknown:
            raise ValueError(f"unknown attempt fields {sorted(unknown)}")
        if fields:
            attempt_key = pk_sk(run_pk(run_id), f"ATTEMPT#{instance_id}#{kb}#{attempt:06d}")
            self._update_existing(attempt_key, fields)

    def update_server(self, run_id: str, instance_id: str, **fields: Any) -> None:
        if set(fields) - SERVER_FIELDS:
            raise ValueError(f"unknown server fields {sorted(set(fields) - SERVER_FIELDS)}")
        self._update_server(run_id, instance_id, fields)

    def _update_server(self, run_id: str, instance_id: str, fields: dict[str, Any]) -> None:
        if fields:
            self._update_existing(server_key(run_id, instance_id), fields)
        if "status" in fields and fields["status"] not in HELD_SERVER_STATUSES:
            self.release_holds(run_id, [instance_id])

    def _update_existing(self, target: dict[str, str], fields: dict[str, Any]) -> None:
        """UPDATE … WHERE: a missing item stays missing (UpdateItem alone would create it)."""
        update, values = assignments(fields)
        with contextlib.suppress(ConditionFailed):
            self._io.update(self.state_table, target, update, values, "attribute_exists(#pk)")

    def record_reboot(
        self,
        run_id: str,
        instance_id: str,
        attempts: list[tuple[str, int]],
        requested_at: str | None = None,
        boot_before: str | None = None,
    ) -> None:
        """A reboot happened for these (KB, attempt)s: their phase and the server's count move together."""
        update = "ADD #reboots :one"
        extra = {"reboot_requested_at": requested_at, "boot_before": boot_before}
        sets = [f"#{name} = :{name}" for name, value in extra.items() if value is not None]
        update += (" SET " + ", ".join(sets)) if sets else ""
        values = {":one": 1} | {f":{name}": value for name, value in extra.items() if value is not None}
        actions = [
            update_action(self.state_table, server_key(run_id, instance_id), update, values, "attribute_exists(#pk)")
        ]
        for kb, number in attempts:
            attempt_key = pk_sk(run_pk(run_id), f"ATTEMPT#{instance_id}#{kb}#{number:06d}")
            actions.append(
                update_action(
                    self.state_table,
                    attempt_key,
                    "SET #phase = :rebooting",
                    {":rebooting": "rebooting"},
                    "attribute_exists(#pk)",
                )
            )
        for batch in chunks(actions, TRANSACTION_ACTIONS):
            while batch:
                try:
                    self._io.transact(batch)
                    break
                except TransactionCancelled as exc:  # what does not exist is skipped, as SQLite's UPDATE does
                    batch = [action for index, action in enumerate(batch) if index not in exc.failed()]

    def record_notification(self, run_id: str, notifier: str, ok: bool, error: str | None) -> None:
        note = pk_sk(run_pk(run_id), f"NOTE#{unique_suffix()}")
        self._io.put(self.state_table, note | {"notifier": notifier, "ok": ok, "error": error, "at": now()})

"""Which run holds a server: one ``HOLD#<instance>`` item per server, claimed by conditional writes.

SQLite answers "does an unfinished run still have work on this server?" with a join inside the
transaction that creates the new run. DynamoDB has no such join, so each server has a hold item
naming the last run that claimed it, and a new run writes its holds under a condition: the item
does not exist, or it still names the run we found stale. Two processes claiming one server at
once therefore cannot both succeed: the second condition fails.

Whether a hold still binds is derived, never stored, so no hold has to be released for
correctness (a run of 5,000 servers ending would otherwise need 5,000 writes in one
transaction, which DynamoDB cannot do): a hold binds while its run is unfinished and its server
of that run is Pending or Running — exactly SQLite's rule. Holds that no longer bind are deleted
when convenient (a server done, a run ended), conditionally on still naming that run.

A run whose holds do not all fit in its creating transaction (100 actions) writes them first, in
transactions of 100 — the run does not exist yet then. Such a "claim in progress" binds for
``CLAIM_SECONDS``; after that it is taken as the leftover of a creator that died, and whoever
takes it over first writes a tombstone under that run's id (conditional on no run existing), so
that a creator that was merely slow finds its run refused and rolls back instead of running
beside the newcomer.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable

from autopatch.domain.patching import HELD_SERVER_STATUSES, RunStatus
from autopatch.errors import ConflictError
from autopatch.store.dynamodb_io import ConditionFailed, DynamoIO, Item, pk_sk, put_action
from autopatch.store.dynamodb_run_reads import run_key, server_key

CLAIM_SECONDS = 600.0  # how long a claim in progress binds (creating 20,000 items takes well under it)
_LIVE, _STALE, _CLAIMING, _ABANDONED = "live", "stale", "claiming", "abandoned"


def hold_key(instance_id: str) -> dict[str, str]:
    return pk_sk(f"HOLD#{instance_id}", "HOLD")


class HoldItems:
    """Mixed into ``DynamoStore``: server holds of ``RunStore``."""

    _io: DynamoIO
    state_table: str

    def _hold_state(self, hold: Item, runs: dict[str, Item | None]) -> str:
        other = hold["run_id"]
        if other not in runs:
            runs[other] = self._io.get(self.state_table, run_key(other))
        run = runs[other]
        if run is None:
            return _CLAIMING if time.time() - float(hold.get("claimed", 0)) < CLAIM_SECONDS else _ABANDONED
        if run.get("aborted") or RunStatus(run["status"]).is_terminal:
            return _STALE
        server = self._io.get(self.state_table, server_key(other, hold["instance_id"]))
        return _LIVE if server is not None and server.get("status") in HELD_SERVER_STATUSES else _STALE

    def run_holding(self, instance_id: str) -> str | None:
        """The unfinished run that still has work on this server, if any (a claim in progress is no run yet)."""
        hold = self._io.get(self.state_table, hold_key(instance_id))
        if hold is None or self._hold_state(hold, {}) != _LIVE:
            return None
        return str(hold["run_id"])

    def held_message(self, instance_id: str, other: str, runs: dict[str, Item | None]) -> str:
        run = runs.get(other)
        status = run["status"] if run else "being created"
        return (
            f"instance_id: {instance_id} is held by run {other} ({status}); wait for it, "
            f"`autopatch resume` it or `autopatch cancel {other}`"
        )

    def holds_to_take(self, run_id: str, instance_ids: list[str]) -> dict[str, str | None]:
        """For each server, the stale run its hold names (None: no hold); ``ConflictError`` if one binds."""
        taken: dict[str, str | None] = dict.fromkeys(instance_ids)
        runs: dict[str, Item | None] = {}
        for hold in self._io.batch_get(self.state_table, [hold_key(i) for i in instance_ids]):
            state = self._hold_state(hold, runs)
            if state == _ABANDONED:
                state = self._fence(hold, runs)
            if state in (_LIVE, _CLAIMING):
                raise ConflictError(self.held_message(hold["instance_id"], hold["run_id"], runs))
            taken[hold["instance_id"]] = hold["run_id"]
        return taken

    def _fence(self, hold: Item, runs: dict[str, Item | None]) -> str:
        """Refuse for good the creation of the hold's run (its claim outlived ``CLAIM_SECONDS``)."""
        other = hold["run_id"]
        tombstone = run_key(other) | {"run_id": other, "aborted": True, "status": str(RunStatus.CANCELLED)}
        try:
            self._io.put(self.state_table, tombstone, "attribute_not_exists(#pk)")
        except ConditionFailed:  # the slow creator made it after all: judge its hold again
            runs[other] = self._io.get(self.state_table, run_key(other))
            return self._hold_state(hold, runs)
        runs[other] = tombstone
        return _STALE

    def hold_actions(self, run_id: str, taken: dict[str, str | None]) -> list[Item]:
        """Conditional puts of this run's holds: each over nothing, or over the stale hold we read."""
        actions = []
        for instance_id, stale in taken.items():
            hold = hold_key(instance_id) | {"run_id": run_id, "instance_id": instance_id, "claimed": time.time()}
            if stale is None:
                actions.append(put_action(self.state_table, hold, "attribute_not_exists(#pk)"))
            else:
                actions.append(put_action(self.state_table, hold, "#run_id = :stale", {":stale": stale}))
        return actions

    def release_holds(self, run_id: str, instance_ids: Iterable[str]) -> None:
        """Tidy up holds that no longer bind; each delete is conditional on still naming ``run_id``."""
        for instance_id in instance_ids:
            # Another run holds it now, or it is gone already: nothing to tidy.
            with contextlib.suppress(ConditionFailed):
                self._io.delete(self.state_table, hold_key(instance_id), "#run_id = :run", {":run": run_id})

"""DynamoDB items of a run's rings and their health gates (the ``RingStore`` port).

Items, in the run's own item collection (state table)::

    RUN#<run> / RING#<position>                      one ring and its gate's state
    RUN#<run> / RINGSRV#<position>#<instance>        one server of that ring and its latest check

One item per server, not a list inside the ring's item: a ring of 10,000 servers would pass
DynamoDB's 400 KB item limit. ``create_rings`` writes the servers first (a batch, not atomic),
then publishes the rings in one conditional transaction: readers start from the rings, so servers
written by a driver that died before publishing are rewritten by the next, and two drivers never
both publish. A gate changes only under the condition that its status is still the one read.
"""

from __future__ import annotations

from typing import Any

from autopatch.domain.ring_gates import GateStatus, MemberCheck, RingGate, RingMember
from autopatch.errors import NotFoundError, StateError, ValidationError
from autopatch.store.base import RING_GATE_FIELDS, RING_MEMBER_FIELDS
from autopatch.store.dynamodb_io import ConditionFailed, DynamoIO, Item, TransactionCancelled, chunks, pk_sk, put_action
from autopatch.store.dynamodb_run_reads import run_pk
from autopatch.store.dynamodb_run_updates import assignments

_GATE = "RING#"
_MEMBER = "RINGSRV#"
_PUBLISH_BATCH = 100  # TransactWriteItems' limit; a run has at most 10 rings (domain/rings.py)


def _gate_key(run_id: str, position: int) -> dict[str, str]:
    return pk_sk(run_pk(run_id), f"{_GATE}{position:02d}")


def _member_key(run_id: str, position: int, instance_id: str) -> dict[str, str]:
    return pk_sk(run_pk(run_id), f"{_MEMBER}{position:02d}#{instance_id}")


def _gate_item(gate: RingGate) -> Item:
    return _gate_key(gate.run_id, gate.position) | {
        "run_id": gate.run_id,
        "position": gate.position,
        "name": gate.name,
        "selector": gate.selector,
        "status": str(gate.status),
        "reason": gate.reason,
        "soak_until": gate.soak_until,
        "started_at": gate.started_at,
        "finished_at": gate.finished_at,
    }


def _member_item(member: RingMember) -> Item:
    return _member_key(member.run_id, member.position, member.instance_id) | {
        "run_id": member.run_id,
        "position": member.position,
        "instance_id": member.instance_id,
        "check": str(member.check),
        "round": member.round,
        "detail": member.detail,
        "command_id": member.command_id,
        "checked_at": member.checked_at,
    }


def _gate(item: Item) -> RingGate:
    return RingGate(
        item["run_id"],
        int(item["position"]),
        item["name"],
        item["selector"],
        GateStatus(item["status"]),
        item.get("reason", ""),
        item.get("soak_until"),
        item.get("started_at"),
        item.get("finished_at"),
    )


def _member(item: Item) -> RingMember:
    return RingMember(
        item["run_id"],
        int(item["position"]),
        item["instance_id"],
        MemberCheck(item["check"]),
        int(item.get("round", 0)),
        item.get("detail", ""),
        item.get("command_id"),
        item.get("checked_at"),
    )


def _checked(fields: dict[str, Any], allowed: frozenset[str], what: str) -> dict[str, Any]:
    unknown = set(fields) - allowed
    if unknown or not fields:
        raise ValidationError("fields", sorted(unknown), f"a {what} update sets some of {sorted(allowed)}")
    return {name: str(value) if name in ("status", "check") else value for name, value in fields.items()}


class RingItems:
    """Mixed into ``DynamoStore``: needs ``self._io`` and ``self.state_table``."""

    _io: DynamoIO
    state_table: str

    def create_rings(self, gates: list[RingGate], members: list[RingMember]) -> list[RingGate]:
        if not gates:
            return []
        run_id = gates[0].run_id
        if self._io.get(self.state_table, _gate_key(run_id, gates[0].position)) is None:
            self._io.batch_write(self.state_table, [_member_item(member) for member in members])
            for batch in chunks(gates, _PUBLISH_BATCH):
                actions = [put_action(self.state_table, _gate_item(g), "attribute_not_exists(#pk)") for g in batch]
                try:
                    self._io.transact(actions)
                except TransactionCancelled:
                    break  # another driver published first: its rings are the run's
        return self.ring_gates(run_id)

    def ring_gates(self, run_id: str) -> list[RingGate]:
        gates = map(_gate, self._io.query(self.state_table, run_pk(run_id), _GATE))
        return sorted(gates, key=lambda gate: gate.position)

    def ring_members(self, run_id: str, position: int | None = None) -> list[RingMember]:
        prefix = _MEMBER if position is None else f"{_MEMBER}{position:02d}#"
        published = {gate.position for gate in self.ring_gates(run_id)}
        members = map(_member, self._io.query(self.state_table, run_pk(run_id), prefix))
        return sorted(
            (m for m in members if m.position in published), key=lambda member: (member.position, member.instance_id)
        )

    def update_ring_gate(self, run_id: str, position: int, expected: GateStatus, **fields: Any) -> None:
        update, values = assignments(_checked(fields, RING_GATE_FIELDS, "ring gate"))
        key = _gate_key(run_id, position)
        try:
            self._io.update(self.state_table, key, update, values | {":expected": str(expected)}, "#status = :expected")
        except ConditionFailed:
            current = self._io.get(self.state_table, key)
            if current is None:
                raise NotFoundError(f"run {run_id} has no ring {position}") from None
            raise StateError(
                f"ring {position} of run {run_id} is {current['status']}, not {expected}: another driver moved it"
            ) from None

    def update_ring_member(self, run_id: str, position: int, instance_id: str, **fields: Any) -> None:
        update, values = assignments(_checked(fields, RING_MEMBER_FIELDS, "ring member"))
        try:
            self._io.update(
                self.state_table, _member_key(run_id, position, instance_id), update, values, "attribute_exists(#pk)"
            )
        except ConditionFailed:
            raise NotFoundError(f"ring {position} of run {run_id} has no server {instance_id}") from None

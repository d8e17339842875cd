"""The ring steps of a patch run: assign the servers to rings, open a ring, judge its gate, soak, halt.

A run started with ``--rings`` is patched ring by ring; after each ring its health gate decides
whether the next may start (the checks and their order: ``domain/ring_gates.py``). As with
``engine/steps.py``, two drivers call these steps and nothing else decides: the local engine
(``engine/ring_runner.py``: threads that wait) and the Step Functions workflow (a Map over a ring's
servers, a Wait state for the soak). No step waits, sleeps or keeps memory between calls, and none
reads a clock: the driver passes the moment (the local engine its injected wall clock).

Every step stores what it decided before the driver acts on it, so a driver that dies at any point
resumes where it stopped: a ring being patched goes on with its servers (a KB in Success is never
installed again), a gate being checked re-polls the health checks it sent (or sends those it had
not), a soak waits only for what is left of it (``soak_until`` is stored).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from autopatch.domain.fleet import CommandInvocation
from autopatch.domain.patching import RunStatus
from autopatch.domain.ring_gates import (
    GateStatus,
    MemberCheck,
    RingGate,
    RingMember,
    check_gate_transition,
    failure_reason,
    health_verdict,
    patch_check,
)
from autopatch.domain.rings import assign_rings, parse_rings
from autopatch.domain.runs import RunItem
from autopatch.engine.options import RunOptions
from autopatch.engine.steps import errors_reached, finish_run
from autopatch.errors import StateError
from autopatch.fleet.base import FleetAdapter
from autopatch.store.base import RunStore, Store, now

HEALTH_CHECK_TIMEOUT = 600.0  # seconds a health script may take (SSM's executionTimeout for it is the same)
_UNFINISHED = ("Pending", "Running")


def plan_rings(store: Store, run_id: str, options: RunOptions) -> list[RingGate]:
    """The run's rings, assigned on the first call and stored; empty for a run without ``--rings``.

    Every server of the run is placed by the rule that checked ``--rings`` when the run started
    (``domain/rings.py``), from the tags stored with the fleet. A server no ring takes now (its
    tags changed in between) is Skipped, never patched outside the rings.
    """
    if not options.rings:
        return []
    stored = store.ring_gates(run_id)
    if stored:
        return stored
    servers = store.run_servers(run_id)
    known = {instance.instance_id: instance.tags for instance in store.list_instances()}
    tags = {server.instance_id: dict(known.get(server.instance_id, {})) for server in servers}
    assigned = assign_rings(parse_rings(options.rings), tags)
    if len(assigned) > 1 and assigned[-1].spec.catch_all and not assigned[-1].instance_ids:
        assigned.pop()  # a final "*" with nothing left for it
    placed = {instance_id for ring in assigned for instance_id in ring.instance_ids}
    for server in servers:
        if server.instance_id not in placed and server.status in _UNFINISHED:
            reason = "in no ring of --rings (its tags changed after the run started)"
            store.update_server(run_id, server.instance_id, status="Skipped", reason=reason)
    gates = [RingGate(run_id, position, ring.spec.name, ring.spec.selector) for position, ring in enumerate(assigned)]
    members = [
        RingMember(run_id, position, instance_id)
        for position, ring in enumerate(assigned)
        for instance_id in ring.instance_ids
    ]
    return store.create_rings(gates, members)


def current_ring(store: RunStore, run_id: str) -> RingGate | None:
    """The first ring not through its gate (a Failed, Not Started or Cancelled one included); None when all passed."""
    return next((gate for gate in store.ring_gates(run_id) if gate.status is not GateStatus.PASSED), None)


def is_last_ring(store: RunStore, gate: RingGate) -> bool:
    return all(other.position <= gate.position for other in store.ring_gates(gate.run_id))


def ring_servers(store: RunStore, gate: RingGate) -> list[str]:
    """The instance ids of the ring's servers (what a driver patches while the ring is Patching)."""
    return [member.instance_id for member in store.ring_members(gate.run_id, gate.position)]


def _move(store: RunStore, gate: RingGate, new: GateStatus, **fields: Any) -> RingGate:
    check_gate_transition(gate.status, new, f"run {gate.run_id}, ring {gate.name}")
    store.update_ring_gate(gate.run_id, gate.position, gate.status, status=new, **fields)
    return replace(gate, status=new, **fields)


def open_ring(store: RunStore, gate: RingGate) -> RingGate:
    """Waiting → Patching: the ring's servers may start."""
    return _move(store, gate, GateStatus.PATCHING, started_at=now())


def ring_done(store: RunStore, gate: RingGate, max_errors: int | None) -> bool:
    """Every server of the ring finished (or never may start: ``--max-errors`` was reached)."""
    members = {member.instance_id for member in store.ring_members(gate.run_id, gate.position)}
    left = [s for s in store.run_servers(gate.run_id) if s.instance_id in members and s.status in _UNFINISHED]
    return not left or (
        all(server.status == "Pending" for server in left) and errors_reached(store, gate.run_id, max_errors)
    )


def close_ring(store: RunStore, gate: RingGate) -> RingGate:
    """Patching → Checking, or Failed: check 1 of the gate (every server patched), kept per server."""
    members = store.ring_members(gate.run_id, gate.position)
    servers = {server.instance_id: server for server in store.run_servers(gate.run_id)}
    items: dict[str, list[RunItem]] = {}
    for item in store.run_items(gate.run_id):
        items.setdefault(item.instance_id, []).append(item)
    problems: list[str] = []
    patched = 0
    for member in members:
        server = servers[member.instance_id]
        check, detail = patch_check(server, items.get(member.instance_id, []))
        if check is not MemberCheck.UNCHECKED:
            store.update_ring_member(
                gate.run_id, gate.position, member.instance_id, check=check, round=1, detail=detail, checked_at=now()
            )
        if check is MemberCheck.FAILED:
            problems.append(f"{server.name} ({server.instance_id}): {detail}")
        if check is not MemberCheck.SKIPPED:
            patched += 1
    if not problems and not patched:
        problems.append(f"no server of the ring was patched ({len(members)} skipped)")
    if problems:
        return fail_gate(store, gate, problems)
    return _move(store, gate, GateStatus.CHECKING)


def members_to_check(store: RunStore, gate: RingGate) -> list[RingMember]:
    """The ring's servers still to check in the gate's current round (Checking ones: re-poll their command)."""
    round_ = gate.status.round
    return [
        member
        for member in store.ring_members(gate.run_id, gate.position)
        if member.check is not MemberCheck.SKIPPED and (member.round < round_ or not member.check.is_final)
    ]


def record_check(
    store: RunStore, gate: RingGate, member: RingMember, check: MemberCheck, detail: str, command_id: str | None = None
) -> RingMember:
    """One server's result (or a health check in flight) in the gate's current round."""
    fields: dict[str, Any] = {"check": check, "round": gate.status.round, "detail": detail[:300]}
    fields |= {"command_id": command_id, "checked_at": now()}
    store.update_ring_member(gate.run_id, gate.position, member.instance_id, **fields)
    return replace(member, **fields)


def send_health_check(
    store: RunStore, fleet: FleetAdapter, gate: RingGate, member: RingMember, script: str
) -> RingMember:
    """Send the health-check script to one server (online, checked by the driver), then record its command id.

    A driver that dies between the two sends it again on resume: a health check only reads.
    """
    command_id = fleet.send_health_check(member.instance_id, script)
    return record_check(store, gate, member, MemberCheck.CHECKING, "health script running", command_id)


def record_health_result(
    store: RunStore, gate: RingGate, member: RingMember, invocation: CommandInvocation | None
) -> RingMember:
    """The health check's end (``None``: no result within ``HEALTH_CHECK_TIMEOUT``): Passed or Failed."""
    check, detail = health_verdict(invocation, HEALTH_CHECK_TIMEOUT)
    return record_check(store, gate, member, check, detail, member.command_id)


def judge_gate(store: RunStore, gate: RingGate, soak_seconds: int, at: datetime) -> RingGate:
    """After a round of checks: Failed if a server failed; else Soaking (first round, a soak, not the
    last ring) until ``at`` + the soak, else Passed. A round with servers left unchecked is not judged."""
    if members_to_check(store, gate):
        return gate
    round_ = gate.status.round
    names = {server.instance_id: server.name for server in store.run_servers(gate.run_id)}
    failed = [
        f"{names.get(m.instance_id, m.instance_id)} ({m.instance_id}): {m.detail}"
        for m in store.ring_members(gate.run_id, gate.position)
        if m.check is MemberCheck.FAILED and m.round == round_
    ]
    if failed:
        when = " after the soak" if round_ == 2 else ""
        return fail_gate(store, gate, [f"{problem}{when}" for problem in failed])
    if round_ == 1 and soak_seconds > 0 and not is_last_ring(store, gate):
        until = (at.astimezone(UTC) + timedelta(seconds=soak_seconds)).isoformat(timespec="milliseconds")
        return _move(store, gate, GateStatus.SOAKING, soak_until=until)
    return _move(store, gate, GateStatus.PASSED, finished_at=now())


def soak_left(gate: RingGate, at: datetime) -> float:
    """Seconds of the soak still to wait at ``at`` (0 once it is over)."""
    if gate.soak_until is None:
        return 0.0
    return max(0.0, (datetime.fromisoformat(gate.soak_until) - at).total_seconds())


def end_soak(store: RunStore, gate: RingGate) -> RingGate:
    """Soaking → Rechecking: online and the health script once more, on every server checked before."""
    return _move(store, gate, GateStatus.RECHECKING)


def fail_gate(store: RunStore, gate: RingGate, problems: list[str]) -> RingGate:
    return _move(store, gate, GateStatus.FAILED, reason=failure_reason(gate.name, problems), finished_at=now())


def end_after_failed_gate(store: RunStore, run_id: str, gate: RingGate, max_errors: int | None) -> RunStatus:
    """The run's end once ``gate`` failed: Halted when rings follow it (they stay untouched), else Failed.

    Later rings become Not Started and each of their servers says why; the run's reason is the
    gate's (``ring canary failed its health gate: …``). Repeating this after a crash changes nothing.
    """
    later = [other for other in store.ring_gates(run_id) if other.position > gate.position]
    if not later:  # the last ring: nothing to halt, but the run did not pass
        if finish_run(store, run_id, max_errors) is RunStatus.CANCELLED:
            return RunStatus.CANCELLED
        reason = store.get_run(run_id).reason
        store.set_run_status(run_id, RunStatus.FAILED, gate.reason + (f"; {reason}" if reason else ""))
        return RunStatus.FAILED
    note = f"not started: ring {gate.name} halted the run"
    untouched: set[str] = set()
    for other in later:
        if other.status is GateStatus.WAITING:
            _move(store, other, GateStatus.NOT_STARTED, reason=note, finished_at=now())
        untouched.update(ring_servers(store, other))
    for server in store.run_servers(run_id):
        if server.instance_id in untouched and server.status == "Pending" and server.reason != note:
            store.update_server(run_id, server.instance_id, reason=note)
    store.set_run_status(run_id, RunStatus.HALTED, gate.reason)
    return RunStatus.HALTED


def cancel_rings(store: RunStore, run_id: str) -> None:
    """The run was cancelled: every ring not through its gate is Cancelled (its servers' KBs are, by the cancel).

    Called by ``cancel`` itself (so a run cancelled during a soak shows it at once) and by the driver
    once it notices; a gate the driver moves meanwhile is read again, and a gate already ended is left.
    """
    for gate in store.ring_gates(run_id):
        for _ in range(3):
            if gate.status.is_terminal:
                break
            try:
                _move(store, gate, GateStatus.CANCELLED, reason="the run was cancelled", finished_at=now())
                break
            except StateError:  # the driver moved it first
                gate = next(g for g in store.ring_gates(run_id) if g.position == gate.position)


def ring_view(store: RunStore, run_id: str, at: datetime | None = None) -> list[dict[str, Any]]:
    """The run's rings for ``run show``, the API and the dashboard: each gate, its servers and their checks."""
    gates = store.ring_gates(run_id)
    if not gates:
        return []
    moment = at or datetime.now(UTC)
    names = {server.instance_id: server.name for server in store.run_servers(run_id)}
    members: dict[int, list[RingMember]] = {}
    for member in store.ring_members(run_id):
        members.setdefault(member.position, []).append(member)
    return [_gate_view(gate, members.get(gate.position, []), names, moment) for gate in gates]


def _gate_view(gate: RingGate, members: Iterable[RingMember], names: dict[str, str], at: datetime) -> dict[str, Any]:
    servers = [
        {
            "instance_id": member.instance_id,
            "name": names.get(member.instance_id, member.instance_id),
            "check": str(member.check),
            "detail": member.detail,
            "checked_at": member.checked_at,
        }
        for member in members
    ]
    counts = {str(check): sum(1 for s in servers if s["check"] == check) for check in MemberCheck}
    return {
        "name": gate.name,
        "selector": gate.selector,
        "status": str(gate.status),
        "reason": gate.reason,
        "started_at": gate.started_at,
        "finished_at": gate.finished_at,
        "soak_until": gate.soak_until,
        "soak_remaining_seconds": round(soak_left(gate, at)) if gate.status is GateStatus.SOAKING else None,
        "counts": {"servers": len(servers)} | {key: value for key, value in counts.items() if value},
        "servers": servers,
    }

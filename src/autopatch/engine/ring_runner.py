"""The local driver of a run with rings: each ring's servers on the engine's threads, then its gate.

Every decision is a step of ``engine/rings.py`` (which the Step Functions workflow can call as
well); this module only adds what a local process does between them: patch a ring's servers on the
engine's pool, wait for a server to answer, poll a health check until it ends, sleep through the
soak on the engine's injected ``sleep`` and wall clock (a test's simulated clock runs it in no
time), and notice a cancel or a lost lease while it waits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopatch.domain.patching import RunStatus
from autopatch.domain.ring_gates import GateStatus, MemberCheck, RingGate, RingMember
from autopatch.domain.rings import format_duration
from autopatch.engine.options import RunOptions
from autopatch.engine.ownership import RunLease
from autopatch.engine.rings import (
    HEALTH_CHECK_TIMEOUT,
    cancel_rings,
    close_ring,
    current_ring,
    end_after_failed_gate,
    end_soak,
    judge_gate,
    members_to_check,
    open_ring,
    record_check,
    record_health_result,
    ring_done,
    ring_servers,
    send_health_check,
    soak_left,
)
from autopatch.errors import AutoPatchError, StoreError, TransientError

if TYPE_CHECKING:
    from autopatch.engine.runner import Engine

SOAK_CHECK_SECONDS = 5.0  # how often a soak looks for a cancel or a lost lease (a server shutdown waits this long)


class LocalRings:
    """Drives one run's rings in order on ``engine``, as its lease holder."""

    def __init__(self, engine: Engine, run_id: str, options: RunOptions, lease: RunLease) -> None:
        self.engine = engine
        self.store = engine.store
        self.run_id = run_id
        self.options = options
        self.lease = lease

    def drive(self) -> RunStatus | None:
        """Ring by ring to the end; the status when a gate ended the run (Halted, or Failed at the last
        ring), the stored status when the lease was lost, and None when the run ends as any run does:
        every ring through its gate, the run cancelled, or a ring left unfinished by its servers (a
        maintenance window closed) — the engine's usual end then decides."""
        while not self.lease.lost.is_set():
            if self.engine.cancelled(self.run_id):
                cancel_rings(self.store, self.run_id)
                self.engine.patch_servers(self.run_id, self.options, self.lease)  # in-flight installs end
                return None
            gate = current_ring(self.store, self.run_id)
            if gate is None or gate.status in (GateStatus.CANCELLED, GateStatus.NOT_STARTED):
                return None  # every ring passed, or none is left to drive
            if gate.status is GateStatus.FAILED:
                self.engine._measure_after(self.run_id, self.options)
                return end_after_failed_gate(self.store, self.run_id, gate, self.options.max_errors)
            if not self._advance(gate):
                return None  # the ring's servers stopped before the end (a window closed)
        return self.store.get_run(self.run_id).status

    def _advance(self, gate: RingGate) -> bool:
        """One step of the ring (patch, check, soak); False when its servers stopped unfinished."""
        self.engine.on_event("", "", f"ring {gate.name}", str(gate.status))
        if gate.status is GateStatus.WAITING:
            open_ring(self.store, gate)
        elif gate.status is GateStatus.PATCHING:
            self.engine.patch_servers(self.run_id, self.options, self.lease, ring_servers(self.store, gate))
            if self.lease.lost.is_set() or self.engine.cancelled(self.run_id):
                return True
            if not ring_done(self.store, gate, self.options.max_errors):
                return False
            close_ring(self.store, gate)
        elif gate.status in (GateStatus.CHECKING, GateStatus.RECHECKING):
            self._check(gate)
            if not self.lease.lost.is_set() and not self.engine.cancelled(self.run_id):
                judge_gate(self.store, gate, self.options.soak_seconds, self.engine.wall_clock())
        elif gate.status is GateStatus.SOAKING and self._soak(gate):
            end_soak(self.store, gate)
        return True

    def _check(self, gate: RingGate) -> None:
        """A round of checks: each server online (waited for), then the health script where one is given."""
        script = self.options.health_script
        running: list[RingMember] = []
        for member in members_to_check(self.store, gate):
            if self.lease.lost.is_set() or self.engine.cancelled(self.run_id):
                return
            if member.check is MemberCheck.CHECKING and member.command_id:
                running.append(member)  # sent before a restart of the engine: poll it
                continue
            if not self._online(member.instance_id):
                waited = format_duration(self.options.reboot_timeout)
                record_check(self.store, gate, member, MemberCheck.FAILED, f"offline: not online within {waited}")
            elif script is None:
                record_check(self.store, gate, member, MemberCheck.PASSED, "online")
            else:
                try:
                    running.append(self._send(gate, member, script))
                except StoreError:
                    raise
                except AutoPatchError as exc:
                    detail = f"health script could not be sent: {exc}"
                    record_check(self.store, gate, member, MemberCheck.FAILED, detail)
        for member in running:
            assert member.command_id is not None
            try:
                invocation = self.engine._wait(
                    member.instance_id, member.command_id, self.options.poll, HEALTH_CHECK_TIMEOUT
                )
            except StoreError:
                raise
            except AutoPatchError as exc:
                record_check(self.store, gate, member, MemberCheck.FAILED, f"health script result unreadable: {exc}")
                continue
            record_health_result(self.store, gate, member, invocation)
            self.engine.on_event(member.instance_id, "", "health check", "done")

    def _send(self, gate: RingGate, member: RingMember, script: str) -> RingMember:
        """Send the health check, again after what is transient (throttling, the agent briefly away).

        A send whose fate is unknown is sent again too: unlike an install, a health check only reads.
        """
        poll = self.options.poll
        for attempt in range(self.options.transient_retries + 1):
            try:
                return send_health_check(self.store, self.engine.fleet, gate, member, script)
            except TransientError:
                if attempt == self.options.transient_retries:
                    raise
                self.engine.sleep(min(poll.max_delay, poll.first_delay * 2 ** (attempt + 1)))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _online(self, instance_id: str) -> bool:
        try:
            return self.engine._await_online(instance_id, self.options)
        except TransientError:
            return False

    def _soak(self, gate: RingGate) -> bool:
        """Sleep until the stored end of the soak; False when a cancel or a lost lease cut it short."""
        while (left := soak_left(gate, self.engine.wall_clock())) > 0:
            if self.lease.lost.is_set() or self.engine.cancelled(self.run_id):
                return False
            self.engine.on_event("", "", f"ring {gate.name}", f"soaking, {format_duration(left)} left")
            self.engine.sleep(min(left, SOAK_CHECK_SECONDS))
        return True

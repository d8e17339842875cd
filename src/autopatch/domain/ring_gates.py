"""The health gate between rings: its states, the one table of their legal moves, and its verdicts.

A ring's gate decides whether the next ring may start. It fails on the first of these that does
not hold, in this order, and says which:

1. **Patched** — every server of the ring that the run patched ended Done: a server that Failed,
   a KB in Failed, or a server that never started (``--max-errors`` stopped it) fails the gate.
   Servers the run could not patch at all (Skipped: offline when planned, unidentified) are shown
   and not checked, but a ring none of whose servers was patched fails: it proved nothing.
2. **Online** — each patched server answers again (waited for up to the reboot timeout).
3. **Health script** — with ``--health-script``, the script exits 0 on each patched server.
4. **Soak** — the gate waits ``--soak``, then checks 2 and 3 again (a problem that shows within
   the soak still halts the run). Without a soak, or after the last ring, there is no second round.

A failed gate halts the run (``RunStatus.HALTED``): later rings are never started. The state is
stored at every step, so a driver that dies during a gate or a soak resumes there (``engine/rings.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from autopatch.domain.fleet import CommandInvocation, CommandStatus
from autopatch.domain.patching import KbState
from autopatch.domain.runs import RunItem, RunServer
from autopatch.errors import StateError

DETAIL_LIMIT = 300


class GateStatus(StrEnum):
    """The life of one ring and its gate within a run."""

    WAITING = "Waiting"  # an earlier ring is not through its gate yet
    PATCHING = "Patching"  # the ring's servers are being patched
    CHECKING = "Checking"  # first round: patched, online, health script
    SOAKING = "Soaking"  # checks passed; waiting until ``soak_until``
    RECHECKING = "Rechecking"  # the soak is over: online and health script once more
    PASSED = "Passed"  # the next ring may start
    FAILED = "Failed"  # the run is halted here
    NOT_STARTED = "Not Started"  # an earlier ring's gate failed: never touched
    CANCELLED = "Cancelled"  # the run was cancelled first

    @property
    def is_terminal(self) -> bool:
        return self in (GateStatus.PASSED, GateStatus.FAILED, GateStatus.NOT_STARTED, GateStatus.CANCELLED)

    @property
    def round(self) -> int:
        """Which round of checks this status runs (0: none)."""
        return {GateStatus.CHECKING: 1, GateStatus.RECHECKING: 2}.get(self, 0)


GATE_TRANSITIONS: dict[GateStatus, frozenset[GateStatus]] = {
    GateStatus.WAITING: frozenset({GateStatus.PATCHING, GateStatus.NOT_STARTED, GateStatus.CANCELLED}),
    GateStatus.PATCHING: frozenset({GateStatus.CHECKING, GateStatus.FAILED, GateStatus.CANCELLED}),
    GateStatus.CHECKING: frozenset({GateStatus.SOAKING, GateStatus.PASSED, GateStatus.FAILED, GateStatus.CANCELLED}),
    GateStatus.SOAKING: frozenset({GateStatus.RECHECKING, GateStatus.CANCELLED}),
    GateStatus.RECHECKING: frozenset({GateStatus.PASSED, GateStatus.FAILED, GateStatus.CANCELLED}),
    GateStatus.PASSED: frozenset(),
    GateStatus.FAILED: frozenset(),
    GateStatus.NOT_STARTED: frozenset(),
    GateStatus.CANCELLED: frozenset(),
}


def check_gate_transition(current: GateStatus, new: GateStatus, where: str = "") -> None:
    """Raise ``StateError`` unless ``current → new`` is in the table."""
    if new not in GATE_TRANSITIONS[current]:
        allowed = ", ".join(sorted(GATE_TRANSITIONS[current])) or "none (terminal)"
        raise StateError(f"{where}: illegal gate transition {current} → {new}; allowed from there: {allowed}")


class MemberCheck(StrEnum):
    """One server's standing at its ring's gate (the latest round)."""

    UNCHECKED = "Not Checked"
    CHECKING = "Checking"  # the health script is running (``command_id``)
    PASSED = "Passed"
    FAILED = "Failed"
    SKIPPED = "Skipped"  # not patched by the run: shown, not checked

    @property
    def is_final(self) -> bool:
        return self in (MemberCheck.PASSED, MemberCheck.FAILED, MemberCheck.SKIPPED)


@dataclass(frozen=True, slots=True)
class RingGate:
    """One ring of a run and the state of its gate."""

    run_id: str
    position: int  # 0 for the first ring
    name: str
    selector: str
    status: GateStatus = GateStatus.WAITING
    reason: str = ""  # why it failed (or was not started, or cancelled)
    soak_until: str | None = None  # UTC ISO: when the soak ends
    started_at: str | None = None
    finished_at: str | None = None


@dataclass(frozen=True, slots=True)
class RingMember:
    """One server of a ring, and its check in the gate's latest round."""

    run_id: str
    position: int
    instance_id: str
    check: MemberCheck = MemberCheck.UNCHECKED
    round: int = 0  # the round ``check`` belongs to (0: not checked yet)
    detail: str = ""
    command_id: str | None = None  # the health-check command of this round, once sent
    checked_at: str | None = None


def patch_check(server: RunServer, items: list[RunItem]) -> tuple[MemberCheck, str]:
    """Check 1 for one server: Skipped (not patched), Failed (with the first reason) or Unchecked (go on)."""
    if server.status == "Skipped":
        return MemberCheck.SKIPPED, f"not patched: {server.reason}"[:DETAIL_LIMIT]
    failed = [item for item in items if item.state is KbState.FAILED]
    if failed:
        more = f" (and {len(failed) - 1} more failed KB(s))" if len(failed) > 1 else ""
        return MemberCheck.FAILED, f"{failed[0].kb} Failed: {failed[0].reason}"[: DETAIL_LIMIT - len(more)] + more
    if server.status == "Failed":
        return MemberCheck.FAILED, f"server failed: {server.reason}"[:DETAIL_LIMIT]
    if server.status in ("Pending", "Running"):
        return MemberCheck.FAILED, "not patched: the run stopped starting servers (--max-errors)"
    return MemberCheck.UNCHECKED, ""


def health_verdict(invocation: CommandInvocation | None, timeout: float) -> tuple[MemberCheck, str]:
    """Check 3 for one server: the health script passed only when its command succeeded with exit code 0."""
    if invocation is None:
        return MemberCheck.FAILED, f"health script: no result within {timeout:.0f} s"
    tail = " ".join((invocation.output or invocation.error).split())[-160:]
    if invocation.status is CommandStatus.SUCCESS and invocation.exit_code == 0:
        return MemberCheck.PASSED, "online; health script exited 0"
    if invocation.exit_code is not None and invocation.exit_code >= 0:
        return MemberCheck.FAILED, f"health script exited {invocation.exit_code}: {tail}"[:DETAIL_LIMIT]
    return MemberCheck.FAILED, f"health script did not run to the end ({invocation.status}): {tail}"[:DETAIL_LIMIT]


def failure_reason(ring: str, problems: list[str]) -> str:
    """The run's reason once a gate failed: the ring, and the first check that failed (with a count of the rest)."""
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"ring {ring} failed its health gate: {problems[0]}{more}"[:500]

"""Records of patch runs as the store keeps them: runs, servers in a run, KB items, attempts."""

from __future__ import annotations

from dataclasses import dataclass, field

from autopatch.domain.patching import KbState, RunStatus


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    kind: str  # "patch" | "retry"
    status: RunStatus
    created_at: str
    options: dict[str, object] = field(default_factory=dict)
    started_at: str | None = None
    finished_at: str | None = None
    reason: str = ""
    owner: str | None = None  # the process driving the run (see engine/ownership.py)
    lease_expires: float | None = None  # epoch seconds: after this, another process may take over
    planned: bool = True  # False between claiming the servers and storing the scanned plan


@dataclass(frozen=True, slots=True)
class RunServer:
    run_id: str
    instance_id: str
    name: str
    product: str | None
    build_before: str | None
    status: str = "Pending"  # Pending | Running | Done | Failed | Skipped | Cancelled
    build_after: str | None = None
    reboots: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    reason: str = ""
    reboot_requested_at: str | None = None  # the last reboot asked for (UTC, ISO)
    boot_before: str | None = None  # the server's boot time before it: a later one proves the reboot
    # Open CVEs Microsoft marks exploited or CISA lists (KEV) when the run was planned: such servers
    # start first (``start_order``), in both drivers, because both take servers in the store's order.
    open_exploited: int = 0


def start_order(server: RunServer) -> tuple[int, str, str]:
    """The order a run's servers start in: most open exploited CVEs first, then by name (attackers do not wait)."""
    return (-server.open_exploited, server.name, server.instance_id)


@dataclass(frozen=True, slots=True)
class RunItem:
    run_id: str
    instance_id: str
    kb: str
    position: int
    state: KbState
    subtype: str | None = None
    fixed_build: str | None = None
    restart_required: str | None = None
    reboot_required: bool = False
    reason: str = ""
    updated_at: str = ""


@dataclass(frozen=True, slots=True)
class Attempt:
    run_id: str
    instance_id: str
    kb: str
    attempt: int
    token: str
    phase: str  # sending | sent | done | transient
    command_id: str | None = None
    sent_at: str | None = None
    finished_at: str | None = None
    status: str | None = None
    exit_code: int | None = None
    hresult: int | None = None
    reboot_required: bool | None = None
    output_tail: str = ""


@dataclass(frozen=True, slots=True)
class Transition:
    run_id: str
    instance_id: str
    kb: str
    from_state: str | None
    to_state: str
    at: str
    note: str = ""

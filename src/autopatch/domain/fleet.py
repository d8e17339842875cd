"""Fleet vocabulary: instances, command invocations (SSM's status words), scan and install reports.

These are the values every fleet adapter (SSM, simulator) returns, so that the engine never
knows which adapter it talks to. The JSON that the PowerShell scripts print — and that the
simulator prints in exactly the same shape — is parsed by ``autopatch.fleet.reports``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class CommandStatus(StrEnum):
    """SSM Run Command's invocation statuses, verbatim (``GetCommandInvocation.Status``)."""

    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    DELAYED = "Delayed"  # the agent will retry delivery: still running from our side
    SUCCESS = "Success"
    FAILED = "Failed"
    TIMED_OUT = "TimedOut"
    CANCELLING = "Cancelling"
    CANCELLED = "Cancelled"
    UNDELIVERABLE = "Undeliverable"  # instance unreachable: transient, worth retrying
    TERMINATED = "Terminated"
    # SSM's StatusDetails under Status "TimedOut": the command never ran (agent away for the whole
    # delivery timeout: transient) or was killed by the execution timeout (the install failed).
    DELIVERY_TIMED_OUT = "DeliveryTimedOut"
    EXECUTION_TIMED_OUT = "ExecutionTimedOut"

    @property
    def is_terminal(self) -> bool:
        return self not in (
            CommandStatus.PENDING,
            CommandStatus.IN_PROGRESS,
            CommandStatus.DELAYED,
            CommandStatus.CANCELLING,
        )


@dataclass(frozen=True, slots=True)
class Instance:
    """A managed Windows server as discovery sees it (before any scan)."""

    instance_id: str
    name: str
    platform_name: str  # e.g. "Microsoft Windows Server 2022 Datacenter"
    platform_version: str  # e.g. "10.0.20348"
    online: bool
    ip_address: str | None = None
    ami_id: str | None = None
    ami_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    offline_since: str | None = None  # kept by the store: when discovery first found it offline


@dataclass(frozen=True, slots=True)
class CommandInvocation:
    """One command on one instance, as last read."""

    command_id: str
    instance_id: str
    status: CommandStatus
    exit_code: int | None = None
    output: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class OfferedUpdate:
    kb: str
    title: str


@dataclass(frozen=True, slots=True)
class ScanReport:
    """What a scan found on a server: OS, full build, installation type, KBs, pending reboot."""

    instance_id: str
    os_caption: str
    build: str  # full four-part build, e.g. "10.0.20348.2227" (CurrentBuild + UBR)
    installation_type: str  # "Server" or "Server Core"
    installed_kbs: frozenset[str]  # canonical "KB1234567"
    offered: tuple[OfferedUpdate, ...]
    pending_reboot: bool
    scanned_at: datetime
    boot_time: datetime | None = None  # LastBootUpTime (UTC): proves a reboot happened
    error: str | None = None  # part of the scan failed (Windows Update unreachable): offered is empty

    @property
    def offered_kbs(self) -> frozenset[str]:
        return frozenset(update.kb for update in self.offered)


@dataclass(frozen=True, slots=True)
class InstallReport:
    """What the install script reported for one KB (Windows Update Agent result and HRESULT)."""

    kb: str
    result_code: int  # WUA OperationResultCode: 2 Succeeded, 3 SucceededWithErrors, 4 Failed, 5 Aborted
    hresult: int  # 0 on success; e.g. 0x80240017 (WU_E_NOT_APPLICABLE) as a signed 32-bit int
    reboot_required: bool
    message: str = ""
    # What the script found, when it says: "installed", "already-installed" (a retry after a
    # finished install), "not-applicable", "not-approved" (WSUS), "hidden", "failed".
    status: str | None = None

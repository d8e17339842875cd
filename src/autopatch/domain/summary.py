"""The end-of-run summary: what a patch run (or a single-KB retry) did, per server.

Built by the engine from stored states (never from memory), rendered as plain text and HTML by
``autopatch.notify.render``, and delivered by the notifiers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class KbOutcome:
    kb: str
    reason: str = ""  # why it failed or was skipped ("HRESULT 0x80070643 …", "Superseded by KB…")


@dataclass(frozen=True, slots=True)
class ServerSummary:
    instance_id: str
    name: str
    product: str | None
    already_installed: tuple[str, ...] = ()
    installed_now: tuple[str, ...] = ()
    failed: tuple[KbOutcome, ...] = ()
    skipped: tuple[KbOutcome, ...] = ()  # Not Available, Superseded, left Pending by --max-errors…
    reboots: int = 0
    duration_seconds: float = 0.0
    build_before: str | None = None
    build_after: str | None = None
    status: str = "Done"  # the run's server status: Done | Failed | Skipped | Cancelled | Pending | Running
    reason: str = ""  # why it was skipped or failed as a whole (offline, not identified…)


@dataclass(frozen=True, slots=True)
class RunSummary:
    run_id: str
    kind: str  # "patch" | "retry"
    status: str  # Succeeded | Failed | Cancelled | Halted
    started_at: datetime
    finished_at: datetime
    servers: tuple[ServerSummary, ...] = field(default_factory=tuple)
    reason: str = ""  # why it ended so (for Halted: the ring whose health gate failed, and which check)

    @property
    def failed_servers(self) -> int:
        return sum(1 for server in self.servers if server.failed)

    @property
    def installed_count(self) -> int:
        return sum(len(server.installed_now) for server in self.servers)

"""Patch-run rules: per-(server, KB) states, their legal transitions, install ordering, result codes.

Every state change of a run goes through ``check_transition``; the table below is the whole
state machine, so an illegal move (e.g. Success → InProgress, which would install a KB twice)
fails loudly with the states named.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from autopatch.domain.fleet import InstallReport
from autopatch.errors import StateError


class KbState(StrEnum):
    """The life of one KB on one server within a run."""

    PENDING = "Pending"  # to be installed
    IN_PROGRESS = "InProgress"  # command sent (or about to be): never send again, re-poll
    SUCCESS = "Success"  # installed and verified
    FAILED = "Failed"  # the install failed; only an explicit retry starts it again
    ALREADY_INSTALLED = "Already Installed"  # present before the run (hotfix or build)
    SUPERSEDED = "Superseded"  # a newer KB for the product covers it: never installed
    NOT_AVAILABLE = "Not Available"  # Windows Update does not offer it to this server
    CANCELLED = "Cancelled"  # the run was cancelled before this KB started
    HELD = "Held"  # a baseline rule or a known-issue advisory held it back; the reason names the rule

    @property
    def is_terminal(self) -> bool:
        return self not in (KbState.PENDING, KbState.IN_PROGRESS)


class RunStatus(StrEnum):
    PENDING = "Pending"  # servers claimed; being scanned and planned, or waiting for its driver
    RUNNING = "Running"
    CANCELLING = "Cancelling"  # cancelled: KBs not started are Cancelled, in-flight installs finish
    PAUSED = "Paused"  # its maintenance window closed: no driver, KBs not started wait for the next one
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    HALTED = "Halted"  # a ring failed its health gate: later rings were never started (domain/ring_gates.py)

    @property
    def is_terminal(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.HALTED)


# A Paused run is unfinished: it keeps its servers (what is left is installed in its next window).
UNFINISHED_RUN_STATUSES = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.CANCELLING, RunStatus.PAUSED)
# A server of an unfinished run with work left: no other run may touch it meanwhile.
HELD_SERVER_STATUSES = ("Pending", "Running")


# None = the KB has no state yet (classification at planning time).
TRANSITIONS: dict[KbState | None, frozenset[KbState]] = {
    None: frozenset(
        {KbState.PENDING, KbState.ALREADY_INSTALLED, KbState.SUPERSEDED, KbState.NOT_AVAILABLE, KbState.HELD}
    ),
    KbState.PENDING: frozenset({KbState.IN_PROGRESS, KbState.CANCELLED}),
    KbState.IN_PROGRESS: frozenset({KbState.SUCCESS, KbState.FAILED}),
    KbState.FAILED: frozenset({KbState.PENDING}),  # an explicit single-KB retry
    KbState.NOT_AVAILABLE: frozenset({KbState.PENDING}),  # retry once Windows Update offers it
    KbState.SUCCESS: frozenset(),
    KbState.ALREADY_INSTALLED: frozenset(),
    KbState.SUPERSEDED: frozenset(),
    KbState.CANCELLED: frozenset({KbState.PENDING}),
    KbState.HELD: frozenset(),  # never installed by its run: approve it by name, then plan again
}


def check_transition(current: KbState | None, new: KbState, where: str = "") -> None:
    """Raise ``StateError`` unless ``current → new`` is in the table."""
    if new not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (terminal)"
        raise StateError(f"{where}: illegal transition {current or 'new'} → {new}; allowed from there: {allowed}")


class RebootPolicy(StrEnum):
    NEVER = "never"
    IF_REQUIRED = "if-required"  # reboot after a KB that needs it, before the next KB
    ALWAYS_AT_END = "always-at-end"


def install_order(subtype: str | None, build: tuple[int, ...] | None, kb: int) -> tuple[int, tuple[int, ...], int]:
    """Servicing stack first, then the cumulative update, then everything else (oldest first)."""
    if subtype == "Servicing Stack Update":
        rank = 0
    elif subtype in ("Security Update", "Monthly Rollup", "Security Only"):
        rank = 1
    else:
        rank = 2
    return rank, build or (), kb


WU_E_NOT_APPLICABLE = -2145124329  # 0x80240017
# What the install script says when Windows Update will not install the KB, and what that means.
_NOT_OFFERED = {
    "not-applicable": "not applicable to this server (WU_E_NOT_APPLICABLE)",
    "not-approved": "not approved on the WSUS server",
    "hidden": "hidden in Windows Update on this server",
}
_SUCCEEDED = (2, 3)  # OperationResultCode Succeeded, SucceededWithErrors
REBOOT_EXIT_CODE = 3010  # ERROR_SUCCESS_REBOOT_REQUIRED


@dataclass(frozen=True, slots=True)
class InstallVerdict:
    """How a finished install command is read."""

    outcome: str  # "success" | "not-applicable" | "failure"
    reboot_required: bool
    reason: str


def hresult_text(hresult: int) -> str:
    return f"0x{hresult & 0xFFFFFFFF:08X}"


def classify_install(report: InstallReport | None, exit_code: int | None, output: str) -> InstallVerdict:
    """Windows result codes → success, reboot required (3010), not applicable, or a known failure."""
    if report is None:
        if exit_code in (0, REBOOT_EXIT_CODE):
            return InstallVerdict("success", exit_code == REBOOT_EXIT_CODE, f"exit code {exit_code}")
        return InstallVerdict("failure", False, f"exit code {exit_code}: {output.strip()[-200:]}")
    if report.status == "already-installed":  # a retry after a finished install: nothing left to do
        return InstallVerdict("success", report.reboot_required, report.message or "already installed")
    if report.status in _NOT_OFFERED:
        return InstallVerdict("not-applicable", False, f"{_NOT_OFFERED[report.status]}: {report.message}"[:300])
    if report.result_code in _SUCCEEDED and report.hresult >= 0:
        return InstallVerdict("success", report.reboot_required, report.message or "installed")
    if report.hresult == WU_E_NOT_APPLICABLE:
        return InstallVerdict("not-applicable", False, f"{hresult_text(report.hresult)} WU_E_NOT_APPLICABLE")
    return InstallVerdict(
        "failure", False, f"result code {report.result_code}, HRESULT {hresult_text(report.hresult)} {report.message}"
    )

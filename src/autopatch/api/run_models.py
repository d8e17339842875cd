"""Bodies of ``/runs``: a run as ``autopatch runs`` and ``run show`` print it, a run request and its dry-run plan."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from autopatch.api.models import ExposureTotals
from autopatch.api.snapshot_models import RunServerSnapshot
from autopatch.domain.patching import RebootPolicy
from autopatch.domain.rings import HEALTH_SCRIPT_MAX_BYTES, RINGS_TEXT_LIMIT


class RunListItem(BaseModel):
    run_id: str
    kind: str
    status: str
    created_at: str
    finished_at: str | None
    owner: str | None
    reason: str


class RunAttempt(BaseModel):
    attempt: int
    command_id: str | None
    phase: str
    status: str | None
    exit_code: int | None
    hresult: int | None
    sent_at: str | None
    finished_at: str | None
    output_tail: str


class RunTransition(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_state: str | None = Field(alias="from")
    to: str
    at: str
    note: str


class RunKb(BaseModel):
    kb: str
    state: str
    reason: str
    subtype: str | None
    reboot_required: bool
    updated_at: str
    attempts: list[RunAttempt]
    transitions: list[RunTransition]


class RunServerView(BaseModel):
    instance_id: str
    name: str
    product: str | None
    status: str
    reason: str
    build_before: str | None
    build_after: str | None
    reboots: int
    started_at: str | None
    finished_at: str | None
    snapshot: RunServerSnapshot | None = Field(default=None, description="EBS snapshots before its first KB")
    kbs: list[RunKb]


class RunNotification(BaseModel):
    notifier: str
    ok: bool
    error: str | None


class RunExposure(BaseModel):
    """Open CVEs on the run's servers: from the plan's scans, and from a scan once the run is over."""

    before: ExposureTotals | None
    after: ExposureTotals | None


class RunDetail(BaseModel):
    run_id: str
    kind: str
    status: str
    reason: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    options: dict[str, Any]
    notifications: list[RunNotification]
    exposure: RunExposure
    rings: list[RunRingView] = Field(default_factory=list, description="in order; empty for a run without rings")
    servers: list[RunServerView]


class RunRequest(BaseModel):
    """The options of ``autopatch patch``: exactly one of ``instance_ids``, ``all`` or ``tag``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    instance_ids: list[str] = Field(default_factory=list, max_length=10_000)
    all_servers: bool = Field(default=False, alias="all")
    tag: str | None = Field(default=None, max_length=300, description="KEY=VALUE, e.g. Environment=test")
    kbs: list[str] = Field(default_factory=list, max_length=1000, description="only these KBs")
    severity: str | None = Field(default=None, max_length=200, description="minimum severity, e.g. Important")
    concurrency: int | Annotated[str, Field(max_length=8)] = Field(
        default=10, description='servers at once: a count (1-1000), or a share of the run\'s servers such as "10%"'
    )
    max_errors: int | Annotated[str, Field(max_length=8)] | None = Field(
        default=None, description='stop starting servers after this many failed: a count, or a share such as "5%"'
    )
    rings: str | None = Field(
        default=None,
        max_length=RINGS_TEXT_LIMIT,
        description='ring by ring, a health gate after each, e.g. "canary=Ring=canary,10%;rest=*"',
    )
    health_script: str | None = Field(
        default=None,
        max_length=HEALTH_SCRIPT_MAX_BYTES,
        description="PowerShell text run on each server of a ring at its gate (exit 0 = healthy); admin only",
    )
    soak: int | Annotated[str, Field(max_length=20)] | None = Field(
        default=None,
        description='after a ring passes its gate, wait this long ("30m", "2h" or seconds), then check again',
    )
    reboot: RebootPolicy = RebootPolicy.IF_REQUIRED
    dry_run: bool = Field(default=False, description="answer the plan; nothing is installed or stored")
    baseline: str | None = Field(
        default=None, max_length=200, description="judge every server by this baseline (default: those its tags match)"
    )
    as_of: str | None = Field(
        default=None, max_length=40, description='with "dry_run": true, plan as on this date (YYYY-MM-DD)'
    )
    snapshot: bool = Field(default=False, description="EBS snapshots of each server's volumes before its first KB")
    exploited_only: bool = Field(
        default=False, description="only KBs closing CVEs Microsoft marks exploited or CISA lists (KEV)"
    )


class HeldKb(BaseModel):
    kb: str
    rule: str = Field(description="the baseline rule or known-issue advisory that held it back")


class PlannedServer(BaseModel):
    instance_id: str
    name: str
    product: str | None
    build: str | None
    kbs_in_order: list[str]
    expected_reboots: int
    open_exploited: int = Field(default=0, description="open exploited/KEV CVEs: such servers start first")
    note: str
    baseline: str = Field(default="", description="the baselines it was judged by (a+b); empty for none")
    held: list[HeldKb] = Field(default_factory=list, description="KBs held back, each with the rule that held it")
    ring: str | None = Field(default=None, description="its ring, for a request with rings")


class RingServerView(BaseModel):
    instance_id: str
    name: str
    check: str = Field(description="Not Checked, Checking, Passed, Failed or Skipped (not patched)")
    detail: str
    checked_at: str | None


class RunRingView(BaseModel):
    """One ring of a run started with rings, and its health gate."""

    name: str
    selector: str
    status: str = Field(
        description="Waiting, Patching, Checking, Soaking, Rechecking, Passed, Failed, Not Started, Cancelled"
    )
    reason: str
    started_at: str | None
    finished_at: str | None
    soak_until: str | None
    soak_remaining_seconds: int | None
    counts: dict[str, int]
    servers: list[RingServerView]


class RunPlanView(BaseModel):
    kbs_to_install: int
    servers: list[PlannedServer]


class RunCancelled(BaseModel):
    run_id: str
    status: str = Field(description="Cancelled, or Cancelling while installs in flight finish")


class RunAccepted(BaseModel):
    run_id: str
    status: str = Field(description="Pending: scanning, planning and installing continue in the server")


class RetryRequest(BaseModel):
    """One KB on one server, as ``autopatch retry INSTANCE KB``."""

    model_config = ConfigDict(extra="forbid")

    instance_id: str = Field(max_length=200)
    kb: str = Field(max_length=200, description="e.g. KB5034129")

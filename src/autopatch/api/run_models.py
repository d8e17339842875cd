"""Bodies of ``/runs``: a run as ``autopatch runs`` and ``run show`` print it, a run request and its dry-run plan."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from autopatch.api.models import ExposureTotals
from autopatch.domain.patching import RebootPolicy


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
    servers: list[RunServerView]


class RunRequest(BaseModel):
    """The options of ``autopatch patch``: exactly one of ``instance_ids``, ``all`` or ``tag``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    instance_ids: list[str] = Field(default_factory=list, max_length=10_000)
    all_servers: bool = Field(default=False, alias="all")
    tag: str | None = Field(default=None, max_length=300, description="KEY=VALUE, e.g. Environment=test")
    kbs: list[str] = Field(default_factory=list, max_length=1000, description="only these KBs")
    severity: str | None = Field(default=None, max_length=200, description="minimum severity, e.g. Important")
    concurrency: int = Field(default=10, ge=1, le=1000)
    max_errors: int | None = Field(default=None, ge=1)
    reboot: RebootPolicy = RebootPolicy.IF_REQUIRED
    dry_run: bool = Field(default=False, description="answer the plan; nothing is installed or stored")


class PlannedServer(BaseModel):
    instance_id: str
    name: str
    product: str | None
    build: str | None
    kbs_in_order: list[str]
    expected_reboots: int
    note: str


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

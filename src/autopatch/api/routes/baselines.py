"""``/baselines``: patch baselines, as ``autopatch baseline`` shows and changes them (viewers read, admins change).

A baseline decides which KBs a plan installs on the servers it applies to (``domain/baselines.py``);
a run started with ``"baseline": NAME`` (``POST /runs``) uses it for every server, and a dry run
with ``"as_of": "YYYY-MM-DD"`` previews what it would have approved that day. Every change is
audited (``baseline.create``, ``baseline.update``, ``baseline.delete``), refused ones included.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from autopatch.api.deps import AuditTrail, StoreDep, audited, require
from autopatch.baselines import (
    create_baseline,
    delete_baseline,
    list_baseline_views,
    replace_baseline,
    show_baseline,
)
from autopatch.domain.access import Role
from autopatch.domain.baselines import CLASSIFICATIONS, MAX_GROUPS, MAX_KBS, Baseline, RejectedKb

router = APIRouter(prefix="/baselines", tags=["baselines"])
READERS = [Depends(require(Role.VIEWER))]


class RejectedKbBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kb: str = Field(max_length=200, description="e.g. KB5034770")
    reason: str = Field(max_length=2000, description="why it is never installed")


class BaselineFields(BaseModel):
    """A baseline's rules and by-name decisions (every field; the PUT body replaces them all)."""

    model_config = ConfigDict(extra="forbid")

    min_severity: str | None = Field(default=None, max_length=20, description="Critical, Important, Moderate or Low")
    classifications: list[str] = Field(
        default_factory=list, max_length=len(CLASSIFICATIONS), description="empty: all; " + ", ".join(CLASSIFICATIONS)
    )
    approve_after_days: int = Field(default=0, description="days after its release before a KB is approved (0-365)")
    approved: list[str] = Field(default_factory=list, max_length=MAX_KBS, description="KBs approved by name")
    rejected: list[RejectedKbBody] = Field(default_factory=list, max_length=MAX_KBS)
    exploited_first: bool = Field(default=False, description="KBs fixing an exploited CVE: no wait, installed first")
    groups: list[str] = Field(default_factory=list, max_length=MAX_GROUPS, description="Tag=Value; servers with it")
    rings: str | None = Field(default=None, max_length=4000, description="rollout rings (kept as text)")
    snapshot: bool = Field(default=False, description="snapshot servers before patching (kept)")

    def baseline(self, name: str) -> Baseline:
        return Baseline(
            name=name,
            min_severity=self.min_severity,
            classifications=tuple(self.classifications),
            approve_after_days=self.approve_after_days,
            approved=tuple(self.approved),
            rejected=tuple(RejectedKb(entry.kb, entry.reason) for entry in self.rejected),
            exploited_first=self.exploited_first,
            groups=tuple(self.groups),
            rings=self.rings,
            snapshot=self.snapshot,
        )


class BaselineCreate(BaselineFields):
    name: str = Field(max_length=200, description="1-64 letters, digits, '.', '_' or '-'")


class RejectedKbView(BaseModel):
    kb: str
    reason: str


class BaselineServer(BaseModel):
    instance_id: str
    name: str


class BaselineView(BaseModel):
    name: str
    min_severity: str | None
    classifications: list[str]
    approve_after_days: int
    approved: list[str]
    rejected: list[RejectedKbView]
    exploited_first: bool
    groups: list[str]
    rings: str | None
    snapshot: bool
    created_at: str
    updated_at: str
    rules: list[str] = Field(description="the rules in words, as `autopatch baseline show` prints them")
    servers: list[BaselineServer] = Field(description="known servers its groups reach now")


class BaselineList(BaseModel):
    items: list[BaselineView]


class BaselineDeleted(BaseModel):
    name: str
    deleted: bool


@router.get("", response_model=BaselineList, dependencies=READERS)
def list_baselines(store: StoreDep) -> dict[str, Any]:
    """Every baseline, by name, with its rules in words and the servers it applies to now."""
    return {"items": list_baseline_views(store)}


@router.get("/{name}", response_model=BaselineView, dependencies=READERS)
def get_baseline(name: str, store: StoreDep) -> dict[str, Any]:
    """One baseline (404 for an unknown name)."""
    return show_baseline(store, name)


@router.post("", response_model=BaselineView, status_code=201)
def post_baseline(
    body: BaselineCreate,
    store: StoreDep,
    trail: Annotated[AuditTrail, Depends(audited("baseline.create", Role.ADMIN))],
) -> dict[str, Any]:
    """Create a baseline (admin): 201, 409 when the name is taken, 422 naming the field and rule."""
    trail.target = body.name
    return create_baseline(store, body.baseline(body.name))


@router.put("/{name}", response_model=BaselineView)
def put_baseline(
    name: str,
    body: BaselineFields,
    store: StoreDep,
    trail: Annotated[AuditTrail, Depends(audited("baseline.update", Role.ADMIN))],
) -> dict[str, Any]:
    """Replace every rule of a baseline (admin); its name and creation time stay."""
    return replace_baseline(store, name, body.baseline(name))


@router.delete("/{name}", response_model=BaselineDeleted)
def remove_baseline(
    name: str, store: StoreDep, trail: Annotated[AuditTrail, Depends(audited("baseline.delete", Role.ADMIN))]
) -> dict[str, Any]:
    """Forget a baseline (admin); runs already planned with it keep their plans."""
    delete_baseline(store, name)
    return {"name": name, "deleted": True}

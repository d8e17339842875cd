"""``/windows``: maintenance windows as ``autopatch window`` shows them; admins change them, viewers read.

The same steps as the CLI (``autopatch.maintenance_windows``); every change is audited
(``window.create``, ``window.update``, ``window.delete``), refusals included.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from autopatch.api.deps import AuditTrail, StoreDep, audited, require
from autopatch.api.models import Limit, Offset, Page
from autopatch.domain.access import Role
from autopatch.maintenance_windows import (
    MAX_COUNT,
    create_window,
    delete_window,
    next_rows,
    update_window,
    window_detail,
    window_rows,
)

# Mutating routes check the role in ``audited`` (so a refusal is logged too); reads check it here.
router = APIRouter(prefix="/windows", tags=["maintenance windows"])
VIEWERS = [Depends(require(Role.VIEWER))]
Count = Annotated[int, Query(ge=1, le=MAX_COUNT, description=f"occurrences listed (1 to {MAX_COUNT})")]


class WindowSettings(BaseModel):
    """A window's settings, each checked as ``autopatch window create`` checks its options."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(max_length=200, description="five cron fields, read in `timezone`, e.g. '0 2 * * SAT'")
    duration: str = Field(max_length=20, description="how long each occurrence lasts: 4h, 90m, 1h30m")
    cutoff: str = Field("0m", max_length=20, description="no new KB starts this long before the end")
    group: str = Field(max_length=400, description="the servers patched: tag KEY=VALUE")
    baseline: str | None = Field(None, max_length=100, description="the baseline the runs plan with")
    timezone: str = Field("UTC", max_length=100, description="IANA time zone, e.g. Europe/Berlin")


class WindowRequest(WindowSettings):
    name: str = Field(max_length=100, description="1 to 64 letters, digits, '.', '_' or '-'")


class Occurrence(BaseModel):
    window: str
    starts_at: str = Field(description="UTC")
    starts_local: str = Field(description="the start in the window's own time zone")
    cutoff_at: str = Field(description="no new KB starts from here on (UTC)")
    closes_at: str = Field(description="UTC")


class WindowItem(BaseModel):
    name: str
    cron: str
    timezone: str
    duration: str
    cutoff: str
    group: str
    baseline: str | None
    created_at: str
    updated_at: str
    open_now: bool
    accepting_new_kbs: bool = Field(description="open, and before its cutoff: a run may start KBs now")
    current: Occurrence | None
    next: list[Occurrence]


class OccurrenceActedOn(BaseModel):
    starts_at: str
    run_id: str | None = Field(description="the run this occurrence started or continued")
    run_status: str | None
    run_reason: str | None
    note: str = Field(description="why no run was started, when none was")
    claimed_by: str


class WindowDetail(WindowItem):
    occurrences: list[OccurrenceActedOn] = Field(description="newest first")


def _now() -> datetime:
    return datetime.now(UTC)


@router.get("", response_model=Page[WindowItem], dependencies=VIEWERS)
def list_windows(store: StoreDep, limit: Limit = 100, offset: Offset = 0, count: Count = 3) -> dict[str, Any]:
    """Every window by name, with whether it is open now and its next ``count`` occurrences."""
    rows = window_rows(store, _now(), count)
    return {"items": rows[offset : offset + limit], "total": len(rows)}


@router.post("", response_model=WindowItem, status_code=201)
def post_window(
    body: WindowRequest, store: StoreDep, trail: Annotated[AuditTrail, Depends(audited("window.create", Role.ADMIN))]
) -> dict[str, Any]:
    """Create a window (admin): 409 when the name is taken, 404 for an unknown baseline."""
    trail.target = body.name
    row = create_window(store, _now(), **body.model_dump())
    trail.detail = f"{row['cron']} {row['timezone']} for {row['duration']}, group {row['group']}"
    return row


@router.get("/{name}", response_model=WindowDetail, dependencies=VIEWERS)
def get_window(name: str, store: StoreDep, count: Count = 5) -> dict[str, Any]:
    """One window: its next occurrences and the runs its past occurrences started or continued."""
    return window_detail(store, name, _now(), count)


@router.put("/{name}", response_model=WindowItem)
def put_window(
    name: str,
    body: WindowSettings,
    store: StoreDep,
    trail: Annotated[AuditTrail, Depends(audited("window.update", Role.ADMIN))],
) -> dict[str, Any]:
    """Replace a window's settings (admin); a run under way keeps the times it started with."""
    values = body.model_dump()
    values["baseline"] = values["baseline"] or ""  # absent: no baseline (a PUT replaces the whole)
    row = update_window(store, name, _now(), **values)
    trail.detail = f"{row['cron']} {row['timezone']} for {row['duration']}, group {row['group']}"
    return row


@router.delete("/{name}", status_code=204)
def remove_window(
    name: str, store: StoreDep, trail: Annotated[AuditTrail, Depends(audited("window.delete", Role.ADMIN))]
) -> None:
    """Delete a window (admin); 409 while one of its runs is unfinished (cancel it first)."""
    delete_window(store, name)


@router.get("/{name}/next", response_model=Page[Occurrence], dependencies=VIEWERS)
def next_occurrences(name: str, store: StoreDep, count: Count = 5) -> dict[str, Any]:
    """The window's next ``count`` occurrences."""
    rows = next_rows(store, name, _now(), count)
    return {"items": rows, "total": len(rows)}

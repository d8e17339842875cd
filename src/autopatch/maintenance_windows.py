"""Maintenance-window steps shared by the CLI and the API: create, change, list, show, delete, next occurrences.

Each holds its rule once (what a window looks like in JSON, when one may be deleted, how a paused
run says when it continues); ``cli/windows.py`` prints what these return and
``api/routes/windows.py`` serialises it. Times are UTC ISO 8601, each occurrence also in the
window's own zone (``starts_local``), since "02:00 on Saturday" is what its author wrote.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from autopatch.domain.patching import RunStatus
from autopatch.domain.runs import RunRecord
from autopatch.domain.windows import (
    MaintenanceWindow,
    Occurrence,
    build_window,
    format_duration,
    parse_name,
    window_of_run,
)
from autopatch.engine.policy import find_baseline
from autopatch.errors import ConflictError, NotFoundError, ValidationError
from autopatch.store.base import BaselineStore, RunStore, Store, WindowStore

MAX_COUNT = 100  # occurrences listed at once


def occurrence_row(window: MaintenanceWindow, occurrence: Occurrence) -> dict[str, Any]:
    local = occurrence.starts_at.astimezone(ZoneInfo(window.timezone))
    zone = local.tzname() if local.tzname() == window.timezone else f"{local.tzname()} ({window.timezone})"
    return {
        "window": window.name,
        "starts_at": occurrence.starts_at.isoformat(),
        "starts_local": f"{local:%Y-%m-%d %H:%M} {zone}",
        "cutoff_at": occurrence.cutoff_at.isoformat(),
        "closes_at": occurrence.closes_at.isoformat(),
    }


def window_row(window: MaintenanceWindow, at: datetime, count: int = 3) -> dict[str, Any]:
    """A window as ``window list --format json`` shows it: its definition, whether it is open, what comes next."""
    current = window.occurrence_at(at)
    return {
        "name": window.name,
        "cron": window.cron,
        "timezone": window.timezone,
        "duration": format_duration(window.duration),
        "cutoff": format_duration(window.cutoff),
        "group": window.group,
        "baseline": window.baseline,
        "created_at": window.created_at,
        "updated_at": window.updated_at,
        "open_now": current is not None,
        "accepting_new_kbs": current is not None and current.accepts_new_kbs(at),
        "current": occurrence_row(window, current) if current else None,
        "next": [occurrence_row(window, o) for o in window.next_occurrences(at, _count(count))],
    }


def _count(count: int) -> int:
    if not 1 <= count <= MAX_COUNT:
        raise ValidationError("count", count, f"between 1 and {MAX_COUNT} occurrences")
    return count


def require_window(store: WindowStore, name: str) -> MaintenanceWindow:
    window = store.get_window(parse_name(name, "window"))
    if window is None:
        raise NotFoundError(f"window: {name!r} is not a known window (see `autopatch window list`)")
    return window


def create_window(store: Store, at: datetime, **values: Any) -> dict[str, Any]:
    """Check every value (errors name the field; a baseline must exist) and store a new window."""
    return window_row(store.create_window(_checked(store, build_window(**values))), at)


def _checked(store: BaselineStore, window: MaintenanceWindow) -> MaintenanceWindow:
    if window.baseline is not None:
        find_baseline(store, window.baseline)  # NotFoundError naming it
    return window


def update_window(store: Store, name: str, at: datetime, **changes: Any) -> dict[str, Any]:
    """Change some of a window's settings (``None`` keeps one); the whole is checked again.

    It applies from the next occurrence on: a run under way keeps the times it started with.
    """
    current = require_window(store, name)
    values: dict[str, Any] = {
        "name": current.name,
        "cron": current.cron,
        "duration": format_duration(current.duration),
        "cutoff": format_duration(current.cutoff),
        "group": current.group,
        "timezone": current.timezone,
        "baseline": current.baseline,
    }
    values |= {key: value for key, value in changes.items() if value is not None}
    changed = _checked(store, build_window(**values))
    return window_row(store.replace_window(replace(changed, created_at=current.created_at)), at)


def delete_window(store: Store, name: str) -> None:
    """Forget a window; refused while a run of it is unfinished (it could never continue otherwise)."""
    window = require_window(store, name)
    for run in store.unfinished_runs():
        if window_of_run(run.options) == window.name:
            raise ConflictError(
                f"window: {window.name} has unfinished run {run.run_id} ({run.status}); "
                f"`autopatch cancel {run.run_id}` first"
            )
    store.delete_window(window.name)


def window_rows(store: WindowStore, at: datetime, count: int = 3) -> list[dict[str, Any]]:
    return [window_row(window, at, count) for window in store.list_windows()]


def window_detail(store: Store, name: str, at: datetime, count: int = 5) -> dict[str, Any]:
    """``window show``: the window, its next occurrences, and each occurrence acted on with its run's status."""
    window = require_window(store, name)
    occurrences = []
    for record in store.window_occurrences(window.name, 20):
        run = _run_or_none(store, record.run_id)
        occurrences.append(
            {
                "starts_at": record.starts_at,
                "run_id": record.run_id,
                "run_status": str(run.status) if run else None,
                "run_reason": run.reason if run else None,
                "note": record.note,
                "claimed_by": record.claimed_by,
            }
        )
    return window_row(window, at, count) | {"occurrences": occurrences}


def _run_or_none(store: RunStore, run_id: str | None) -> RunRecord | None:
    if run_id is None:
        return None
    try:
        return store.get_run(run_id)
    except NotFoundError:
        return None


def next_rows(store: WindowStore, name: str | None, at: datetime, count: int = 5) -> list[dict[str, Any]]:
    """``window next``: the next occurrences of one window, or of every window merged in time order."""
    wanted = _count(count)
    windows = [require_window(store, name)] if name is not None else store.list_windows()
    rows = [occurrence_row(w, o) for w in windows for o in w.next_occurrences(at, wanted)]
    return sorted(rows, key=lambda row: (row["starts_at"], row["window"]))[:wanted]


def continues_at(store: WindowStore, run: RunRecord, at: datetime) -> str | None:
    """When a paused run continues: its window's next occurrence (None when not paused, or the window is gone)."""
    if run.status is not RunStatus.PAUSED:
        return None
    name = window_of_run(run.options)
    window = store.get_window(name) if name else None
    if window is None:
        return None
    upcoming = window.next_occurrences(at, 1)
    return upcoming[0].starts_at.isoformat() if upcoming else None

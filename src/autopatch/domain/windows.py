"""Maintenance windows: when a scheduled patch run may start KBs, and when what is left must wait.

A window is a cron expression read in the window's own time zone (``0 2 * * SAT`` in
Europe/Berlin is 02:00 Berlin time on Saturdays, summer and winter), a duration, and a cutoff:
an occurrence starts at the cron time, ends ``duration`` later, and accepts new KBs only until
``cutoff`` before its end, so the last KB started has room to finish and reboot. A KB already
being installed when the cutoff passes always finishes (a KB is never cut half-way); what is not
started waits for the next occurrence. Patch Manager's maintenance windows have the same cutoff
("stop initiating tasks"); Azure Update Manager reserves a fixed time for the final reboot.

Times across a change of clocks: the cron expression is evaluated by ``cronsim`` in the zone
(a time skipped in spring fires at the first minute after the gap, a time repeated in autumn
fires once, as Vixie cron does), and the duration is elapsed time: a 4-hour window opened at
01:00 on the night clocks go back closes at 04:00 local time, four real hours later. Every time
leaves this module in UTC.

Pure: no I/O, no clock (every function takes the moment it is asked about).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from autopatch.domain.baselines import parse_baseline_name, parse_group, split_group
from autopatch.errors import ValidationError

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
NAME_RULE = "a name is 1 to 64 ASCII letters, digits, '.', '_' or '-', e.g. saturday-night"
_DURATION = re.compile(r"(?:([0-9]{1,3})d)?(?:([0-9]{1,4})h)?(?:([0-9]{1,5})m)?", re.ASCII | re.IGNORECASE)
CRON_RULE = "a cron expression has five fields: minute hour day-of-month month day-of-week, e.g. '0 2 * * SAT'"
DURATION_RULE = "a duration is days, hours and minutes such as 4h, 90m, 1h30m or 2d"
MAX_DURATION = timedelta(days=7)
_ZONE = re.compile(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+){0,2}", re.ASCII)
PAUSED_REASON = "Paused: window closed"
_MINUTE = timedelta(minutes=1)

# Keys a window run carries in its options (besides those of ``autopatch patch``).
WINDOW_KEY = "window"
STARTS_KEY = "window_starts_at"
CUTOFF_KEY = "window_cutoff"
CLOSES_KEY = "window_closes_at"
BASELINE_KEY = "baseline"


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One opening of a window, in UTC: KBs may start in [starts_at, cutoff_at); it closes at closes_at."""

    starts_at: datetime
    cutoff_at: datetime
    closes_at: datetime

    def accepts_new_kbs(self, at: datetime) -> bool:
        return self.starts_at <= at < self.cutoff_at

    def contains(self, at: datetime) -> bool:
        return self.starts_at <= at < self.closes_at


@dataclass(frozen=True, slots=True)
class OccurrenceRecord:
    """What the scheduler did with one occurrence: who claimed it, and the run it started or continued."""

    window: str
    starts_at: str  # UTC ISO 8601, as ``Occurrence.starts_at.isoformat()``
    claimed_by: str
    claimed_at: str
    run_id: str | None = None
    note: str = ""  # why nothing was started ("no server has tag …"), or "" when a run was


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """A named schedule for patching one group of servers (those with tag ``group_key=group_value``)."""

    name: str
    cron: str
    duration: timedelta
    cutoff: timedelta
    group_key: str
    group_value: str
    timezone: str = "UTC"
    baseline: str | None = None  # a baseline's name, passed to the run's options as ``baseline``
    created_at: str = ""
    updated_at: str = ""

    @property
    def group(self) -> str:
        return f"{self.group_key}={self.group_value}"

    def occurrence(self, starts_at: datetime) -> Occurrence:
        start = starts_at.astimezone(UTC)
        closes = start + self.duration
        return Occurrence(start, closes - self.cutoff, closes)

    def starts_after(self, after: datetime) -> Iterator[datetime]:
        """Start times strictly after ``after`` (to the minute), in UTC, for ever."""
        zone = ZoneInfo(self.timezone)
        for start in CronSim(self.cron, after.astimezone(zone)):
            yield start.astimezone(UTC)

    def next_occurrences(self, after: datetime, count: int) -> list[Occurrence]:
        """The ``count`` occurrences that start after ``after``."""
        return [self.occurrence(start) for start in islice(self.starts_after(after), max(0, count))]

    def occurrence_at(self, at: datetime) -> Occurrence | None:
        """The occurrence open at ``at`` (the latest one started by then, if it has not closed yet).

        With occurrences that overlap (a cron firing more often than the duration), the latest
        started wins: it closes last.
        """
        zone = ZoneInfo(self.timezone)
        # cronsim's reverse iteration yields times strictly before its start: start a minute later
        # so that an occurrence starting in the very minute of ``at`` counts.
        probe = (at.astimezone(UTC).replace(second=0, microsecond=0) + _MINUTE).astimezone(zone)
        start = next(CronSim(self.cron, probe, reverse=True), None)
        if start is None:
            return None
        occurrence = self.occurrence(start)
        return occurrence if occurrence.contains(at) else None

    def open_for_new_kbs(self, at: datetime) -> Occurrence | None:
        """The occurrence in which a KB may start at ``at`` (before its cutoff), if any."""
        occurrence = self.occurrence_at(at)
        return occurrence if occurrence is not None and occurrence.accepts_new_kbs(at) else None

    def closes_at(self, at: datetime) -> datetime | None:
        """When the occurrence open at ``at`` closes (None: the window is closed at ``at``)."""
        occurrence = self.occurrence_at(at)
        return occurrence.closes_at if occurrence else None


def parse_name(value: object, field: str = "name") -> str:
    if not isinstance(value, str) or _NAME.fullmatch(value) is None:
        raise ValidationError(field, value, NAME_RULE)
    return value


def parse_cron(value: object, field: str = "cron") -> str:
    """Five fields (minute hour day-of-month month day-of-week), as cron and Patch Manager read them."""
    text = " ".join(value.split()) if isinstance(value, str) else ""
    if not text or len(text) > 200 or not text.isascii():
        raise ValidationError(field, value, CRON_RULE)
    try:
        CronSim(text, datetime(2024, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ValidationError(field, value, f"{exc}: {CRON_RULE}") from exc
    return text


def parse_duration(value: object, field: str = "duration", allow_zero: bool = False) -> timedelta:
    """``4h``, ``90m``, ``1h30m``, ``2d`` (and ``0`` where zero is allowed), at most 7 days."""
    text = value.strip() if isinstance(value, str) else ""
    if allow_zero and text in ("0", "0m", "0h"):
        return timedelta(0)
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValidationError(field, value, DURATION_RULE)
    days, hours, minutes = (int(part or 0) for part in match.groups())
    duration = timedelta(days=days, hours=hours, minutes=minutes)
    if duration <= timedelta(0) and not allow_zero:
        raise ValidationError(field, value, "a duration is at least one minute")
    if duration > MAX_DURATION:
        raise ValidationError(field, value, "a window lasts at most 7 days")
    return duration


def format_duration(duration: timedelta) -> str:
    """``4h``, ``1h30m``, ``2d``, ``0m``: what ``parse_duration`` reads back."""
    minutes = int(duration.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    text = (f"{days}d" if days else "") + (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text or "0m"


def parse_timezone(value: object, field: str = "timezone") -> str:
    """An IANA zone name (``Europe/Berlin``, ``UTC``) that the time zone database knows."""
    rule = "an IANA time zone such as Europe/Berlin, America/New_York or UTC"
    text = value.strip() if isinstance(value, str) else ""
    if _ZONE.fullmatch(text) is None:
        raise ValidationError(field, value, rule)
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(field, value, f"unknown time zone: {rule}") from exc
    return text


def build_window(
    name: object,
    cron: object,
    duration: object,
    group: object,
    cutoff: object = "0m",
    timezone: object = "UTC",
    baseline: object = None,
) -> MaintenanceWindow:
    """A window from what a user typed, each value checked; errors name the field and its rule."""
    window_name = parse_name(name)
    expression = parse_cron(cron)
    length = parse_duration(duration)
    stop_before = parse_duration(cutoff if cutoff is not None else "0m", "cutoff", allow_zero=True)
    if stop_before >= length:
        raise ValidationError(
            "cutoff", cutoff, f"the cutoff must be shorter than the duration ({format_duration(length)})"
        )
    group_key, group_value = split_group(parse_group(group if isinstance(group, str) else "", "group"))
    zone = parse_timezone(timezone if timezone is not None else "UTC")
    baseline_name = parse_baseline_name(baseline, "baseline") if isinstance(baseline, str) and baseline else None
    return MaintenanceWindow(window_name, expression, length, stop_before, group_key, group_value, zone, baseline_name)


def window_run_options(window: MaintenanceWindow, occurrence: Occurrence) -> dict[str, object]:
    """What a run of this occurrence carries in its options: the window, its times, and the baseline."""
    options: dict[str, object] = {
        WINDOW_KEY: window.name,
        STARTS_KEY: occurrence.starts_at.isoformat(),
        CUTOFF_KEY: occurrence.cutoff_at.isoformat(),
        CLOSES_KEY: occurrence.closes_at.isoformat(),
    }
    if window.baseline:
        options[BASELINE_KEY] = window.baseline
    return options


def window_of_run(options: Mapping[str, object]) -> str | None:
    """The window a run belongs to (None for a run started by hand)."""
    name = options.get(WINDOW_KEY)
    return name if isinstance(name, str) and name else None


def new_kb_may_start(options: Mapping[str, object], at: datetime) -> bool:
    """THE rule of a window run: a new KB may start only before its occurrence's cutoff.

    A run without a window is never held. Both drivers ask this before a KB leaves Pending.
    """
    cutoff = options.get(CUTOFF_KEY)
    if not isinstance(cutoff, str) or window_of_run(options) is None:
        return True
    return at < datetime.fromisoformat(cutoff)

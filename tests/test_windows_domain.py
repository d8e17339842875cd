"""Maintenance windows as rules: occurrences in a time zone across changes of clocks, the cutoff, validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from autopatch.domain.windows import (
    MaintenanceWindow,
    build_window,
    format_duration,
    new_kb_may_start,
    parse_duration,
    window_run_options,
)
from autopatch.errors import ValidationError

BERLIN = ZoneInfo("Europe/Berlin")


def window(**changes: str) -> MaintenanceWindow:
    values = {
        "name": "saturday",
        "cron": "0 2 * * SAT",
        "duration": "4h",
        "cutoff": "1h",
        "group": "PatchGroup=web",
        "timezone": "Europe/Berlin",
    }
    return build_window(**(values | changes))


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_saturday_02_00_in_berlin_is_01_00_utc_in_winter_and_00_00_utc_in_summer() -> None:
    # Clocks go forward on Sunday 2024-03-31: the Saturday before is still winter time.
    starts = [o.starts_at for o in window().next_occurrences(utc(2024, 3, 20), 3)]
    assert starts == [utc(2024, 3, 23, 1), utc(2024, 3, 30, 1), utc(2024, 4, 6, 0)]
    assert all(start.astimezone(BERLIN).hour == 2 for start in starts)


def test_a_time_skipped_in_spring_fires_right_after_the_gap_and_one_repeated_in_autumn_fires_once() -> None:
    daily = window(cron="30 2 * * *", duration="1h", cutoff="0m")
    spring = [o.starts_at.astimezone(BERLIN) for o in daily.next_occurrences(utc(2024, 3, 29, 12), 3)]
    assert [(s.day, s.hour, s.minute) for s in spring] == [(30, 2, 30), (31, 3, 0), (1, 2, 30)]
    autumn = [o.starts_at for o in daily.next_occurrences(utc(2024, 10, 26, 12), 2)]
    assert autumn == [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]  # 02:30 CEST once, then 02:30 CET


def test_the_duration_is_elapsed_time_across_the_autumn_change() -> None:
    night = window(cron="0 1 * * SUN", duration="4h", cutoff="1h")
    [occurrence] = night.next_occurrences(utc(2024, 10, 26, 12), 1)
    assert occurrence.starts_at == utc(2024, 10, 26, 23)  # 01:00 CEST
    assert occurrence.closes_at - occurrence.starts_at == timedelta(hours=4)
    # Four real hours: 04:00 CET, not the 05:00 that adding four hours to the wall clock would give.
    assert occurrence.closes_at.astimezone(BERLIN).hour == 4
    assert occurrence.cutoff_at == utc(2024, 10, 27, 2)


def test_new_kbs_start_from_the_start_until_the_cutoff_and_the_window_closes_at_its_end() -> None:
    saturday = window()  # 02:00-06:00 Berlin, no new KB from 05:00
    start = utc(2024, 6, 1, 0)
    assert saturday.open_for_new_kbs(start - timedelta(seconds=1)) is None
    assert saturday.occurrence_at(start - timedelta(seconds=1)) is None
    opened = saturday.open_for_new_kbs(start)
    assert opened is not None and opened.starts_at == start
    assert saturday.open_for_new_kbs(start + timedelta(hours=2, minutes=59, seconds=59)) == opened
    assert saturday.open_for_new_kbs(start + timedelta(hours=3)) is None  # the cutoff
    assert saturday.occurrence_at(start + timedelta(hours=3, minutes=30)) == opened  # open, no new KB
    assert saturday.closes_at(start + timedelta(hours=3, minutes=30)) == start + timedelta(hours=4)
    assert saturday.closes_at(start + timedelta(hours=4)) is None
    assert saturday.occurrence_at(start + timedelta(days=1)) is None


def test_a_run_of_the_window_may_start_a_kb_only_before_its_cutoff() -> None:
    saturday = window()
    occurrence = saturday.occurrence(utc(2024, 6, 1, 0))
    options = window_run_options(saturday, occurrence) | {"concurrency": 10}
    assert options["window"] == "saturday" and options["window_cutoff"] == "2024-06-01T03:00:00+00:00"
    assert new_kb_may_start(options, utc(2024, 6, 1, 2, 59))
    assert not new_kb_may_start(options, utc(2024, 6, 1, 3))
    assert new_kb_may_start({"concurrency": 10}, utc(2030, 1, 1))  # a run started by hand is never held
    assert window(baseline="security-only").baseline == "security-only"
    assert window_run_options(window(baseline="security-only"), occurrence)["baseline"] == "security-only"


@pytest.mark.parametrize(
    ("changes", "field", "rule"),
    [
        ({"cron": "0 25 * * *"}, "cron", "Bad hour"),
        ({"cron": "every saturday"}, "cron", "five fields"),
        ({"cron": "0 0 30 2 *"}, "cron", "day-of-month"),
        ({"duration": "4 hours"}, "duration", "4h, 90m"),
        ({"duration": "0m"}, "duration", "at least one minute"),
        ({"duration": "8d"}, "duration", "at most 7 days"),
        ({"cutoff": "4h"}, "cutoff", "shorter than the duration (4h)"),
        ({"cutoff": "-1h"}, "cutoff", "4h, 90m"),
        ({"timezone": "Europe/Atlantis"}, "timezone", "unknown time zone"),
        ({"timezone": "../../etc/passwd"}, "timezone", "IANA time zone"),
        ({"group": "PatchGroup"}, "group", "Tag=Value"),
        ({"name": "a b"}, "name", "1 to 64 ASCII"),
        ({"baseline": "x" * 65}, "baseline", "1 to 64 ASCII"),
    ],
)
def test_a_bad_value_is_refused_naming_its_field_and_rule(changes: dict[str, str], field: str, rule: str) -> None:
    with pytest.raises(ValidationError) as refused:
        window(**changes)
    assert refused.value.field == field and rule in refused.value.rule


def test_durations_read_back_as_they_are_written() -> None:
    for text, minutes in (("4h", 240), ("90m", 90), ("1h30m", 90), ("2d", 2880), ("1d2h3m", 1563)):
        assert parse_duration(text) == timedelta(minutes=minutes)
        assert parse_duration(format_duration(timedelta(minutes=minutes))) == timedelta(minutes=minutes)
    assert format_duration(timedelta(0)) == "0m" and parse_duration("0", "cutoff", allow_zero=True) == timedelta(0)


def test_an_hourly_window_longer_than_an_hour_is_open_in_the_latest_occurrence() -> None:
    hourly = window(cron="0 * * * *", duration="3h", cutoff="30m", timezone="UTC")
    at = utc(2024, 6, 1, 5, 45)
    current = hourly.open_for_new_kbs(at)
    assert current is not None and current.starts_at == utc(2024, 6, 1, 5)

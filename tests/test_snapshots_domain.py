"""The pure snapshot rules: which snapshots a prune may delete, retentions, tags, rollback commands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from autopatch.domain.snapshots import (
    TAG_RUN,
    SnapshotInventory,
    SnapshotState,
    SnapshotVolume,
    VolumeSnapshot,
    check_tags,
    parse_retention,
    prunable,
    rollback_hints,
)
from autopatch.errors import ValidationError

NOW = datetime(2024, 6, 1, tzinfo=UTC)
RUN = "p-20240401-000000-aaaaaa"


def snapshot(
    number: int, days: float, state: SnapshotState = SnapshotState.COMPLETED, run: str | None = RUN
) -> VolumeSnapshot:
    tags = {TAG_RUN: run} if run else {"Team": "db"}
    return VolumeSnapshot(
        f"snap-{number:017x}", f"vol-{number:017x}", state, started_at=NOW - timedelta(days=days), tags=tags
    )


def test_prune_takes_only_old_finished_copies_of_autopatch_runs_that_are_over() -> None:
    old, young = snapshot(1, 40), snapshot(2, 10)
    copying = snapshot(3, 40, SnapshotState.PENDING)
    failed = snapshot(4, 40, SnapshotState.ERROR)
    foreign = snapshot(5, 400, run=None)
    live = snapshot(6, 40, run="p-20240501-000000-bbbbbb")
    inventory = SnapshotInventory((old, young, copying, failed, foreign, live), NOW)
    assert prunable(inventory, timedelta(days=30), {"p-20240501-000000-bbbbbb"}) == [old, failed]
    assert prunable(inventory, timedelta(days=30)) == [old, failed, live]


@pytest.mark.parametrize(
    ("text", "days"), [("30d", 30.0), ("12h", 0.5), ("2w", 14.0), (" 1h ", 1 / 24), ("3650d", 3650.0)]
)
def test_a_retention_reads_as_hours_days_or_weeks(text: str, days: float) -> None:
    assert parse_retention(text) == timedelta(days=days)


@pytest.mark.parametrize("text", ["", "30", "0h", "59m", "3651d", "1.5d", "30D", "３０d", "-1d"])
def test_a_retention_outside_the_rule_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValidationError, match=r"e\.g\. 30d or 12h"):
        parse_retention(text)


@pytest.mark.parametrize(
    "tags", [{"aws:backup": "x"}, {"": "x"}, {"Run": "a\nb"}, {"Run": "x" * 257}, {"Run": "`whoami`"}, {"Ä": "x"}]
)
def test_tags_ec2_would_refuse_are_refused_first(tags: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        check_tags(tags)


def test_rollback_replaces_the_root_volume_in_place_and_swaps_a_data_volume() -> None:
    root = SnapshotVolume("snap-0123456789abcdef0", "vol-0123456789abcdef0", "/dev/sda1", root=True)
    data = SnapshotVolume("snap-0fedcba9876543210", "vol-0fedcba9876543210", "xvdf")
    first, second = rollback_hints("i-0123456789abcdef0", [root, data])
    assert first == (
        "root volume vol-0123456789abcdef0: aws ec2 create-replace-root-volume-task "
        "--instance-id i-0123456789abcdef0 --snapshot-id snap-0123456789abcdef0"
    )
    assert "aws ec2 create-volume --snapshot-id snap-0fedcba9876543210" in second and "as xvdf" in second

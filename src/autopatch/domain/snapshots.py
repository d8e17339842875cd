"""EBS snapshots before patching: their states, the tags that make them ours, retention and rollback.

Why a snapshot at all: a cumulative update that leaves Windows unbootable (KB5034439's recovery
partition failures, a driver that blue-screens) is undone fastest by putting the volume back as it
was. EC2 CreateSnapshots takes a crash-consistent snapshot of every EBS volume of an instance at
one point in time; from the moment EC2 lists it as ``pending`` that point is fixed, so the run
waits for *started*, not for *completed* (which takes minutes to hours and would only delay the
patch window).

Which snapshots are AutoPatch's is decided by tags alone (``AutoPatch:Run``; EC2 has no other
owner marker), and only those are ever listed for pruning or deleted. The tags also carry a token:
CreateSnapshots has no idempotency token, so after a crash between asking and recording the answer
a resumed run finds its snapshots by that tag instead of taking a second set.

Pure: no I/O, no adapter import. The fleet adapters (simulator, EC2) and the engine share it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from autopatch.errors import ValidationError

TAG_RUN = "AutoPatch:Run"
TAG_INSTANCE = "AutoPatch:Instance"
TAG_TOKEN = "AutoPatch:Token"
# EC2's rule for tag keys and values (letters, digits, spaces and + - = . _ : / @), kept ASCII here:
# a value is sent as data, but a stray control character would still be refused by EC2 after the
# run has started; it is refused before.
_TAG_KEY = re.compile(r"[A-Za-z0-9 +\-=._:/@]{1,128}", re.ASCII)
_TAG_VALUE = re.compile(r"[A-Za-z0-9 +\-=._:/@]{0,256}", re.ASCII)
_SNAPSHOT_ID = re.compile(r"snap-(?:[0-9a-f]{8}|[0-9a-f]{17})", re.ASCII)
_VOLUME_ID = re.compile(r"vol-(?:[0-9a-f]{8}|[0-9a-f]{17})", re.ASCII)
_RETENTION = re.compile(r"([0-9]{1,6})([hdw])", re.ASCII)
_RETENTION_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
MIN_RETENTION = timedelta(hours=1)  # a snapshot younger than this may belong to a server being patched now
MAX_RETENTION = timedelta(days=3650)
RETENTION_RULE = "a retention is a number and a unit h, d or w, e.g. 30d or 12h, from 1h to 3650d"


class SnapshotState(StrEnum):
    """Where one volume's snapshot stands, as EC2's DescribeSnapshots says (plus "not listed yet")."""

    REQUESTED = "requested"  # asked for; EC2 does not list it yet (it is eventually consistent)
    PENDING = "pending"  # started: the point in time is taken, the copy to S3 goes on
    COMPLETED = "completed"
    ERROR = "error"  # it failed: there is nothing to roll back to

    @property
    def started(self) -> bool:
        return self in (SnapshotState.PENDING, SnapshotState.COMPLETED)


def parse_snapshot_state(value: str) -> SnapshotState:
    """EC2's state text; ``recoverable``/``recovering`` (archive tier) read as completed: the data is there."""
    if value in ("recoverable", "recovering"):
        return SnapshotState.COMPLETED
    try:
        return SnapshotState(value)
    except ValueError:
        raise ValidationError("State", value, "a snapshot state is pending, completed or error") from None


@dataclass(frozen=True, slots=True)
class VolumeSnapshot:
    """One volume's snapshot as the fleet reports it."""

    snapshot_id: str
    volume_id: str
    state: SnapshotState
    instance_id: str | None = None  # from the AutoPatch:Instance tag (None on a snapshot that is not ours)
    device: str | None = None  # e.g. /dev/sda1, when known
    root: bool = False  # the instance's boot volume: rolled back with a root volume replacement
    started_at: datetime | None = None  # UTC, on the fleet's clock
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def run_id(self) -> str | None:
        return self.tags.get(TAG_RUN)


@dataclass(frozen=True, slots=True)
class SnapshotInventory:
    """Snapshots listed at ``as_of`` (the fleet's own clock: the simulator's is simulated time)."""

    snapshots: tuple[VolumeSnapshot, ...]
    as_of: datetime

    def age(self, snapshot: VolumeSnapshot) -> timedelta | None:
        return self.as_of - snapshot.started_at if snapshot.started_at else None


@dataclass(frozen=True, slots=True)
class SnapshotVolume:
    """One snapshot a run took of a server, as the store keeps it (what a rollback needs)."""

    snapshot_id: str
    volume_id: str
    device: str | None = None
    root: bool = False


class SnapshotPhase(StrEnum):
    """The life of a run server's snapshot; the store's ``phase``. ``STARTED`` and ``FAILED`` are final.

    ``ASKING`` is written BEFORE CreateSnapshots is called: a successor that finds it looks the
    snapshots up by token before it may ask again, so a server is never snapshotted twice.
    """

    ASKING = "asking"  # the call is being made, or was made and its answer never recorded
    RETRY = "retry"  # the last call surely created nothing (throttled): ask again after a delay
    REQUESTED = "requested"  # EC2 answered with the snapshot ids: waiting for them to start
    STARTED = "started"  # every snapshot is pending or completed: the server may be patched
    FAILED = "failed"  # a snapshot failed, or could not be asked for: the server is skipped

    @property
    def is_final(self) -> bool:
        return self in (SnapshotPhase.STARTED, SnapshotPhase.FAILED)


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """A run server's snapshot record: what was asked, what EC2 answered, when it started, why it failed."""

    run_id: str
    instance_id: str
    token: str
    phase: SnapshotPhase
    requested_at: str  # UTC ISO: when the run first asked (the start timeout counts from here)
    asked_at: str  # UTC ISO: the latest ask (a lookup of an unanswered one waits from here)
    volumes: tuple[SnapshotVolume, ...] = ()
    started_at: str | None = None
    reason: str = ""
    tries: int = 0  # asks that surely created nothing (throttling): bounded by the run's transient retries
    pruned_at: str | None = None  # deleted by ``snapshots prune``: nothing left to roll back to

    @property
    def snapshot_ids(self) -> list[str]:
        return [volume.snapshot_id for volume in self.volumes]


# What ``SnapshotStore.update_snapshot`` may set: the same for every adapter.
SNAPSHOT_FIELDS = frozenset({"phase", "asked_at", "volumes", "started_at", "reason", "tries", "pruned_at"})


def parse_snapshot_id(value: str, field: str = "snapshot_id") -> str:
    """``snap-`` and 8 or 17 lowercase hex digits, or ``ValidationError`` naming the rule."""
    if not isinstance(value, str) or _SNAPSHOT_ID.fullmatch(value.strip()) is None:
        raise ValidationError(field, value, "a snapshot id is 'snap-' followed by 8 or 17 lowercase hex digits")
    return value.strip()


def parse_volume_id(value: str, field: str = "volume_id") -> str:
    if not isinstance(value, str) or _VOLUME_ID.fullmatch(value) is None:
        raise ValidationError(field, value, "a volume id is 'vol-' followed by 8 or 17 lowercase hex digits")
    return value


def check_tags(tags: Mapping[str, str | None], field: str = "tags") -> dict[str, str | None]:
    """Tag keys and values as EC2 accepts them (``None``: "any value", for listings); never ``aws:`` keys."""
    checked: dict[str, str | None] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or _TAG_KEY.fullmatch(key) is None or key.lower().startswith("aws:"):
            raise ValidationError(
                f"{field}.key", key, "a tag key is 1-128 of letters, digits, spaces and + - = . _ : / @, not aws:…"
            )
        if value is not None and (not isinstance(value, str) or _TAG_VALUE.fullmatch(value) is None):
            raise ValidationError(
                f"{field}.{key}", value, "a tag value is 0-256 of letters, digits, spaces and + - = . _ : / @"
            )
        checked[key] = value
    return checked


def snapshot_tags(run_id: str, instance_id: str, token: str) -> dict[str, str]:
    """The tags of a run's snapshots: ours (the run), whose (the instance), and which ask (the token)."""
    tags = {
        "Name": f"AutoPatch {run_id} {instance_id}",
        TAG_RUN: run_id,
        TAG_INSTANCE: instance_id,
        TAG_TOKEN: token,
    }
    return {key: str(value) for key, value in check_tags(tags).items()}


def tags_match(tags: Mapping[str, str], wanted: Mapping[str, str | None]) -> bool:
    """Every wanted key present (with the wanted value, unless that is None): a listing's tag filter."""
    return all(key in tags and (value is None or tags[key] == value) for key, value in wanted.items())


def parse_retention(value: str, field: str = "older_than") -> timedelta:
    """``30d``, ``12h``, ``2w`` → a ``timedelta`` between ``MIN_RETENTION`` and ``MAX_RETENTION``."""
    match = _RETENTION.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValidationError(field, value, RETENTION_RULE)
    retention = int(match.group(1)) * _RETENTION_UNITS[match.group(2)]
    if not MIN_RETENTION <= retention <= MAX_RETENTION:
        raise ValidationError(field, value, RETENTION_RULE)
    return retention


def prunable(
    inventory: SnapshotInventory, older_than: timedelta, unfinished_runs: Collection[str] = ()
) -> list[VolumeSnapshot]:
    """The snapshots ``snapshots prune`` deletes: AutoPatch's (tagged with a run), started before the
    retention, and not of a run still going (its servers may need them any minute). Snapshots still
    being copied (requested, pending) are kept: deleting one would waste the copy for nothing."""
    cutoff = inventory.as_of - older_than
    return [
        snapshot
        for snapshot in inventory.snapshots
        if snapshot.run_id
        and snapshot.run_id not in unfinished_runs
        and snapshot.started_at is not None
        and snapshot.started_at < cutoff
        and snapshot.state in (SnapshotState.COMPLETED, SnapshotState.ERROR)
    ]


def snapshot_failure(snapshots: Iterable[tuple[SnapshotVolume, SnapshotState]]) -> str | None:
    """Why the set failed (the first volume in error), or None while none has."""
    for volume, state in snapshots:
        if state is SnapshotState.ERROR:
            return f"snapshot {volume.snapshot_id} of {volume.volume_id} is in state error"
    return None


def rollback_hints(instance_id: str, volumes: Iterable[SnapshotVolume]) -> list[str]:
    """How to put each volume back, as AWS CLI commands an operator can paste.

    The boot volume is replaced in place (``create-replace-root-volume-task``: EC2 restores it from
    the snapshot and restarts the instance, keeping its id, addresses and data volumes). A data
    volume has no such task: a new volume is made from the snapshot and swapped in for the old one.
    """
    hints = []
    for volume in volumes:
        if volume.root:
            hints.append(
                f"root volume {volume.volume_id}: aws ec2 create-replace-root-volume-task "
                f"--instance-id {instance_id} --snapshot-id {volume.snapshot_id}"
            )
        else:
            device = volume.device or "its device"
            hints.append(
                f"data volume {volume.volume_id}: aws ec2 create-volume --snapshot-id {volume.snapshot_id} "
                f"--availability-zone <the instance's zone>, then stop the instance, detach {volume.volume_id} "
                f"and attach the new volume as {device}"
            )
    return hints


def volumes_as_data(volumes: Iterable[SnapshotVolume]) -> list[dict[str, object]]:
    """The volumes as JSON-ready dicts: how both stores keep them, and how the views show them."""
    return [
        {"snapshot_id": v.snapshot_id, "volume_id": v.volume_id, "device": v.device, "root": v.root} for v in volumes
    ]


def volumes_from_data(data: Iterable[Mapping[str, object]]) -> tuple[SnapshotVolume, ...]:
    return tuple(
        SnapshotVolume(
            snapshot_id=str(item["snapshot_id"]),
            volume_id=str(item["volume_id"]),
            device=None if item.get("device") is None else str(item["device"]),
            root=bool(item.get("root", False)),
        )
        for item in data
    )

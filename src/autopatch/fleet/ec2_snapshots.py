"""EBS snapshots of EC2 servers: the fleet port's snapshot methods for the SSM/EC2 adapter (``ssm.py``).

Calls and why:

- **CreateSnapshots** (``InstanceSpecification``: every EBS volume of the instance, boot volume
  included, at one point in time), tagged at creation through ``TagSpecifications`` (needs
  ``ec2:CreateTags`` on snapshots besides ``ec2:CreateSnapshots``). It has no idempotency token,
  and botocore retries a 5xx or a timeout: the call goes through a client whose retries are off
  (as SSM's SendCommand does), and a failure after the request left is a ``DeliveryUncertainError``
  — the engine then looks the snapshots up by their ``AutoPatch:Token`` tag instead of asking again.
- **DescribeInstances** first (``RootDeviceName`` and ``BlockDeviceMappings``): which snapshot is of
  the boot volume decides the rollback (a root volume replacement, or a new data volume).
- **DescribeSnapshots** with ``OwnerIds=self`` always (without it EC2 also lists every public
  snapshot) and ids passed as a ``snapshot-id`` *filter*: ``SnapshotIds`` fails the whole call with
  ``InvalidSnapshot.NotFound`` when one id is not listed yet, a filter just leaves it out.
- **DeleteSnapshot** (``ec2:DeleteSnapshot``) for ``snapshots prune``.

Every value reaches EC2 as a request parameter (data), validated first: instance ids, snapshot ids,
tag keys and values. On-premises servers (``mi-``) have no EBS volume: refused before any call.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    BotoCoreError,
    ClientError,
    HTTPClientError,
)
from botocore.exceptions import ConnectionError as BotocoreConnectionError  # type: ignore[import-untyped, unused-ignore]

from autopatch.domain.instance_ids import is_managed_instance_id, parse_instance_id
from autopatch.domain.snapshots import (
    TAG_INSTANCE,
    SnapshotInventory,
    SnapshotState,
    VolumeSnapshot,
    check_tags,
    parse_snapshot_id,
    parse_snapshot_state,
    parse_volume_id,
)
from autopatch.errors import (
    AutoPatchError,
    ConflictError,
    DeliveryUncertainError,
    ExecutionError,
    NotFoundError,
    TransientError,
    ValidationError,
)

_FILTER_BATCH = 200  # EC2 filters take at most 200 values
_PAGE_SIZE = 1000  # DescribeSnapshots returns at most 1,000 per page
_THROTTLING = frozenset(
    {"Throttling", "ThrottlingException", "RequestLimitExceeded", "SnapshotCreationPerVolumeRateExceeded"}
)
_SERVER_ERRORS = frozenset({"InternalError", "InternalServerError", "ServiceUnavailable", "Unavailable"})
_NOT_FOUND = frozenset({"InvalidInstanceID.NotFound", "InvalidSnapshot.NotFound"})
_IN_USE = frozenset({"InvalidSnapshot.InUse"})  # a snapshot an AMI is registered from


class Ec2Snapshots:
    """The snapshot methods over two EC2 clients: ``ec2`` for reads (adaptive retries), ``ec2_create`` for
    CreateSnapshots (one attempt, never retried); both given as callables so they are built on first use."""

    def __init__(
        self,
        ec2: Callable[[], Any],
        ec2_create: Callable[[], Any],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._ec2 = ec2
        self._ec2_create = ec2_create
        self._clock = clock

    def create_snapshots(self, instance_id: str, tags: Mapping[str, str]) -> list[VolumeSnapshot]:
        """Snapshot every EBS volume of an EC2 instance, tagged; see the module docstring for the errors."""
        instance_id = parse_instance_id(instance_id)
        if is_managed_instance_id(instance_id):
            raise ExecutionError(f"{instance_id} is an on-premises server (SSM managed instance): it has no EBS volume")
        checked = [{"Key": key, "Value": str(value)} for key, value in check_tags(tags).items()]
        devices, root_device = self._devices(instance_id)
        with _translated(f"creating the snapshots of {instance_id}", created_maybe=True):
            response = self._ec2_create().create_snapshots(
                InstanceSpecification={"InstanceId": instance_id, "ExcludeBootVolume": False},
                Description=f"AutoPatch, before patching {instance_id}",
                TagSpecifications=[{"ResourceType": "snapshot", "Tags": checked}],
            )
        return [
            _volume_snapshot(found, devices, root_device, default_state=SnapshotState.REQUESTED)
            for found in response.get("Snapshots", [])
        ]

    def snapshot_states(self, snapshot_ids: Collection[str]) -> dict[str, SnapshotState]:
        wanted = sorted({parse_snapshot_id(value, "snapshot_ids") for value in snapshot_ids})
        states: dict[str, SnapshotState] = {}
        for start in range(0, len(wanted), _FILTER_BATCH):
            batch = wanted[start : start + _FILTER_BATCH]
            for found in self._describe([{"Name": "snapshot-id", "Values": batch}]):
                states[found["SnapshotId"]] = _state(found)
        return states

    def list_snapshots(self, tags: Mapping[str, str | None]) -> SnapshotInventory:
        filters = [
            {"Name": "tag-key", "Values": [key]} if value is None else {"Name": f"tag:{key}", "Values": [value]}
            for key, value in check_tags(tags).items()
        ]
        as_of = self._clock()
        found = tuple(_volume_snapshot(snapshot, {}, None) for snapshot in self._describe(filters))
        return SnapshotInventory(found, as_of)

    def delete_snapshot(self, snapshot_id: str) -> None:
        snapshot_id = parse_snapshot_id(snapshot_id)
        with _translated(f"deleting snapshot {snapshot_id}"):
            self._ec2().delete_snapshot(SnapshotId=snapshot_id)

    def _describe(self, filters: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        with _translated("describing snapshots"):
            pages = (
                self._ec2()
                .get_paginator("describe_snapshots")
                .paginate(OwnerIds=["self"], Filters=filters, PaginationConfig={"PageSize": _PAGE_SIZE})
            )
            for page in pages:
                yield from page.get("Snapshots", [])

    def _devices(self, instance_id: str) -> tuple[dict[str, str], str | None]:
        """Volume id → device name of the instance's EBS volumes, and its root device name."""
        with _translated(f"describing instance {instance_id}"):
            response = self._ec2().describe_instances(InstanceIds=[instance_id])
        instances = [i for reservation in response.get("Reservations", []) for i in reservation.get("Instances", [])]
        if not instances:
            raise NotFoundError(f"instance_id: {instance_id} is not an EC2 instance of this account and region")
        described = instances[0]
        devices = {
            mapping["Ebs"]["VolumeId"]: mapping["DeviceName"]
            for mapping in described.get("BlockDeviceMappings", [])
            if "Ebs" in mapping and "VolumeId" in mapping["Ebs"]
        }
        return devices, described.get("RootDeviceName")


def _state(found: dict[str, Any], default: SnapshotState | None = None) -> SnapshotState:
    text = found.get("State")
    if text is None and default is not None:
        return default
    try:
        return parse_snapshot_state(str(text))
    except ValidationError as exc:
        raise ExecutionError(f"EC2 reported snapshot {found.get('SnapshotId')} in an unknown state: {exc}") from exc


def _volume_snapshot(
    found: dict[str, Any], devices: dict[str, str], root_device: str | None, default_state: SnapshotState | None = None
) -> VolumeSnapshot:
    """A snapshot EC2 described, checked before it travels inward (into the store, a rollback hint)."""
    try:
        snapshot_id = parse_snapshot_id(found["SnapshotId"], "Snapshot.SnapshotId")
        volume_id = parse_volume_id(found.get("VolumeId", ""), "Snapshot.VolumeId")
    except (KeyError, ValidationError) as exc:
        raise ExecutionError(f"EC2 described a snapshot AutoPatch cannot accept: {exc}") from exc
    tags = {tag["Key"]: tag["Value"] for tag in found.get("Tags", [])}
    owner = tags.get(TAG_INSTANCE)
    try:
        instance_id = parse_instance_id(owner, TAG_INSTANCE) if owner else None
    except ValidationError:
        instance_id = None  # someone else's tag value: not a server of ours
    device = devices.get(volume_id)
    started = found.get("StartTime")
    return VolumeSnapshot(
        snapshot_id=snapshot_id,
        volume_id=volume_id,
        state=_state(found, default_state),
        instance_id=instance_id,
        device=device,
        root=device is not None and device == root_device,
        started_at=started.astimezone(UTC) if isinstance(started, datetime) else None,
        tags=tags,
    )


@contextmanager
def _translated(action: str, *, created_maybe: bool = False) -> Iterator[None]:
    """botocore's errors as AutoPatch's; with ``created_maybe``, a failure after the request left is uncertain."""
    try:
        yield
    except ClientError as exc:
        raise _translate(exc, action, created_maybe) from exc
    except BotocoreConnectionError as exc:  # refused, DNS, TLS, connect timeout: nothing reached EC2
        raise TransientError(f"{action}: EC2 could not be reached: {exc}") from exc
    except HTTPClientError as exc:  # read timeout, connection dropped after the request left
        if created_maybe:
            raise DeliveryUncertainError(f"{action}: no answer after the request left ({exc}): look them up") from exc
        raise TransientError(f"{action}: EC2 did not answer: {exc}") from exc
    except BotoCoreError as exc:  # no credentials, no region
        raise ExecutionError(f"{action}: AWS client configuration: {exc}") from exc


def _translate(exc: Any, action: str, created_maybe: bool) -> AutoPatchError:
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "")), error.get("Message", "")
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in _THROTTLING:
        return TransientError(f"{action}: EC2 throttled it ({code}); nothing was created")
    if code in _SERVER_ERRORS or status >= 500:
        if created_maybe:
            return DeliveryUncertainError(f"{action}: EC2 failed on its side ({code}: {message}); look them up")
        return TransientError(f"{action}: EC2 failed on its side ({code}: {message})")
    if code in _NOT_FOUND:
        return NotFoundError(f"{action}: EC2 does not know it ({code}: {message})")
    if code in _IN_USE:
        return ConflictError(f"{action}: {message or code} (deregister the AMI first)")
    return ExecutionError(f"{action} failed: {code}: {message}")

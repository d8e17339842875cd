"""EBS snapshots through the SSM/EC2 adapter against moto: CreateSnapshots with tags, the boot volume told
apart, states, tag listings that only ever show AutoPatch's, deletion; the engine's snapshot step and
pruning on top of it; and what a throttled or lost CreateSnapshots answer becomes (botocore's Stubber).

moto completes snapshots at once and has no ``error`` state: a failed snapshot is written into its
backend, as are old start times (moto stamps every snapshot with the time it was made).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from autopatch.domain.patching import KbState, RunStatus
from autopatch.domain.runs import RunItem, RunRecord, RunServer
from autopatch.domain.snapshots import TAG_INSTANCE, TAG_RUN, TAG_TOKEN, SnapshotPhase, SnapshotState, snapshot_tags
from autopatch.engine.options import RunOptions
from autopatch.engine.snapshots import advance_snapshot
from autopatch.errors import DeliveryUncertainError, ExecutionError, NotFoundError, TransientError, ValidationError
from autopatch.fleet.ec2_snapshots import Ec2Snapshots
from autopatch.fleet.ssm import SsmFleet
from autopatch.snapshot_operations import prune_snapshots
from autopatch.store.base import now
from autopatch.store.sqlite import SqliteStore

REGION = "us-east-1"
RUN_ID = "p-20240214-090000-abc123"
OPTIONS = RunOptions(snapshot=True)


pytestmark = pytest.mark.usefixtures("fake_aws_credentials")


@pytest.fixture
def ec2() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION)


def launch(ec2: Any) -> str:
    """A Windows instance with a boot volume and a data volume."""
    image = ec2.describe_images(Filters=[{"Name": "platform", "Values": ["windows"]}])["Images"][0]["ImageId"]
    response = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        BlockDeviceMappings=[
            {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 30}},
            {"DeviceName": "xvdf", "Ebs": {"VolumeSize": 10}},
        ],
    )
    return str(response["Instances"][0]["InstanceId"])


def moto_snapshot(snapshot_id: str) -> Any:
    return ec2_backends[DEFAULT_ACCOUNT_ID][REGION].snapshots[snapshot_id]


def existing(ec2: Any) -> set[str]:
    """The account's own snapshots (moto ignores OwnerIds=self: it lists its public AMIs' snapshots too)."""
    return {s["SnapshotId"] for s in ec2.describe_snapshots()["Snapshots"] if s["OwnerId"] == DEFAULT_ACCOUNT_ID}


def run_on(store: SqliteStore, instance_id: str, run_id: str = RUN_ID) -> None:
    """A run holding the instance with one KB to install (what the step reads)."""
    run = RunRecord(run_id, "patch", RunStatus.RUNNING, now(), {"snapshot": True})
    server = RunServer(run_id, instance_id, "web-1", "Windows Server 2022", "10.0.20348.2227", status="Running")
    store.create_run(run, [server], [RunItem(run_id, instance_id, "KB5034770", 0, KbState.PENDING)])


def test_create_snapshots_tags_every_volume_and_marks_the_boot_volume(ec2: Any) -> None:
    instance_id = launch(ec2)
    fleet = SsmFleet(ec2_client=ec2, region=REGION)
    taken = fleet.create_snapshots(instance_id, snapshot_tags(RUN_ID, instance_id, "t" * 32))
    assert len(taken) == 2
    [root] = [s for s in taken if s.root]
    assert root.device == "/dev/sda1" and [s.device for s in taken if not s.root] == ["xvdf"]
    assert all(s.instance_id == instance_id and s.tags[TAG_RUN] == RUN_ID for s in taken)
    ids = [s.snapshot_id for s in taken]
    assert fleet.snapshot_states([*ids, "snap-0123456789abcdef0"]) == dict.fromkeys(ids, SnapshotState.COMPLETED)
    found = fleet.list_snapshots({TAG_TOKEN: "t" * 32})
    assert sorted(s.snapshot_id for s in found.snapshots) == sorted(ids)
    assert all(s.started_at is not None and s.started_at <= found.as_of for s in found.snapshots)


def test_listings_show_only_snapshots_tagged_as_autopatchs(ec2: Any) -> None:
    instance_id = launch(ec2)
    volume = ec2.describe_volumes()["Volumes"][0]["VolumeId"]
    ec2.create_snapshot(VolumeId=volume, Description="the database team's own")
    fleet = SsmFleet(ec2_client=ec2, region=REGION)
    ours = fleet.create_snapshots(instance_id, snapshot_tags(RUN_ID, instance_id, "t" * 32))
    listed = fleet.list_snapshots({TAG_RUN: None}).snapshots
    assert sorted(s.snapshot_id for s in listed) == sorted(s.snapshot_id for s in ours)
    assert fleet.list_snapshots({TAG_RUN: "p-20240101-000000-000000"}).snapshots == ()


def test_bad_input_is_refused_before_any_call(ec2: Any) -> None:
    instance_id = launch(ec2)
    fleet = SsmFleet(ec2_client=ec2, region=REGION)
    with pytest.raises(ValidationError, match="tag value"):
        fleet.create_snapshots(instance_id, {TAG_RUN: "p-1; Remove-Item C:\\"})
    with pytest.raises(ValidationError, match="tag key"):
        fleet.create_snapshots(instance_id, {"aws:cloudformation": "x"})
    with pytest.raises(ValidationError, match="instance id"):
        fleet.create_snapshots("i-../../x", {TAG_RUN: RUN_ID})
    with pytest.raises(ExecutionError, match="on-premises"):
        fleet.create_snapshots("mi-0123456789abcdef0", {TAG_RUN: RUN_ID})
    with pytest.raises(ValidationError, match="snapshot id"):
        fleet.delete_snapshot("snap-x'; drop")
    with pytest.raises(NotFoundError):
        fleet.delete_snapshot("snap-0123456789abcdef0")
    with pytest.raises(NotFoundError):
        fleet.create_snapshots("i-0123456789abcdef0", {TAG_RUN: RUN_ID})
    assert ec2.describe_snapshots(Filters=[{"Name": "tag-key", "Values": [TAG_RUN]}])["Snapshots"] == []


def test_a_lost_or_throttled_create_snapshots_answer_is_uncertain_or_transient(ec2: Any) -> None:
    instance_id = launch(ec2)
    create = boto3.client("ec2", region_name=REGION, config=Config(retries={"total_max_attempts": 1}))
    snapshots = Ec2Snapshots(lambda: ec2, lambda: create)
    with Stubber(create) as stub:
        stub.add_client_error("create_snapshots", "InternalError", "try again", 500)
        with pytest.raises(DeliveryUncertainError, match="look them up"):
            snapshots.create_snapshots(instance_id, {TAG_RUN: RUN_ID})
        stub.add_client_error("create_snapshots", "RequestLimitExceeded", "slow down", 503)
        with pytest.raises(TransientError, match="nothing was created"):
            snapshots.create_snapshots(instance_id, {TAG_RUN: RUN_ID})
        stub.add_client_error("create_snapshots", "UnauthorizedOperation", "not allowed", 403)
        with pytest.raises(ExecutionError, match="UnauthorizedOperation") as refused:
            snapshots.create_snapshots(instance_id, {TAG_RUN: RUN_ID})
        assert not isinstance(refused.value, TransientError)
        stub.assert_no_pending_responses()


def test_the_engine_step_records_the_snapshots_and_waits_for_them_to_start(ec2: Any, tmp_path: Path) -> None:
    instance_id = launch(ec2)
    fleet = SsmFleet(ec2_client=ec2, region=REGION)
    store = SqliteStore(tmp_path / "runs.db")
    run_on(store, instance_id)
    asked = advance_snapshot(store, fleet, RUN_ID, instance_id, OPTIONS)
    assert asked.record.phase is SnapshotPhase.REQUESTED and len(asked.record.volumes) == 2
    started = advance_snapshot(store, fleet, RUN_ID, instance_id, OPTIONS)
    assert started.may_patch and started.record.started_at
    tagged = ec2.describe_snapshots(Filters=[{"Name": f"tag:{TAG_INSTANCE}", "Values": [instance_id]}])["Snapshots"]
    assert sorted(s["SnapshotId"] for s in tagged) == sorted(started.record.snapshot_ids)
    again = advance_snapshot(store, fleet, RUN_ID, instance_id, OPTIONS)  # a resumed driver: nothing new
    assert again.record == started.record and len(existing(ec2)) == 2
    store.close()


def test_a_snapshot_in_error_skips_the_server_with_the_reason(ec2: Any, tmp_path: Path) -> None:
    instance_id = launch(ec2)
    fleet = SsmFleet(ec2_client=ec2, region=REGION)
    store = SqliteStore(tmp_path / "runs.db")
    run_on(store, instance_id)
    asked = advance_snapshot(store, fleet, RUN_ID, instance_id, OPTIONS)
    moto_snapshot(asked.record.snapshot_ids[0]).status = "error"
    failed = advance_snapshot(store, fleet, RUN_ID, instance_id, OPTIONS)
    assert failed.done and not failed.may_patch
    server = store.run_server(RUN_ID, instance_id)
    assert server.status == "Skipped"
    first = asked.record.volumes[0]
    assert server.reason == f"snapshot failed: snapshot {first.snapshot_id} of {first.volume_id} is in state error"
    store.close()


def test_prune_deletes_only_old_autopatch_snapshots_of_finished_runs(ec2: Any, tmp_path: Path) -> None:
    instance_id = launch(ec2)
    fleet = SsmFleet(ec2_client=ec2, region=REGION)
    store = SqliteStore(tmp_path / "runs.db")
    run_on(store, instance_id)
    store.set_run_status(RUN_ID, RunStatus.SUCCEEDED)
    advance_snapshot(store, fleet, RUN_ID, instance_id, OPTIONS)
    old = advance_snapshot(store, fleet, RUN_ID, instance_id, OPTIONS).record.snapshot_ids
    volume = ec2.describe_volumes()["Volumes"][0]["VolumeId"]
    foreign = ec2.create_snapshot(VolumeId=volume, Description="someone else's")["SnapshotId"]
    unfinished = "p-20240214-100000-def456"
    other = launch(ec2)
    run_on(store, other, unfinished)  # still running: its snapshots are kept whatever their age
    held = fleet.create_snapshots(other, snapshot_tags(unfinished, other, "u" * 32))
    young = fleet.create_snapshots(instance_id, snapshot_tags("p-20240301-000000-aaaaaa", instance_id, "y" * 32))
    long_ago = datetime.now(UTC) - timedelta(days=40)
    for snapshot_id in [*old, foreign, *(s.snapshot_id for s in held)]:
        moto_snapshot(snapshot_id).start_time = long_ago

    dry = prune_snapshots(fleet, store, "30d", dry_run=True)
    assert sorted(row["snapshot_id"] for row in dry["deleted"]) == sorted(old)
    everything = {*old, foreign, *(s.snapshot_id for s in held), *(s.snapshot_id for s in young)}
    assert everything <= existing(ec2)
    pruned = prune_snapshots(fleet, store, "30d")
    assert sorted(row["snapshot_id"] for row in pruned["deleted"]) == sorted(old)
    assert pruned["kept"] == len(held) + len(young) and pruned["errors"] == []
    assert everything & existing(ec2) == {foreign, *(s.snapshot_id for s in held), *(s.snapshot_id for s in young)}
    record = store.run_snapshot(RUN_ID, instance_id)
    assert record is not None and record.pruned_at is not None
    store.close()

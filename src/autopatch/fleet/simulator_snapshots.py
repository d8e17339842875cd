"""EBS snapshots in the fleet simulator: the fleet port's snapshot methods, on simulated time.

Every simulated server has a boot volume (``/dev/sda1``) and, for about half of them, a data
volume (``xvdf``); ids are derived from the seed and the instance, so they stay the same across
reopenings. A snapshot behaves as EC2's does, on the simulator's clock:

- for ``snapshot_start_seconds`` after CreateSnapshots, DescribeSnapshots does not list it by id
  yet (EC2 is eventually consistent): its state reads ``requested``. Listing by tag finds it at
  once, so a run resumed after a crash finds what it asked for;
- then ``pending`` for ``snapshot_seconds`` (started: the point in time is taken), then
  ``completed``; a server named in ``snapshot_failing_servers`` gets snapshots that go to
  ``error`` instead (decided when taken).

A mixin of ``FleetSimulator``: it uses its one-transaction-per-operation ``_transaction`` and its
``config``, so a snapshot taken by one process is seen by every other.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Collection, Mapping
from datetime import timedelta
from typing import Any

from autopatch.domain.instance_ids import parse_instance_id
from autopatch.domain.snapshots import (
    TAG_INSTANCE,
    SnapshotInventory,
    SnapshotState,
    VolumeSnapshot,
    check_tags,
    parse_snapshot_id,
    tags_match,
)
from autopatch.errors import NotFoundError
from autopatch.fleet.simulator_model import SIMULATED_EPOCH, SimulatedSnapshot, SimulatorConfig
from autopatch.fleet.simulator_state import StateTransaction

ROOT_DEVICE = "/dev/sda1"
DATA_DEVICE = "xvdf"


def server_volumes(seed: int, instance_id: str) -> list[tuple[str, str, bool]]:
    """(volume id, device, is boot volume) of a simulated server: always a boot volume, half have a data one."""
    digest = hashlib.sha256(f"{seed}/volumes/{instance_id}".encode()).hexdigest()
    volumes = [(f"vol-{digest[:17]}", ROOT_DEVICE, True)]
    if int(digest[-1], 16) % 2 == 0:
        volumes.append((f"vol-{digest[17:34]}", DATA_DEVICE, False))
    return volumes


def snapshot_state(snapshot: SimulatedSnapshot, now: float, config: SimulatorConfig) -> SnapshotState:
    started = snapshot.created_at + config.snapshot_start_seconds
    if now < started:
        return SnapshotState.REQUESTED
    if snapshot.fails:
        return SnapshotState.ERROR
    return SnapshotState.PENDING if now < started + config.snapshot_seconds else SnapshotState.COMPLETED


def _reported(snapshot: SimulatedSnapshot, now: float, config: SimulatorConfig) -> VolumeSnapshot:
    return VolumeSnapshot(
        snapshot_id=snapshot.snapshot_id,
        volume_id=snapshot.volume_id,
        state=snapshot_state(snapshot, now, config),
        instance_id=snapshot.tags.get(TAG_INSTANCE, snapshot.instance_id),
        device=snapshot.device,
        root=snapshot.root,
        started_at=SIMULATED_EPOCH + timedelta(seconds=snapshot.created_at),
        tags=dict(snapshot.tags),
    )


class SimulatedSnapshots:
    """Mixed into ``FleetSimulator``: needs its ``_transaction`` and ``config``."""

    config: SimulatorConfig
    _transaction: Callable[[Callable[[StateTransaction], Any]], Any]

    def create_snapshots(self, instance_id: str, tags: Mapping[str, str]) -> list[VolumeSnapshot]:
        """Snapshot the server's volumes now (CreateSnapshots): ``requested`` until EC2 would list them."""
        canonical = parse_instance_id(instance_id)
        checked = {key: str(value) for key, value in check_tags(tags).items()}

        def operation(tx: StateTransaction) -> list[VolumeSnapshot]:
            server = tx.server(canonical)  # an unknown server is a NotFoundError, as EC2's InvalidInstanceID
            request = tx.next_sequence()
            rng = random.Random(f"{self.config.seed}/snapshot/{request}")
            fails = server.instance_id in self.config.snapshot_failing_servers
            taken = [
                SimulatedSnapshot(
                    f"snap-{rng.getrandbits(68):017x}",
                    server.instance_id,
                    volume,
                    device,
                    root,
                    tx.now,
                    fails,
                    checked,
                    request,
                )
                for volume, device, root in server_volumes(self.config.seed, server.instance_id)
            ]
            tx.insert_snapshots(taken)
            return [_reported(snapshot, tx.now, self.config) for snapshot in taken]

        result: list[VolumeSnapshot] = self._transaction(operation)
        return result

    def snapshot_states(self, snapshot_ids: Collection[str]) -> dict[str, SnapshotState]:
        """Each known snapshot's state now; a deleted or unknown id is missing from the answer."""
        wanted = [parse_snapshot_id(value, "snapshot_ids") for value in snapshot_ids]

        def operation(tx: StateTransaction) -> dict[str, SnapshotState]:
            return {s.snapshot_id: snapshot_state(s, tx.now, self.config) for s in tx.snapshots(wanted)}

        result: dict[str, SnapshotState] = self._transaction(operation)
        return result

    def list_snapshots(self, tags: Mapping[str, str | None]) -> SnapshotInventory:
        """The snapshots carrying every given tag, as of the simulator's clock (requested ones included)."""
        wanted = check_tags(tags)

        def operation(tx: StateTransaction) -> SnapshotInventory:
            found = tuple(
                _reported(snapshot, tx.now, self.config)
                for snapshot in tx.snapshots()
                if tags_match(snapshot.tags, wanted)
            )
            return SnapshotInventory(found, SIMULATED_EPOCH + timedelta(seconds=tx.now))

        result: SnapshotInventory = self._transaction(operation)
        return result

    def delete_snapshot(self, snapshot_id: str) -> None:
        checked = parse_snapshot_id(snapshot_id)

        def operation(tx: StateTransaction) -> bool:
            return tx.delete_snapshot(checked)

        if not self._transaction(operation):
            raise NotFoundError(f"snapshot_id: {checked} is not a snapshot of this simulated fleet")

    @property
    def snapshot_requests(self) -> dict[str, int]:
        """CreateSnapshots calls per server, by every process (a test proves a resumed run asks once)."""
        result: dict[str, int] = self._transaction(lambda tx: tx.snapshot_requests())
        return result

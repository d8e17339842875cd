"""DynamoDB items of the fleet: discovered instances, every scan, and the change counters.

Items (state table)::

    INSTANCES        / <instance id>    one per instance ever discovered (history: never deleted)
    SCAN#<instance>  / <scanned_at>     every scan, kept
    LATEST_SCANS     / <instance id>    a copy of the newest scan: "every server's latest scan" is
                                        one Query of one partition instead of one per server
    COUNTERS         / catalog|fleet…   the change counters (``ADD`` in the writes' transaction)

A discovery or a scan is written in transactions of at most 100 actions, each of which also moves
the fleet counter by 1 and logs the instances it wrote under that revision (``dynamodb_fleet_view``):
whatever a reader sees of a write, it sees the counter that went with it (10,000 servers take 100
transactions, each moving the counter: a reader may see a counter move several times during one
discovery, never data newer than its counter).

The newest-scan copy is replaced only under the condition that it is not newer than the scan
being written, so an older scan stored late (a slow server's report) never hides a newer one.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from autopatch.domain.fleet import Instance, OfferedUpdate, ScanReport
from autopatch.errors import StoreError
from autopatch.store.dynamodb_codec import BLOB_PART_BYTES, pack, unpack
from autopatch.store.dynamodb_fleet_view import LOGGED_ACTIONS, counter_key, counter_value, logged_counter
from autopatch.store.dynamodb_io import (
    PK,
    SK,
    DynamoIO,
    Item,
    TransactionCancelled,
    chunks,
    pk_sk,
    put_action,
    update_action,
)

COUNTERS = "COUNTERS"
CATALOG_COUNTER = "catalog"
FLEET_COUNTER = "fleet"
INSTANCES = "INSTANCES"
LATEST_SCANS = "LATEST_SCANS"
_SCANS_PER_TRANSACTION = 48  # a history put and a newest-copy put each, plus the logged counter's 3
_INSTANCES_PER_TRANSACTION = 100 - LOGGED_ACTIONS
_TRIES = 10
_OPTIONAL_INSTANCE_FIELDS = ("ip_address", "ami_id", "ami_name")


def counter_action(table: str, name: str) -> Item:
    """The transaction action that moves a change counter by one."""
    return update_action(table, pk_sk(COUNTERS, name), "ADD #value :one", {":one": 1})


def read_counter(io: DynamoIO, table: str, name: str) -> int:
    item = io.get(table, pk_sk(COUNTERS, name))
    return int(item["value"]) if item else 0


def _instance_update(instance: Instance, discovered_at: datetime) -> tuple[str, dict[str, Any]]:
    stamp = discovered_at.isoformat(timespec="seconds")
    values: dict[str, Any] = {
        ":name": instance.name,
        ":platform_name": instance.platform_name,
        ":platform_version": instance.platform_version,
        ":online": instance.online,
        ":tags": json.dumps(instance.tags, sort_keys=True),
        ":discovered_at": stamp,
    }
    assignments = [f"#{name[1:]} = {name}" for name in values]
    removals = []
    for field in _OPTIONAL_INSTANCE_FIELDS:
        value = getattr(instance, field)
        if value is None:
            removals.append(f"#{field}")
        else:
            values[f":{field}"] = value
            assignments.append(f"#{field} = :{field}")
    if instance.online:  # back online: "offline since" no longer applies
        removals.append("#offline_since")
    else:  # keep the moment it was first found offline
        assignments.append("#offline_since = if_not_exists(#offline_since, :discovered_at)")
    update = "SET " + ", ".join(assignments) + (" REMOVE " + ", ".join(removals) if removals else "")
    return update, values


def _instance(item: Item) -> Instance:
    return Instance(
        instance_id=item["sk"],
        name=item["name"],
        platform_name=item["platform_name"],
        platform_version=item["platform_version"],
        online=bool(item["online"]),
        ip_address=item.get("ip_address"),
        ami_id=item.get("ami_id"),
        ami_name=item.get("ami_name"),
        tags=json.loads(item["tags"]),
        offline_since=item.get("offline_since"),
    )


def scan_item(pk: str, sk: str, scan: ScanReport) -> dict[str, Any]:
    """A scan as an item; the KB lists are packed (a server may list hundreds of hotfixes)."""
    lists = pack({"installed": sorted(scan.installed_kbs), "offered": [[u.kb, u.title] for u in scan.offered]})
    if len(lists) > BLOB_PART_BYTES:
        raise StoreError(
            f"the scan of {scan.instance_id} is too large to store: its KB lists take {len(lists) // 1000} KB "
            f"compressed (at most {BLOB_PART_BYTES // 1000} KB)"
        )
    return {
        PK: pk,
        SK: sk,
        "instance_id": scan.instance_id,
        "scanned_at": scan.scanned_at.isoformat(),
        "os_caption": scan.os_caption,
        "build": scan.build,
        "installation_type": scan.installation_type,
        "pending_reboot": scan.pending_reboot,
        "boot_time": scan.boot_time.isoformat() if scan.boot_time else None,
        "error": scan.error,
        "lists": lists,
    }


def _scan(item: Item) -> ScanReport:
    lists = unpack(item["lists"])
    return ScanReport(
        instance_id=item["instance_id"],
        os_caption=item["os_caption"],
        build=item["build"],
        installation_type=item["installation_type"],
        installed_kbs=frozenset(lists["installed"]),
        offered=tuple(OfferedUpdate(kb, title) for kb, title in lists["offered"]),
        pending_reboot=bool(item["pending_reboot"]),
        scanned_at=datetime.fromisoformat(item["scanned_at"]),
        boot_time=datetime.fromisoformat(item["boot_time"]) if item.get("boot_time") else None,
        error=item.get("error"),
    )


class FleetItems:
    """Mixed into ``DynamoStore``: needs ``self._io`` and ``self.state_table``."""

    _io: DynamoIO
    state_table: str

    def save_instances(self, instances: Iterable[Instance], discovered_at: datetime) -> None:
        """Upsert what discovery found (instances no longer listed are kept), 99 per transaction."""
        latest = {instance.instance_id: instance for instance in instances}  # a repeated id: the last wins
        actions = [
            update_action(self.state_table, pk_sk(INSTANCES, i.instance_id), *_instance_update(i, discovered_at))
            for i in latest.values()
        ]
        ids = list(latest)
        for start in range(0, len(actions), _INSTANCES_PER_TRANSACTION) if actions else [0]:
            end = start + _INSTANCES_PER_TRANSACTION
            self._transact_logged(actions[start:end], ids[start:end])

    def _transact_logged(self, actions: list[Item], instance_ids: list[str]) -> None:
        """``actions`` with the fleet counter's move and its log item (retried when another write moved it)."""
        for attempt in range(_TRIES):
            current = counter_value(self._io.get(self.state_table, counter_key(FLEET_COUNTER)))
            try:
                self._io.transact([*actions, *logged_counter(self.state_table, FLEET_COUNTER, current, instance_ids)])
                return
            except TransactionCancelled:  # another write moved the counter meanwhile
                self._io.backoff(attempt)
        raise StoreError("instances could not be saved: the fleet counter kept moving")

    def list_instances(self) -> list[Instance]:
        instances = [_instance(item) for item in self._io.query(self.state_table, INSTANCES)]
        return sorted(instances, key=lambda instance: (instance.name, instance.instance_id))

    def get_instance(self, instance_id: str) -> Instance | None:
        item = self._io.get(self.state_table, pk_sk(INSTANCES, instance_id))
        return _instance(item) if item else None

    def save_scans(self, scans: Iterable[ScanReport]) -> None:
        """Keep every scan, and move each instance's newest-scan copy forward (never back)."""
        unique = list({(scan.instance_id, scan.scanned_at.isoformat()): scan for scan in scans}.values())
        for batch in chunks(unique, _SCANS_PER_TRANSACTION) if unique else [[]]:
            self._save_scan_batch(batch)

    def _save_scan_batch(self, batch: list[ScanReport]) -> None:
        newest: dict[str, ScanReport] = {}
        for scan in sorted(batch, key=lambda scan: scan.scanned_at.isoformat()):
            newest[scan.instance_id] = scan
        history = [
            put_action(self.state_table, scan_item(f"SCAN#{scan.instance_id}", scan.scanned_at.isoformat(), scan))
            for scan in batch
        ]
        for attempt in range(_TRIES):
            read = self._io.batch_get(
                self.state_table, [*(pk_sk(LATEST_SCANS, i) for i in newest), counter_key(FLEET_COUNTER)]
            )
            stored = {item["sk"]: item["scanned_at"] for item in read if item[PK] == LATEST_SCANS}
            current = counter_value(next((item for item in read if item[PK] == COUNTERS), None))
            copies = [
                put_action(
                    self.state_table,
                    scan_item(LATEST_SCANS, instance_id, scan),
                    "attribute_not_exists(#pk) OR #scanned_at <= :at",
                    {":at": scan.scanned_at.isoformat()},
                )
                for instance_id, scan in newest.items()
                if instance_id not in stored or stored[instance_id] <= scan.scanned_at.isoformat()
            ]
            logged = logged_counter(self.state_table, FLEET_COUNTER, current, sorted({s.instance_id for s in batch}))
            try:
                self._io.transact([*history, *copies, *logged])
                return
            except TransactionCancelled:  # a newer scan or another write landed meanwhile: read again
                self._io.backoff(attempt)
        raise StoreError("scans could not be saved: the newest-scan copies kept changing")

    def latest_scans(self, instance_ids: Collection[str] | None = None) -> dict[str, ScanReport]:
        """The newest scan of each instance (all instances, or the given ones)."""
        if instance_ids is None:
            items = list(self._io.query(self.state_table, LATEST_SCANS))
        else:
            items = self._io.batch_get(self.state_table, [pk_sk(LATEST_SCANS, i) for i in instance_ids])
        return {scan.instance_id: scan for scan in map(_scan, items)}

    def fleet_revision(self) -> int:
        return read_counter(self._io, self.state_table, FLEET_COUNTER)

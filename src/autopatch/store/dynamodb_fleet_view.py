"""DynamoDB side of the fleet view: the change logs and the narrow fleet read (``domain/fleet_view.py``).

Items (state table)::

    CHANGES#fleet    / <revision, 12 digits>   the instance ids one fleet write touched (packed)
    CHANGES#catalog  / <revision, 12 digits>   the product names and KBs one catalog write listed

A logged write moves its counter by a conditional ``SET`` from the value it read (instead of an
``ADD``), so it knows the revision it creates and puts its log item under that revision in the
same transaction; a writer that raced it fails the condition and retries from a fresh read. A
reader holding revision R then knows exactly which items to get: R+1 … the counter, one
BatchGetItem per 100. The item of revision N - ``KEPT_REVISIONS`` is deleted by the write of N.
Writers that still ``ADD`` (the KEV import) leave a revision without an item, which readers take
as "not known" and answer by recomputing.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from typing import Any

from autopatch.domain.fleet_view import CatalogChanges, FleetChanges, ScannedServer
from autopatch.store.dynamodb_codec import pack, unpack
from autopatch.store.dynamodb_io import DynamoIO, Item, delete_action, pk_sk, put_action, update_action

COUNTERS = "COUNTERS"  # as dynamodb_fleet: the counters' partition
CHANGES = "CHANGES#"
KEPT_REVISIONS = 1000  # log items kept per counter
READ_LIMIT = 300  # revisions a reader gets one by one at most; beyond, it recomputes
LOGGED_ACTIONS = 3  # what ``logged_counter`` adds to a transaction


def _sort_key(revision: int) -> str:
    return f"{revision:012d}"


def counter_key(name: str) -> dict[str, str]:
    return pk_sk(COUNTERS, name)


def logged_counter(table: str, name: str, current: int, keys: object) -> list[Item]:
    """The actions moving counter ``name`` from ``current`` (as read) to the next revision, logging ``keys``."""
    revision = current + 1
    actions = [
        update_action(
            table,
            counter_key(name),
            "SET #value = :next",
            {":next": revision, ":current": current},
            condition="attribute_not_exists(#value) OR #value = :current",
        ),
        put_action(table, pk_sk(CHANGES + name, _sort_key(revision)) | {"keys": pack(keys)}),
    ]
    if revision > KEPT_REVISIONS:
        actions.append(delete_action(table, pk_sk(CHANGES + name, _sort_key(revision - KEPT_REVISIONS))))
    return actions


def counter_value(item: Item | None) -> int:
    return int(item["value"]) if item and "value" in item else 0


def catalog_footprint(digest: Mapping[str, Any], names: Mapping[str, str]) -> tuple[set[str], set[int]]:
    """The product names and KBs one document generation lists, from its digest (``dynamodb_catalog_items``)."""
    product_ids = set(digest["affected"]) | {row[1] for row in digest["fixes"]}
    return {names[p] for p in product_ids if p in names}, {int(kb) for kb in digest["kbs"]}


class _Decoder:
    """Stored text and blobs to values, each distinct one decoded once per read (and shared)."""

    def __init__(self) -> None:
        self._lists: dict[bytes, tuple[frozenset[str], frozenset[str]]] = {}
        self._os_tags: dict[str, str | None] = {}

    def lists(self, blob: bytes) -> tuple[frozenset[str], frozenset[str]]:
        found = self._lists.get(blob)
        if found is None:
            lists = unpack(blob)
            found = self._lists[blob] = (frozenset(lists["installed"]), frozenset(kb for kb, _ in lists["offered"]))
        return found

    def os_tag(self, text: str) -> str | None:
        if text not in self._os_tags:
            self._os_tags[text] = json.loads(text).get("OS")
        return self._os_tags[text]


def scanned_server(instance: Item, scan: Item | None, decode: _Decoder) -> ScannedServer:
    described = (
        bool(instance["online"]),
        instance.get("offline_since"),
        instance["platform_name"],
        instance["platform_version"],
        instance.get("ami_name"),
        decode.os_tag(instance["tags"]),
    )
    if scan is None:
        return ScannedServer(instance["sk"], instance["name"], None, *described, None, None, frozenset(), None)
    installed, offered = decode.lists(bytes(scan["lists"]))
    scanned_at = datetime.fromisoformat(scan["scanned_at"])
    return ScannedServer(
        instance["sk"],
        instance["name"],
        scanned_at,
        *described,
        scan["build"],
        scan["installation_type"],
        installed,
        offered,
    )


class FleetViewItems:
    """Mixed into ``DynamoStore``: needs ``self._io`` and ``self.state_table``."""

    _io: DynamoIO
    state_table: str

    def scanned_servers(self, instance_ids: Collection[str] | None = None) -> list[ScannedServer]:
        if instance_ids is None:
            instances = list(self._io.query(self.state_table, "INSTANCES"))
            scans = list(self._io.query(self.state_table, "LATEST_SCANS"))
        else:
            wanted = list(dict.fromkeys(instance_ids))
            instances = self._io.batch_get(self.state_table, [pk_sk("INSTANCES", i) for i in wanted])
            scans = self._io.batch_get(self.state_table, [pk_sk("LATEST_SCANS", i) for i in wanted])
        newest = {item["sk"]: item for item in scans}
        decode = _Decoder()
        servers = [scanned_server(item, newest.get(item["sk"]), decode) for item in instances]
        return sorted(servers, key=lambda server: (server.name, server.instance_id))

    def _changes(self, name: str, since: int) -> tuple[int, list[Any]] | None:
        current = counter_value(self._io.get(self.state_table, counter_key(name)))
        if since > current or current - since > READ_LIMIT:
            return None
        if current == since:
            return current, []
        keys = [pk_sk(CHANGES + name, _sort_key(revision)) for revision in range(since + 1, current + 1)]
        logged = self._io.batch_get(self.state_table, keys)
        entries = [unpack(bytes(item["keys"])) for item in logged]
        if len(entries) != len(keys) or any(entry is None for entry in entries):
            return None
        return current, entries

    def fleet_changes(self, since: int) -> FleetChanges | None:
        found = self._changes("fleet", since)
        if found is None:
            return None
        revision, entries = found
        return FleetChanges(revision, frozenset(instance_id for entry in entries for instance_id in entry))

    def catalog_changes(self, since: int) -> CatalogChanges | None:
        found = self._changes("catalog", since)
        if found is None:
            return None
        revision, entries = found
        return CatalogChanges(
            revision,
            frozenset(name for entry in entries for name in entry["products"]),
            frozenset(kb for entry in entries for kb in entry["kbs"]),
        )


def catalog_keys(products: Iterable[str], kbs: Iterable[int]) -> dict[str, list[Any]]:
    return {"products": sorted(set(products)), "kbs": sorted(set(kbs))}

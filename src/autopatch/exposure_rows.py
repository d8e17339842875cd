"""Rows for many servers at once: each distinct patch level worked out once, each server a few lookups.

``fleet_exposure`` (``assessment.py``) reads the store's narrow fleet view (``ScannedServer``,
``domain/fleet_view.py``), whose KB sets the store hands out shared, and groups the servers by
patch level (``ScannedServer.patch_level``): identification, parsing and the assessment happen
once per level. 100,000 servers at a few hundred patch levels then cost a few hundred of each,
and per server a slice, a lookup and its row.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from autopatch.domain.fleet_view import ScannedServer
from autopatch.domain.os_identity import OsIdentity, identify_product
from autopatch.scanning import unknown_instance
from autopatch.store.base import FleetViewStore


def scanned_targets(store: FleetViewStore, instance_ids: Collection[str] = ()) -> list[ScannedServer]:
    """The servers named, in the order named (all, by name then id, when none are); an unknown id is an input error."""
    if not instance_ids:
        return store.scanned_servers()
    found = {server.instance_id: server for server in store.scanned_servers(instance_ids)}
    for instance_id in instance_ids:
        if instance_id not in found:
            raise unknown_instance(instance_id)
    return [found[instance_id] for instance_id in dict.fromkeys(instance_ids)]


def identity_of(server: ScannedServer) -> OsIdentity:
    """The MSRC product the server runs, as ``scanning.identify`` decides it from an instance and its scan."""
    return identify_product(
        server.platform_name,
        server.platform_version,
        build=server.build,
        installation_type=server.installation_type,
        ami_name=server.ami_name,
        os_tag=server.os_tag,
    )


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a fleet's rows are built.

    100,000 rows are 100,000 new containers that all survive: each collection the allocations
    trigger walks the ever larger young generations for nothing (a third of the time, measured).
    Reference counting still frees everything as usual; only cycles wait until the end. Objects
    freed inside the block (the servers read for the rows) are never walked at all.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


LevelColumns = tuple[str | None, dict[str, Any]]  # the product, and the exposure columns


def exposure_rows(
    servers: Sequence[ScannedServer], columns_of: Callable[[list[ScannedServer]], list[LevelColumns]]
) -> list[dict[str, Any]]:
    """One row per server: its own columns, then the product and exposure columns of its patch level.

    ``columns_of`` gets one server of each distinct patch level (``ScannedServer.patch_level``:
    online state, identification facts, build, installed and offered KBs), all at once so that it
    can read what they need together, and answers for each; the servers sharing a level share its
    answer, so a row costs a slice, a lookup and the dictionary itself.
    """
    numbers: dict[tuple[Any, ...], int] = {}
    representatives: list[ScannedServer] = []
    levels = []  # per server, the number of its level
    for server in servers:
        number = numbers.setdefault(server.patch_level, len(representatives))
        if number == len(representatives):
            representatives.append(server)
        levels.append(number)
    answers = columns_of(representatives)
    rows = []
    for server, number in zip(servers, levels, strict=True):
        product, columns = answers[number]
        scanned_at = server.scanned_at
        rows.append(
            {
                "instance_id": server.instance_id,
                "name": server.name,
                "product": product,
                "build": server.build,
                "scanned_at": scanned_at.isoformat(timespec="seconds") if scanned_at else None,
                "online": server.online,
                **columns,
            }
        )
    return rows


def unknown_reason(server: ScannedServer, identity: OsIdentity) -> str | None:
    """Why a server's exposure is unknown (None when it can be assessed): offline, not scanned, unidentified."""
    if not server.online:
        return f"offline since {server.offline_since}" if server.offline_since else "offline"
    if server.scanned_at is None:
        return "not scanned"
    if identity.product is None:
        return f"unidentified: {identity.reason}"
    return None

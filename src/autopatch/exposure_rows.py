"""Reading many servers for their exposure: each distinct fact decoded once, each server a few lookups.

``fleet_exposure`` (``assessment.py``) reads the store's narrow fleet view (``ScannedServer``,
``domain/fleet_view.py``) through a ``ServerReader``: the product identification is worked out
once per distinct (platform, build, installation type, AMI, OS tag), and ``ServerFacts`` once per
distinct (build, installed, offered), whose sets the store already hands out shared. 100,000
servers at a few hundred patch levels then cost a few hundred identifications and parses, and
per server a handful of dictionary lookups and its row.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from autopatch.domain.exposure import ServerFacts
from autopatch.domain.fleet_view import ScannedServer
from autopatch.domain.identifiers import parse_kb, parse_partial_build
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


class ServerReader:
    """Identities and facts of servers, each distinct one worked out once (one reader per fleet read)."""

    def __init__(self) -> None:
        self._identities: dict[tuple[Any, ...], OsIdentity] = {}
        self._facts: dict[tuple[Any, ...], ServerFacts] = {}
        self._kbs: dict[frozenset[str], frozenset[int]] = {}

    def identity(self, server: ScannedServer) -> OsIdentity:
        """The MSRC product the server runs (as ``scanning.identify`` decides it)."""
        key = (
            server.platform_name,
            server.platform_version,
            server.build,
            server.installation_type,
            server.ami_name,
            server.os_tag,
        )
        found = self._identities.get(key)
        if found is None:
            found = self._identities[key] = identify_product(*key)
        return found

    def facts(self, server: ScannedServer) -> ServerFacts:
        """What the server's newest scan says (as ``assessment.server_facts`` reads it)."""
        key = (server.build, server.installed_kbs, server.offered_kbs)
        found = self._facts.get(key)
        if found is None:
            branch, revision = parse_partial_build(server.build) if server.build is not None else (None, None)
            found = self._facts[key] = ServerFacts(
                build=(*branch, revision) if branch is not None and revision is not None else None,
                installed=self._numbers(server.installed_kbs, "installed"),
                offered=None if server.offered_kbs is None else self._numbers(server.offered_kbs, "offered"),
                branch=branch,
            )
        return found

    def _numbers(self, kbs: frozenset[str], field: str) -> frozenset[int]:
        found = self._kbs.get(kbs)
        if found is None:
            found = self._kbs[kbs] = frozenset(int(parse_kb(kb, field)[2:]) for kb in kbs)
        return found


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

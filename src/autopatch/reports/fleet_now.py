"""The fleet's current exposure as the reports read it: every server, its latest scan, its open CVEs.

The same servers count as ``autopatch exposure`` counts them: a server offline, never scanned or
unidentified has exposure *unknown* (with the reason), never "nothing open"; the others have the
open CVEs of their latest scan (``exposure_sets.py``), with due dates as judged on the report's day.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from autopatch.domain.exposure_history import ExposureSet
from autopatch.domain.fleet import Instance, ScanReport
from autopatch.exposure_sets import ExposureSets, ExposureStore
from autopatch.scanning import resolve_targets
from autopatch.store.base import FleetStore


class FleetNowStore(ExposureStore, FleetStore, Protocol):
    """What reading the fleet's current exposure uses."""


@dataclass(frozen=True, slots=True)
class ServerNow:
    instance: Instance
    scan: ScanReport | None
    product: str | None
    unknown: str | None  # why the exposure is not known (None: assessed)
    exposure: ExposureSet | None


def unknown_reason(instance: Instance, scan: ScanReport | None) -> str | None:
    """``autopatch exposure``'s rule: offline (since when), or never scanned; None when it can be assessed."""
    if not instance.online:
        return "offline" + (f" since {instance.offline_since}" if instance.offline_since else "")
    return "not scanned" if scan is None else None


def fleet_now(
    store: FleetNowStore, on: date, instance_ids: Collection[str] = (), sets: ExposureSets | None = None
) -> list[ServerNow]:
    """Every server (or those named; an unknown id is an input error), by name, with its exposure now."""
    instances = resolve_targets(store, instance_ids)
    scans = store.latest_scans([i.instance_id for i in instances] if instance_ids else None)
    sets = sets or ExposureSets(store)
    found = []
    for instance in instances:
        scan = scans.get(instance.instance_id)
        reason = unknown_reason(instance, scan)
        if reason is not None or scan is None:
            found.append(ServerNow(instance, scan, None, reason, None))
            continue
        server = sets.server(instance, scan, on)
        unknown = None if server.exposure is not None else server.status
        found.append(ServerNow(instance, scan, server.product, unknown, server.exposure))
    return found

"""Storing scans: the scans themselves, and the exposure history they add (``domain/exposure_history.py``).

Every place that keeps scans (a fleet scan, a plan's scans, the engine's verification and final
scans) calls ``store_scans``, so the history misses no stored scan. The exposure of each scan is
worked out when it is stored, with the catalog, the KEV catalog and the SLA policy of that moment,
and judged on the scan's own day: trends and times to remediate are read from these records later,
never re-assessed from old scans against a catalog that has moved on.

It costs little at fleet scale: servers are grouped by patch level (``exposure_sets.py``), so
100,000 scans cost the few hundred distinct levels' open sets plus one row each, written in one
batch with the sets they name.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Protocol

from autopatch.domain.exposure_history import ExposureSet, HistorySpan, day_of, history_time
from autopatch.domain.fleet import Instance, ScanReport
from autopatch.exposure_sets import ExposureSets, ExposureStore
from autopatch.store.base import FleetStore, HistoryStore

_LOOKUPS = 20  # up to this many scans, their instances are read one by one; beyond, the fleet in one read


class HistoryRecordingStore(ExposureStore, FleetStore, HistoryStore, Protocol):
    """What storing scans with their history uses."""


def store_scans(
    store: HistoryRecordingStore, scans: Iterable[ScanReport], instances: Iterable[Instance] | None = None
) -> None:
    """Keep ``scans`` and record the exposure each shows (``instances``: the scanned servers, if at hand)."""
    reports = list(scans)
    store.save_scans(reports)
    record_history(store, reports, instances)


def record_history(
    store: HistoryRecordingStore, scans: Iterable[ScanReport], instances: Iterable[Instance] | None = None
) -> None:
    """Add the exposure of already stored ``scans`` to the history: one span per scan, extended or started."""
    reports = list(scans)
    if not reports:
        return
    known = {instance.instance_id: instance for instance in instances} if instances is not None else {}
    missing = {scan.instance_id for scan in reports} - known.keys()
    if missing:
        known.update(_instances(store, missing))
    exposures = ExposureSets(store)
    spans: list[HistorySpan] = []
    named: dict[str, ExposureSet] = {}
    overdue: dict[tuple[str, date], dict[str, int]] = {}
    for scan in reports:
        instance = known.get(scan.instance_id)
        if instance is None:  # scanned but never discovered: nothing names its product
            continue
        at = history_time(scan.scanned_at)
        day = day_of(at)
        found = exposures.server(instance, scan, day)
        exposure = found.exposure
        if exposure is None:
            spans.append(
                HistorySpan(scan.instance_id, at, at, 1, found.product, scan.build, found.status, None, {}, {})
            )
            continue
        named[exposure.digest] = exposure
        key = (exposure.digest, day)
        if key not in overdue:
            overdue[key] = exposure.overdue_counts(day)
        spans.append(
            HistorySpan(
                scan.instance_id,
                at,
                at,
                1,
                found.product,
                scan.build,
                found.status,
                exposure.digest,
                exposure.counts,
                overdue[key],
            )
        )
    store.append_history(spans, named.values())


def _instances(store: FleetStore, instance_ids: set[str]) -> dict[str, Instance]:
    if len(instance_ids) <= _LOOKUPS:
        found = (store.get_instance(instance_id) for instance_id in sorted(instance_ids))
        return {instance.instance_id: instance for instance in found if instance is not None}
    return {i.instance_id: i for i in store.list_instances() if i.instance_id in instance_ids}

"""Benchmark: recording the exposure history of a fleet scan (``scan_history.record_history``).

Every stored scan adds its exposure to the history: the open CVEs of each distinct patch level
(worked out once per level, with due dates), then one span per server, extended or started, in
one write. Measured on N simulated servers against the full 2016-2026 catalog, beside the plain
``save_scans`` of the same scans as the reference: a first scan (catalogs loaded, every level
worked out), a rescan the same day (nothing changed: every span extended), and a scan the next day
(due dates judged anew), each in the same process, then a first scan in a fresh process's store.

    .venv/bin/python benchmarks/history.py [SERVERS]   (default 10000)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from _catalog import full_catalog
from autopatch.domain.fleet import ScanReport
from autopatch.fleet.simulator import FleetSimulator, SimulatorConfig
from autopatch.scan_history import record_history
from autopatch.scanning import discover_instances, scan_instances
from autopatch.store.sqlite import SqliteStore


def main() -> None:
    servers = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    scratch = Path(os.environ.get("AUTOPATCH_BENCH_DIR", Path(tempfile.gettempdir()) / "autopatch-bench"))
    scratch.mkdir(parents=True, exist_ok=True)
    full_catalog(scratch / "catalog.db").close()
    work = scratch / f"history-{servers}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(scratch / "catalog.db", work)
    store = SqliteStore(work)
    for table in ("scans", "instances"):
        store._db.execute(f"DELETE FROM {table}")
    fleet = FleetSimulator(store, SimulatorConfig(servers=servers, seed=3, offline_fraction=0.0, time_scale=1e9))
    instances = discover_instances(fleet, store)
    reports = list(scan_instances(fleet, store, instances, sleep=lambda _: None, save=False).reports.values())
    fleet.close()
    print(f"history benchmark: {len(reports):,} simulated servers, full catalog")

    def timed(label: str, scans: list[ScanReport], source: SqliteStore, with_instances: bool = True) -> None:
        started = time.perf_counter()
        source.save_scans(scans)
        saved = time.perf_counter() - started
        started = time.perf_counter()
        record_history(source, scans, instances if with_instances else None)
        recorded = time.perf_counter() - started
        print(
            f"{label:<44} save_scans {saved:6.2f} s   history {recorded:6.2f} s  ({len(scans) / recorded:,.0f} scans/s)"
        )

    timed("first scan (catalogs loaded, levels worked out)", reports, store)
    timed(
        "rescan an hour later (every span extended)",
        [replace(s, scanned_at=s.scanned_at + timedelta(hours=1)) for s in reports],
        store,
    )
    timed(
        "rescan the next day (due dates judged anew)",
        [replace(s, scanned_at=s.scanned_at + timedelta(days=1)) for s in reports],
        store,
    )
    fresh = SqliteStore(work)
    timed(
        "the day after, in a fresh store (cold)",
        [replace(s, scanned_at=s.scanned_at + timedelta(days=2)) for s in reports],
        fresh,
        False,
    )
    spans, scans = store._db.execute("SELECT count(*), sum(scans) FROM exposure_history").fetchone()
    sets, size = store._db.execute("SELECT count(*), sum(length(cves)) FROM exposure_sets").fetchone()
    print(
        f"history: {spans:,} spans standing for {scans:,} scans; {sets:,} exposure sets, {size / 1e6:.1f} MB compressed"
    )
    fresh.close()
    store.close()


if __name__ == "__main__":
    main()

"""Benchmark: exposure of 10,000 simulated servers against the full 2016-2026 catalog.

Builds the catalog (once, cached in the scratch folder), a 10,000-server simulated fleet, scans
every server through the simulator, stores the scans, then times ``fleet_exposure`` — the same
step the CLI and the API call — and, as the reference, one plain SQL SELECT of every catalog row
of the fleet's products, measured in the same run.

    .venv/bin/python benchmarks/exposure.py [SERVERS]   (default 10000)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from _catalog import full_catalog
from autopatch.assessment import fleet_exposure
from autopatch.catalog.queries import resolve_products
from autopatch.fleet.simulator import FleetSimulator, SimulatorConfig
from autopatch.scanning import discover_instances, identify, scan_instances


def main() -> None:
    servers = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    scratch = Path(tempfile.gettempdir()) / "autopatch-bench"
    scratch.mkdir(exist_ok=True)
    store = full_catalog(scratch / "catalog.db")
    for table in ("scans", "instances"):
        store._db.execute(f"DELETE FROM {table}")
    config = SimulatorConfig(servers=servers, seed=3, offline_fraction=0.0, time_scale=1e9)
    fleet = FleetSimulator(store, config)
    started = time.perf_counter()
    instances = discover_instances(fleet, store)
    outcome = scan_instances(fleet, store, instances, sleep=lambda _: None)
    setup = time.perf_counter() - started
    products = sorted({p for i in instances if (p := identify(i, outcome.reports.get(i.instance_id)).product)})
    product_ids = [p.product_id for name in products for p in resolve_products(store, name) if p.name == name]

    started = time.perf_counter()
    placeholders = ",".join("?" * len(product_ids))
    rows = store._db.execute(
        "SELECT * FROM affected a JOIN fixes f USING (document_id, cve, product_id) "
        f"WHERE a.product_id IN ({placeholders})",
        product_ids,
    ).fetchall()
    select_seconds = time.perf_counter() - started

    started = time.perf_counter()
    report = fleet_exposure(store)
    seconds = time.perf_counter() - started
    assessed = [row for row in report if row["status"] == "assessed"]
    levels = len({(row["product"], row["build"]) for row in assessed})
    print(f"exposure benchmark: {len(instances):,} simulated servers, {len(products)} products, full catalog")
    print(f"setup (fleet + {len(outcome.reports):,} scans stored)   {setup:7.2f} s")
    print(f"reference: one SELECT of {len(rows):,} catalog rows   {select_seconds:7.3f} s")
    print(
        f"fleet exposure                              {seconds:7.3f} s  {len(report) / seconds:,.0f} servers/s  "
        f"ratio to the SELECT {seconds / select_seconds:.2f}x"
    )
    open_total = sum(row["open_total"] for row in assessed)
    print(
        f"{len(assessed):,} servers assessed at {levels} distinct patch levels; {open_total:,} open (server, CVE) pairs"
    )
    fleet.close()
    store.close()


if __name__ == "__main__":
    main()

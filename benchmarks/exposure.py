"""Benchmark: exposure of a simulated fleet (default 100,000 servers) against the full 2016-2026 catalog.

Builds the catalog (once, cached in the scratch folder), a simulated fleet in a copy of it, scans
every server through the simulator, then measures, each with its reference from the same run:

- storing the fleet's scans (``save_scans``, the step a fleet scan ends with), then storing a
  rescan of every server into a table that already holds one scan each;
- ``fleet_exposure`` — the step the CLI and the API call — against one plain SQL SELECT of every
  catalog row of the fleet's products (best of three), with the peak memory of the process;
- the API's maintained fleet summary (``FleetExposureCache``): the first summary, one scan
  stored and then the summary (only that server is assessed again), and a read of the kept
  summary (the dashboard's first page, rendered as the API sends it), and a month naming one
  product imported and then the summary (only that product's servers are assessed again); the
  summary after all that is checked against a full recomputation.

The measuring runs in a fresh process, so that the peak memory printed is the assessment's, not
the simulator's, which holds the whole fleet.

    .venv/bin/python benchmarks/exposure.py [SERVERS]   (default 100000)
"""

from __future__ import annotations

import gc
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from _catalog import full_catalog
from autopatch.api.models import FleetExposure, page
from autopatch.assessment import fleet_exposure
from autopatch.catalog.queries import resolve_products
from autopatch.domain.catalog import (
    AffectedProduct,
    CatalogDocument,
    DocumentInfo,
    KbFix,
    Product,
    Vulnerability,
    kb_article_url,
)
from autopatch.exposure_cache import FleetExposureCache
from autopatch.fleet.simulator import FleetSimulator, SimulatorConfig
from autopatch.scanning import discover_instances, identify, scan_instances
from autopatch.store.sqlite import SqliteStore

FLEET_TABLES = ("scans", "instances")


def scratch_folder() -> Path:
    folder = Path(os.environ.get("AUTOPATCH_BENCH_DIR", Path(tempfile.gettempdir()) / "autopatch-bench"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM: ru_maxrss would include the parent's, kept across exec)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024


def current_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024


def reset_peak() -> None:
    """Start the peak from the memory held now (Linux: writing 5 to clear_refs resets VmHWM)."""
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def build_fleet(servers: int) -> tuple[Path, list[str]]:
    """A copy of the catalog holding a scanned simulated fleet, and its products; prints the storing figures."""
    scratch = scratch_folder()
    catalog = full_catalog(scratch / "catalog.db")
    for table in FLEET_TABLES:  # older versions of this benchmark left their fleet in the catalog copy
        catalog._db.execute(f"DELETE FROM {table}")
    catalog.close()
    work = scratch / f"exposure-{servers}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(scratch / "catalog.db", work)
    store = SqliteStore(work)
    config = SimulatorConfig(servers=servers, seed=3, offline_fraction=0.0, time_scale=1e9)
    fleet = FleetSimulator(store, config)
    started = time.perf_counter()
    instances = discover_instances(fleet, store)
    outcome = scan_instances(fleet, store, instances, sleep=lambda _: None, save=False)
    simulated = time.perf_counter() - started
    reports = list(outcome.reports.values())
    products = sorted({p for i in instances if (p := identify(i, outcome.reports.get(i.instance_id)).product)})
    fleet.close()
    print(f"exposure benchmark: {len(instances):,} simulated servers, full catalog")
    print(f"simulated fleet (discovery + {len(reports):,} scans)  {simulated:7.2f} s  (the simulator: not timed below)")
    print(f"  peak memory of this process (the simulator, the reports)  {peak_mb():,.0f} MB: not the assessment's")
    started = time.perf_counter()
    store.save_scans(reports)
    stored = time.perf_counter() - started
    rescans = [replace(scan, scanned_at=scan.scanned_at + timedelta(hours=1)) for scan in reports]
    started = time.perf_counter()
    store.save_scans(rescans)
    restored = time.perf_counter() - started
    print(f"{len(reports):,} scans stored                       {stored:7.2f} s  {len(reports) / stored:,.0f} scans/s")
    print(
        f"{len(reports):,} rescans stored beside them         {restored:7.2f} s  {len(reports) / restored:,.0f} scans/s"
    )
    store.close()
    return work, products


def select_reference(store: SqliteStore, products: list[str]) -> tuple[int, float]:
    """One plain SELECT of every catalog row of the fleet's products: best of three."""
    product_ids = [p.product_id for name in products for p in resolve_products(store, name) if p.name == name]
    placeholders = ",".join("?" * len(product_ids))
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        rows = store._db.execute(
            "SELECT * FROM affected a JOIN fixes f USING (document_id, cve, product_id) "
            f"WHERE a.product_id IN ({placeholders})",
            product_ids,
        ).fetchall()
        best = min(best, time.perf_counter() - started)
    return len(rows), best


def another_patch_level(rows: list[dict[str, object]]) -> tuple[str, str]:
    """A server and another server of the same product at a different build (its scan is copied)."""
    assessed = [row for row in rows if row["status"] == "assessed"]
    first = assessed[len(assessed) // 2]
    other = next(r for r in assessed if r["product"] == first["product"] and r["build"] != first["build"])
    return str(first["instance_id"]), str(other["instance_id"])


def rendered_first_page(cache: FleetExposureCache, store: SqliteStore) -> bytes:
    """What ``GET /api/v1/exposure`` answers from the kept summary (the route's own steps)."""
    summary = cache.cached(store) or cache.compute(store)

    def render() -> bytes:
        body = page(summary.rows, 100, 0) | {"totals": summary.totals, "computed_at": summary.computed_at}
        return FleetExposure.model_validate(body).model_dump_json().encode()

    return summary.render((100, 0), render)


def one_product_document(store: SqliteStore, product: str) -> CatalogDocument:
    """A new month naming one product only: a Critical CVE fixed by a new KB."""
    [listed] = [p for p in resolve_products(store, product) if p.name == product]
    cve, kb = "CVE-2031-0001", 9_990_001
    info = DocumentInfo("2031-Jan", "January 2031 Security Updates", "1", date(2031, 1, 14), date(2031, 1, 14), "bench")
    return CatalogDocument(
        info,
        [Product(listed.product_id, listed.name, listed.family)],
        [Vulnerability(cve, "Benchmark Remote Code Execution Vulnerability", (), False, False, date(2031, 1, 14))],
        [AffectedProduct(cve, listed.product_id, "Critical", "Remote Code Execution", 9.8, None, None)],
        [KbFix(cve, listed.product_id, kb, "Security Update", None, (), "Yes", kb_article_url(kb), None)],
    )


def timed(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def measure(work: Path, products: list[str]) -> None:
    store = SqliteStore(work)
    gc.collect()
    rows_count, select_seconds = select_reference(store, products)
    print(f"reference: one SELECT of {rows_count:,} catalog rows   {select_seconds:7.3f} s  (best of 3)")

    gc.collect()
    reset_peak()
    before = current_mb()
    started = time.perf_counter()
    report = fleet_exposure(store)
    first = time.perf_counter() - started
    peak = peak_mb()
    assessed = [row for row in report if row["status"] == "assessed"]
    levels = len({(row["product"], row["build"]) for row in assessed})
    open_total = sum(row["open_total"] for row in assessed)
    servers = len(report)
    changed, source = another_patch_level(report)
    del report, assessed
    gc.collect()
    seconds = min(first, *(timed(lambda: fleet_exposure(store)) for _ in range(2)))
    print(
        f"fleet exposure                              {seconds:7.3f} s  {servers / seconds:,.0f} servers/s  "
        f"ratio to the SELECT {seconds / select_seconds:.2f}x  (best of 3, as the reference)"
    )
    print(
        f"  its first call                            {first:7.3f} s  ratio to the SELECT {first / select_seconds:.2f}x"
    )
    print(f"  peak memory (RSS) of the first call       {peak:7.0f} MB  ({before:.0f} MB before it)  goal < 500 MB")
    print(f"  {levels} distinct patch levels; {open_total:,} open (server, CVE) pairs")
    gc.collect()

    cache = FleetExposureCache()
    built = timed(lambda: cache.get(store))
    print(
        f"maintained summary: first summary           {built:7.3f} s  ratio to the SELECT {built / select_seconds:.2f}x"
    )
    for _ in range(3):  # the first reads render the page once; the figure is a steady dashboard's
        rendered_first_page(cache, store)
    reads = [timed(lambda: rendered_first_page(cache, store)) for _ in range(20)]
    print(
        f"  summary read (first page, as the API sends it)  median {1000 * statistics.median(reads):6.2f} ms, "
        f"max {1000 * max(reads):6.2f} ms over {len(reads)}  goal < 200 ms"
    )
    original, other = store.latest_scans([changed])[changed], store.latest_scans([source])[source]
    updates = []
    for round_number in range(6):  # the server moves to another patch level and back
        template = other if round_number % 2 == 0 else original
        later = datetime.now(UTC) + timedelta(days=1, seconds=round_number)
        store.save_scans([replace(template, instance_id=changed, scanned_at=later)])
        updates.append(timed(lambda: rendered_first_page(cache, store)))
    print(
        f"  one scan stored, then the summary         median {1000 * statistics.median(updates):6.1f} ms, "
        f"max {1000 * max(updates):6.1f} ms over {len(updates)}  goal < 50 ms"
    )
    product = max(products, key=lambda name: sum(row["product"] == name for row in cache.get(store).rows))
    store.replace_document(one_product_document(store, product), "0" * 64)
    imported = timed(lambda: rendered_first_page(cache, store))
    reassessed = sum(row["product"] == product for row in cache.get(store).rows)
    print(
        f"  a month naming one product imported, then the summary  {imported:6.3f} s  "
        f"({reassessed:,} servers of {product} assessed again)"
    )
    kept = cache.get(store)
    full = FleetExposureCache().get(store)
    same = kept.rows == full.rows and kept.totals == full.totals
    print(f"  summary after the scans and the import equals a full recomputation: {'yes' if same else 'NO'}")
    store.close()
    if not same:
        sys.exit(1)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--measure":
        measure(Path(sys.argv[2]), sys.argv[3:])
        return
    servers = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    work, products = build_fleet(servers)
    # A fresh process: its peak memory is the assessment's alone.
    subprocess.run([sys.executable, __file__, "--measure", str(work), *products], check=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work}{suffix}").unlink(missing_ok=True)


if __name__ == "__main__":
    main()

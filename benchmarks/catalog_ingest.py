"""Benchmark: import the full MSRC history (every monthly CVRF XML document) into a fresh catalog.

Prints documents/s, entries/s, peak memory, and the ratio of the import to the time of just
decompressing and parsing the same XML with lxml, measured in the same run. Each phase runs in
its own process so that peak memory (ru_maxrss, workers included) belongs to that phase alone.

    .venv/bin/python benchmarks/catalog_ingest.py [FOLDER]   (default: ../shared/data/msrc/cvrf-xml)
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "msrc" / "cvrf-xml"


def _peak_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def phase_parse(folder: Path) -> dict[str, float]:
    """The reference: read, gunzip and parse every document with lxml, nothing else."""
    from lxml import etree

    started = time.perf_counter()
    size = 0
    for path in sorted(folder.glob("*.xml.gz")):
        data = gzip.decompress(path.read_bytes())
        size += len(data)
        etree.fromstring(data)
    return {"seconds": time.perf_counter() - started, "xml_mb": size / 1e6, "peak_mb": _peak_mb()}


def phase_import(folder: Path, workers: int) -> dict[str, float]:
    from autopatch.catalog.ingest import import_paths
    from autopatch.store.sqlite import SqliteStore

    with tempfile.TemporaryDirectory() as scratch:
        store = SqliteStore(Path(scratch) / "bench.db")
        started = time.perf_counter()
        summary = import_paths(store, [folder], workers=workers)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        again = import_paths(store, [folder], workers=workers)
        reimport = time.perf_counter() - started
        assert again.count("unchanged") == summary.totals["documents"]
        return {
            "seconds": seconds,
            "reimport_seconds": reimport,
            "documents": summary.totals["documents"],
            "entries": summary.totals["entries"],
            "cves": summary.totals["cves"],
            "kbs": summary.totals["kbs"],
            "peak_mb": _peak_mb(),
        }


def _run(phase: str, folder: Path, *args: str) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, __file__, "--phase", phase, str(folder), *args], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, float] = json.loads(output)
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--phase":
        phase, folder = sys.argv[2], Path(sys.argv[3])
        result = phase_parse(folder) if phase == "parse" else phase_import(folder, int(sys.argv[4]))
        print(json.dumps(result))
        return
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(os.environ.get("AUTOPATCH_CATALOG_DIR", DEFAULT_FOLDER))
    files = sorted(folder.glob("*.xml.gz"))
    if not files:
        sys.exit(f"no *.xml.gz documents in {folder}")
    print(f"catalog ingest benchmark: {len(files)} documents in {folder} on {os.cpu_count()} cores")
    parse = _run("parse", folder)
    print(f"reference  gunzip + lxml parse     {parse['seconds']:7.2f} s  ({parse['xml_mb']:.0f} MB of XML)")
    for workers in (1, 2):
        result = _run("import", folder, str(workers))
        seconds = result["seconds"]
        print(
            f"import     {workers} parser process(es)  {seconds:7.2f} s  "
            f"{result['documents'] / seconds:6.1f} documents/s  {result['entries'] / seconds:9,.0f} entries/s  "
            f"peak {result['peak_mb']:.0f} MB  ratio to bare parse {seconds / parse['seconds']:.2f}x"
        )
        print(
            f"           re-import unchanged    {result['reimport_seconds']:7.3f} s  "
            f"({result['reimport_seconds'] / seconds:.1%} of the first import)"
        )
    print(
        f"catalog: {result['documents']:.0f} documents, {result['cves']:.0f} CVEs, "
        f"{result['kbs']:.0f} KBs, {result['entries']:,.0f} (CVE, product, KB) entries"
    )


if __name__ == "__main__":
    main()

"""Shared by the benchmarks: a full-history catalog database, built once and reused."""

from __future__ import annotations

import os
from pathlib import Path

from autopatch.catalog.ingest import import_paths
from autopatch.store.sqlite import SqliteStore

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "shared" / "data" / "msrc" / "cvrf-xml"


def full_catalog(path: Path) -> SqliteStore:
    """The 2016-2026 catalog at ``path``; imported on first use (unchanged files are skipped later)."""
    folder = Path(os.environ.get("AUTOPATCH_CATALOG_DIR", DEFAULT_FOLDER))
    store = SqliteStore(path)
    import_paths(store, [folder])
    return store

"""The import step: files or fetched payloads → parsed documents → the store, one transaction each.

Parsing is CPU-bound and documents are independent, so a folder is parsed by a small process
pool while the main process writes to SQLite; a file whose bytes were imported before is
recognised by its SHA-256 (hashed in chunks) and skipped without being parsed. Workers get
paths, not bytes, and stream-parse them: no file is ever held whole in any process.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from itertools import islice
from pathlib import Path

from autopatch.catalog.sources import expand_paths, file_sha256, parse_file
from autopatch.domain.catalog import CatalogDocument, ImportCounts, StoredDocument
from autopatch.errors import DocumentFormatError, ValidationError
from autopatch.store.base import CatalogStore

ProgressCallback = Callable[[int, int, str], None]
_POOL_THRESHOLD = 4  # below this many files a pool costs more than it saves


@dataclass(frozen=True, slots=True)
class DocumentOutcome:
    source: str
    document_id: str
    revision: str
    action: str  # "imported" | "replaced" | "unchanged" | "older"
    counts: ImportCounts = field(default_factory=ImportCounts)


@dataclass(slots=True)
class ImportSummary:
    """What an import did, for the CLI/HTTP summary (documents, CVEs, products, KBs, entries, time)."""

    outcomes: list[DocumentOutcome] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def count(self, action: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.action == action)

    @property
    def entries_added(self) -> int:
        return sum(outcome.counts.added for outcome in self.outcomes)

    @property
    def entries_updated(self) -> int:
        return sum(outcome.counts.updated for outcome in self.outcomes)

    def as_dict(self) -> dict[str, object]:
        return {
            "documents_imported": self.count("imported") + self.count("replaced"),
            "documents_unchanged": self.count("unchanged"),
            "documents_skipped_older": self.count("older"),
            "entries_added": self.entries_added,
            "entries_updated": self.entries_updated,
            "seconds": round(self.seconds, 3),
            "catalog": dict(self.totals),
            "documents": [
                {
                    "source": outcome.source,
                    "document_id": outcome.document_id,
                    "revision": outcome.revision,
                    "action": outcome.action,
                    "entries_added": outcome.counts.added,
                    "entries_updated": outcome.counts.updated,
                    "entries_removed": outcome.counts.removed,
                }
                for outcome in self.outcomes
            ],
        }


def decide_action(stored: StoredDocument | None, document: CatalogDocument, sha256: str) -> str:
    """A newer revision of a month replaces the older one; an older one never overwrites."""
    info = document.info
    if stored is None:
        return "imported"
    if stored.source_sha256 == sha256:
        return "unchanged"
    if stored.source_format == info.source_format:
        newer = info.revision_key >= stored.revision_key
    else:  # revisions of different formats are not comparable: the later publication wins
        newer = (info.current_release_date or date.min) >= (stored.current_release_date or date.min)
    return "replaced" if newer else "older"


def store_document(store: CatalogStore, document: CatalogDocument, sha256: str, source: str) -> DocumentOutcome:
    stored = store.get_document(document.info.document_id)
    action = decide_action(stored, document, sha256)
    counts = ImportCounts()
    if action in ("imported", "replaced"):
        counts = store.replace_document(document, sha256)
    return DocumentOutcome(source, document.info.document_id, document.info.revision, action, counts)


def import_documents(
    store: CatalogStore,
    documents: Iterable[tuple[str, str, list[CatalogDocument]]],
    total: int,
    on_progress: ProgressCallback | None = None,
) -> ImportSummary:
    """Store (source, sha256, documents) triples as they arrive; the live client feeds this too."""
    started = time.perf_counter()
    summary = ImportSummary()
    for done, (source, sha256, parsed) in enumerate(documents, start=1):
        for document in parsed:
            summary.outcomes.append(store_document(store, document, sha256, source))
        if on_progress:
            on_progress(done, total, source)
    summary.totals = store.counts()
    summary.seconds = time.perf_counter() - started
    return summary


def import_paths(
    store: CatalogStore,
    paths: Iterable[str | Path],
    on_progress: ProgressCallback | None = None,
    workers: int | None = None,
) -> ImportSummary:
    """Import files and folders of MSRC data; unchanged files are skipped before parsing."""
    started = time.perf_counter()
    files = [(path, file_sha256(path)) for path in expand_paths(paths)]
    known = {stored.source_sha256: stored for stored in store.list_documents()}
    unchanged = [(path, known[sha256]) for path, sha256 in files if sha256 in known]
    pending = [path for path, sha256 in files if sha256 not in known]
    summary = import_documents(store, _parse_all(pending, workers), len(files), on_progress)
    summary.outcomes.extend(
        DocumentOutcome(str(path), stored.document_id, stored.revision, "unchanged") for path, stored in unchanged
    )
    summary.seconds = time.perf_counter() - started
    return summary


def _parse_one(path: Path) -> tuple[str, str, list[CatalogDocument]]:
    # The hash is taken again from the bytes actually parsed: the file may have changed meanwhile.
    sha256, documents = parse_file(path)
    return str(path), sha256, documents


def _parse_in_worker(path: Path) -> tuple[str, str, list[CatalogDocument]]:
    try:
        return _parse_one(path)
    except ValidationError as exc:
        # Its three-argument __init__ cannot be unpickled in the parent, which would hang the pool.
        raise DocumentFormatError(str(exc)) from None


def _parse_all(files: list[Path], workers: int | None) -> Iterator[tuple[str, str, list[CatalogDocument]]]:
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    if workers <= 1 or len(files) < _POOL_THRESHOLD or "fork" not in multiprocessing.get_all_start_methods():
        yield from map(_parse_one, files)
        return
    # fork: workers inherit the imported modules, so they start in milliseconds. At most two
    # files per worker are in flight: with imap, parsed documents would queue up in this process
    # whenever SQLite is slower than the parsers (peak memory then depended on timing).
    remaining = iter(files)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        in_flight = deque(pool.apply_async(_parse_in_worker, (path,)) for path in islice(remaining, 2 * workers))
        while in_flight:
            parsed = in_flight.popleft().get()
            if (path := next(remaining, None)) is not None:
                in_flight.append(pool.apply_async(_parse_in_worker, (path,)))
            yield parsed

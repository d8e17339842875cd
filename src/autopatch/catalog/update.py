"""The live update step: fetch a range of MSRC months and import them like files.

Fetched payloads go through the same stream parser and ``import_documents`` as files on disk,
so a month fetched live and the same month imported from a folder end up identical in the store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import date

from autopatch.catalog.client import MsrcClient, UpdateEntry
from autopatch.catalog.ingest import DocumentOutcome, ImportSummary, ProgressCallback, import_documents, import_paths
from autopatch.catalog.sources import parse_hashed
from autopatch.catalog.sug import parse_sug_records
from autopatch.domain.catalog import CatalogDocument
from autopatch.domain.identifiers import Month, month_of_document
from autopatch.errors import DocumentFormatError, ValidationError
from autopatch.settings import Settings
from autopatch.store.base import CatalogStore

SOURCES = ("cvrf", "sug")


def default_months(today: date, count: int = 3) -> tuple[Month, Month]:
    """The last ``count`` months ending with today's: Microsoft revises recent months most often."""
    if count < 1:
        raise ValidationError("count", count, "must be at least 1")
    last = Month(today.year, today.month)
    first = last
    for _ in range(count - 1):
        first = first.previous()
    return first, last


def update_catalog(
    store: CatalogStore,
    client: MsrcClient,
    since: Month,
    until: Month,
    source: str = "cvrf",
    on_progress: ProgressCallback | None = None,
) -> ImportSummary:
    """Bring the months [since, until] up to date from the MSRC API (``cvrf`` documents or ``sug`` pages).

    CVRF months whose index date matches the stored revision are reported as unchanged without
    being downloaded; a monthly document is megabytes and the index is a few kilobytes.
    """
    if source not in SOURCES:
        raise ValidationError("source", source, "must be cvrf or sug")
    if since > until:
        raise ValidationError("since", str(since), f"must not be after until ({until})")
    if source == "sug":
        return _update_from_sug(store, client, since, until, on_progress)
    return _update_from_cvrf(store, client, since, until, on_progress)


def _update_from_cvrf(
    store: CatalogStore,
    client: MsrcClient,
    since: Month,
    until: Month,
    on_progress: ProgressCallback | None,
) -> ImportSummary:
    wanted = sorted(
        (
            (month, entry)
            for entry in client.list_updates()
            # "2018-FEB" and the out-of-band "2017-May-B" count in their month (month_of_document).
            if (month := month_of_document(entry.document_id)) is not None and since <= month <= until
        ),
        key=lambda pair: pair[0],
    )
    unchanged: list[DocumentOutcome] = []
    pending: list[UpdateEntry] = []
    for _, entry in wanted:
        stored = store.get_document(entry.document_id)
        if (
            stored is not None
            and entry.current_release_date is not None
            and stored.current_release_date == entry.current_release_date
        ):
            source = client.cvrf_url(entry.document_id)
            unchanged.append(DocumentOutcome(source, entry.document_id, stored.revision, "unchanged"))
        else:
            pending.append(entry)

    def fetched() -> Iterator[tuple[str, str, list[CatalogDocument]]]:
        # A generator, so each month is parsed and stored before the next one is downloaded.
        for entry in pending:
            url = client.cvrf_url(entry.document_id)
            with client.fetch_cvrf(entry.document_id) as body:
                sha256, documents = parse_hashed(body, url)
            yield url, sha256, documents

    summary = import_documents(store, fetched(), len(pending), on_progress)
    summary.outcomes[:0] = unchanged
    return summary


def _update_from_sug(
    store: CatalogStore,
    client: MsrcClient,
    since: Month,
    until: Month,
    on_progress: ProgressCallback | None,
) -> ImportSummary:
    records = list(client.iter_sug_records(since, until))
    url = client.sug_url
    try:
        documents = parse_sug_records(records, url)
        # OData guarantees no order across calls: hash the sorted canonical records so that a
        # re-run over the same data is recognised as unchanged.
        canonical = sorted(json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False) for r in records)
    except RecursionError as exc:
        raise DocumentFormatError(f"{url}: SUG records nested too deeply to be MSRC data") from exc
    sha256 = hashlib.sha256("\n".join(canonical).encode("utf-8")).hexdigest()
    return import_documents(store, [(url, sha256, documents)], 1, on_progress)


def fetch_months(
    store: CatalogStore,
    settings: Settings,
    since: Month,
    until: Month,
    source: str = "cvrf",
    on_progress: ProgressCallback | None = None,
) -> ImportSummary:
    """``autopatch catalog update``: the months [since, until] from the MSRC API configured in ``settings``."""
    with MsrcClient(settings.msrc_base_url, timeout=settings.http_timeout, retries=settings.http_retries) as client:
        return update_catalog(store, client, since, until, source, on_progress)


def refresh_catalog(
    store: CatalogStore, settings: Settings, today: date, on_progress: ProgressCallback | None = None
) -> ImportSummary:
    """ "Update now" (the API's catalog job): the offline folder when ``AUTOPATCH_CATALOG_DIR`` names one, as
    ``make demo`` does, else the last three months from MSRC like ``catalog update`` without options."""
    if settings.catalog_dir is not None:
        return import_paths(store, [settings.catalog_dir], on_progress, workers=settings.import_workers)
    first, last = default_months(today)
    return fetch_months(store, settings, first, last, "cvrf", on_progress)

"""Benchmark: import the full MSRC history into the DynamoDB adapter on moto, beside SQLite in the same run.

Every monthly CVRF XML document is parsed once (not timed); then the same parsed documents are
stored with ``replace_document`` into a fresh SQLite store (the reference) and into a
``DynamoStore`` on moto's in-process DynamoDB (``mock_aws``: no network, no account). Prints
documents/s and (CVE, product, KB) entries/s for both and their ratio, the DynamoDB items written
per second, BatchWriteItem calls, and what the same import would cost in write units on AWS.

moto is a Python model of DynamoDB: its figures measure the adapter's work plus moto's, not the
service's latency or throughput. They show what a full import asks of DynamoDB (items, calls,
write units) and catch a change that makes an import do much more of it.

    .venv/bin/python benchmarks/dynamodb_import.py [FOLDER]   (default: ../shared/data/msrc/cvrf-xml)
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _catalog import DEFAULT_FOLDER
from autopatch.catalog.sources import parse_file
from autopatch.domain.catalog import CatalogDocument
from autopatch.store.base import CatalogStore
from autopatch.store.dynamodb import DynamoStore
from autopatch.store.dynamodb_codec import item_size
from autopatch.store.sqlite import SqliteStore

WRITE_UNIT_PRICE = 0.625 / 1_000_000  # on-demand, us-east-1, per write request unit (AWS_TESTING.md)


def parse_all(folder: Path) -> list[tuple[str, CatalogDocument]]:
    documents = []
    for path in sorted(folder.glob("*.xml.gz")):
        sha256, parsed = parse_file(path)
        documents.extend((sha256, document) for document in parsed)
    return documents


def store_all(store: CatalogStore, documents: list[tuple[str, CatalogDocument]]) -> float:
    started = time.perf_counter()
    for sha256, document in documents:
        store.replace_document(document, sha256)
    return time.perf_counter() - started


def count_writes(store: DynamoStore, tally: Counter[str]) -> None:
    """Count what the adapter asks of DynamoDB: calls, items put, and their write units (1 per KB begun)."""
    call = store._io.call

    def counting(operation: str, **arguments: Any) -> dict[str, Any]:
        tally[operation] += 1
        if operation == "batch_write_item":
            for table, requests in arguments["RequestItems"].items():
                for request in requests:
                    if "PutRequest" in request:
                        item = request["PutRequest"]["Item"]
                        tally["items"] += 1
                        units = math.ceil(item_size(item) / 1024)
                        # The by_month index projects every attribute: each entry is written twice.
                        tally["write_units"] += units * (2 if table == store.catalog_table and "month" in item else 1)
                    else:
                        tally["deletes"] += 1
        return call(operation, **arguments)

    store._io.call = counting  # type: ignore[method-assign]


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(os.environ.get("AUTOPATCH_CATALOG_DIR", DEFAULT_FOLDER))
    if not sorted(folder.glob("*.xml.gz")):
        sys.exit(f"no *.xml.gz documents in {folder}")
    started = time.perf_counter()
    documents = parse_all(folder)
    entries = sum(len(document.fixes) for _, document in documents)
    print(
        f"DynamoDB import benchmark: {len(documents)} documents, {entries:,} entries from {folder} "
        f"(parsed in {time.perf_counter() - started:.1f} s, not counted)"
    )
    with tempfile.TemporaryDirectory() as scratch:
        sqlite = SqliteStore(Path(scratch) / "bench.db")
        sqlite_seconds = store_all(sqlite, documents)
        reference = sqlite.counts()
        sqlite.close()
    print(
        f"SQLite (reference)  {sqlite_seconds:8.2f} s  {len(documents) / sqlite_seconds:7.2f} documents/s  "
        f"{entries / sqlite_seconds:9,.0f} entries/s"
    )

    from moto import mock_aws

    tally: Counter[str] = Counter()
    with mock_aws():
        endpoint = "https://dynamodb.us-east-1.amazonaws.com"  # moto's, whatever AWS_ENDPOINT_URL says
        store = DynamoStore("bench-catalog", "bench-state", region="us-east-1", endpoint_url=endpoint)
        store.create_tables(wait=False)
        count_writes(store, tally)
        dynamo_seconds = store_all(store, documents)
        counts = store.counts()
    assert counts == reference, f"DynamoDB counts {counts} differ from SQLite's {reference}"
    print(
        f"DynamoDB on moto    {dynamo_seconds:8.2f} s  {len(documents) / dynamo_seconds:7.2f} documents/s  "
        f"{entries / dynamo_seconds:9,.0f} entries/s  {tally['items'] / dynamo_seconds:9,.0f} items/s  "
        f"ratio to SQLite {dynamo_seconds / sqlite_seconds:.1f}x"
    )
    print(
        f"DynamoDB work: {tally['items']:,} items put in {tally['batch_write_item']:,} BatchWriteItem calls, "
        f"{tally['transact_write_items']} transactions, {tally['query']} queries, {tally['get_item']} GetItems; "
        f"{tally['write_units']:,} write units with the by_month index "
        f"(≈ ${tally['write_units'] * WRITE_UNIT_PRICE:.2f} on demand)"
    )
    print(f"catalog: {counts}")


if __name__ == "__main__":
    main()

"""The store ports' contract (``tests/store_contract.py``) run against every store adapter.

A new adapter (DynamoDB on moto) joins by adding one factory to ``STORE_FACTORIES``: a context
manager that takes a fresh temporary folder and yields an empty store typed as the ``Store`` port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from autopatch.store.base import Store
from autopatch.store.dynamodb import DynamoStore
from autopatch.store.sqlite import SqliteStore

from .aws_support import serialised_dynamodb
from .baselines_contract import BaselineStoreContract
from .fleet_view_contract import FleetViewStoreContract
from .history_store_contract import HistoryStoreContract
from .kev_store_contract import KevStoreContract
from .store_contract import StoreContract
from .store_snapshot_contract import SnapshotStoreContract
from .window_store_contract import WindowStoreContract


@contextmanager
def sqlite_store(folder: Path) -> Iterator[Store]:
    store = SqliteStore(folder / "store.db")
    try:
        yield store
    finally:
        store.close()


MOTO_ENDPOINT = "https://dynamodb.us-east-1.amazonaws.com"


@cache
def moto_client() -> Any:
    """One client for every test of a worker: building one loads botocore's models (about 0.2 s).

    moto intercepts a client's requests whenever a mock is active, whenever the client was made;
    the state lives in the mock, which each test starts afresh, so sharing the client shares nothing.
    """
    import boto3

    return boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=MOTO_ENDPOINT,  # never one from the environment (AWS_ENDPOINT_URL): moto must answer
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


@contextmanager
def dynamodb_store(folder: Path) -> Iterator[Store]:
    """Both tables on moto, in-process, in a fresh mock per test (a few milliseconds)."""
    with serialised_dynamodb(), mock_aws():  # two handles racing for one item: one wins, as on DynamoDB
        store = DynamoStore("contract-catalog", "contract-state", client=moto_client(), sleep=lambda _: None)
        store.create_tables(wait=False)
        try:
            yield store
        finally:
            store.close()


STORE_FACTORIES: dict[str, Callable[[Path], AbstractContextManager[Store]]] = {
    "dynamodb": dynamodb_store,
    "sqlite": sqlite_store,
}


@pytest.fixture(params=sorted(STORE_FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with STORE_FACTORIES[request.param](tmp_path) as fresh:
        yield fresh


@pytest.fixture
def other_handle(store: Store) -> Iterator[Store]:
    """A second handle on the same storage as ``store``: another process's view (two schedulers, say)."""
    if isinstance(store, SqliteStore):
        other: Store = SqliteStore(store.path)
    else:
        assert isinstance(store, DynamoStore)
        other = DynamoStore(store.catalog_table, store.state_table, client=moto_client(), sleep=lambda _: None)
    try:
        yield other
    finally:
        other.close()


class TestStoreContract(
    StoreContract,
    WindowStoreContract,
    SnapshotStoreContract,
    BaselineStoreContract,
    KevStoreContract,
    HistoryStoreContract,
    FleetViewStoreContract,
):
    """Collects the contract once per factory above."""

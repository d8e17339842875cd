"""The store ports' contract (``tests/store_contract.py``) run against every store adapter.

A new adapter (DynamoDB on moto) joins by adding one factory to ``STORE_FACTORIES``: a context
manager that takes a fresh temporary folder and yields an empty store typed as the ``Store`` port.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from autopatch.store.base import Store
from autopatch.store.sqlite import SqliteStore

from .store_contract import StoreContract


@contextmanager
def sqlite_store(folder: Path) -> Iterator[Store]:
    store = SqliteStore(folder / "store.db")
    try:
        yield store
    finally:
        store.close()


STORE_FACTORIES: dict[str, Callable[[Path], AbstractContextManager[Store]]] = {"sqlite": sqlite_store}


@pytest.fixture(params=sorted(STORE_FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with STORE_FACTORIES[request.param](tmp_path) as fresh:
        yield fresh


class TestStoreContract(StoreContract):
    """Collects the contract once per factory above."""

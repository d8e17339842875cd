"""DynamoDB adapter of the store ports: the AWS deployment's store, behaving as ``SqliteStore`` does.

Two tables (``table_definitions`` is the one description of them; the SAM template declares the
same, and a test can compare the two):

- the **catalog** table holds the MSRC data: bulk, rewritten a month at a time by imports with
  BatchWriteItem, read by Query. Keys as the original's (``OS#<product>`` / ``CVE#<id>``, plus a
  ``by_month`` index), without its TTL. See ``dynamodb_catalog_items``.
- the **state** table holds everything that changes one item at a time, under conditions and in
  transactions: the catalog's document headers, digests and counters, the fleet, runs, tokens,
  the audit log, settings, waiters, maintenance windows, baselines and CISA's KEV catalog. See
  ``dynamodb_fleet``, ``dynamodb_run_reads``, ``dynamodb_access``, ``dynamodb_windows``,
  ``dynamodb_baselines``, ``dynamodb_kev``.

The catalog table is never in a transaction. Keeping every transaction on the state table keeps
the two kinds of load apart (an import's
thousands of writes per second never contend with a run's conditional updates) and lets capacity,
backups and retention differ per table. Nothing has a TTL: runs are history (defect 3 of the
original). ``docs/dynamodb.md`` maps each access pattern to its keys and says what it costs.

Clients: injected (tests pass a moto-backed one), or built on first use from the given session or
region and endpoint (DynamoDB Local, LocalStack), with botocore's standard retries for throttling.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from botocore.config import Config  # type: ignore[import-untyped, unused-ignore]

from autopatch.domain.catalog import Product
from autopatch.errors import StoreError
from autopatch.store.dynamodb_access import AccessItems, SettingsItems
from autopatch.store.dynamodb_baselines import BaselineItems
from autopatch.store.dynamodb_catalog import CatalogItems, CatalogView
from autopatch.store.dynamodb_catalog_items import BY_MONTH
from autopatch.store.dynamodb_fleet import FleetItems
from autopatch.store.dynamodb_fleet_view import FleetViewItems
from autopatch.store.dynamodb_history import HistoryItems
from autopatch.store.dynamodb_io import PK, SK, DynamoIO
from autopatch.store.dynamodb_jobs import JobItems
from autopatch.store.dynamodb_kev import KevItems
from autopatch.store.dynamodb_rings import RingItems
from autopatch.store.dynamodb_run_reads import BY_INSTANCE
from autopatch.store.dynamodb_runs import RunItems
from autopatch.store.dynamodb_snapshots import SnapshotItems
from autopatch.store.dynamodb_windows import WindowItems

if TYPE_CHECKING:
    from autopatch.store.base import Store

DEFAULT_CATALOG_TABLE = "autopatch-catalog"
DEFAULT_STATE_TABLE = "autopatch-state"
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 8})


def _key_schema(hash_name: str, range_name: str) -> list[dict[str, str]]:
    return [{"AttributeName": hash_name, "KeyType": "HASH"}, {"AttributeName": range_name, "KeyType": "RANGE"}]


def _attributes(*names: str) -> list[dict[str, str]]:
    return [{"AttributeName": name, "AttributeType": "S"} for name in names]


def table_definitions(
    catalog_table: str = DEFAULT_CATALOG_TABLE, state_table: str = DEFAULT_STATE_TABLE
) -> list[dict[str, Any]]:
    """The CreateTable parameters of both tables: keys, indexes, on-demand billing, no TTL.

    ``by_month`` (catalog): ``month`` = ``MONTH#<document>``, ``month_key`` = ``OS#<product>#CVE#<cve>``
    — a month's entries for one product, as the original's ``DATE#<YYYY-MM>`` index.
    ``by_instance`` (state): ``patch`` = ``PATCH#<instance>``, ``patch_key`` =
    ``KB#<kb>#<run created_at>#<run>`` — a server's KBs across runs, as the original's progress table.
    Both project every attribute: each answers its query without a second read.
    """
    return [
        {
            "TableName": catalog_table,
            "AttributeDefinitions": _attributes(PK, SK, "month", "month_key"),
            "KeySchema": _key_schema(PK, SK),
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": BY_MONTH,
                    "KeySchema": _key_schema("month", "month_key"),
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            "BillingMode": "PAY_PER_REQUEST",
        },
        {
            "TableName": state_table,
            "AttributeDefinitions": _attributes(PK, SK, "patch", "patch_key"),
            "KeySchema": _key_schema(PK, SK),
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": BY_INSTANCE,
                    "KeySchema": _key_schema("patch", "patch_key"),
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            "BillingMode": "PAY_PER_REQUEST",
        },
    ]


class DynamoStore(
    CatalogItems,
    FleetItems,
    RunItems,
    RingItems,
    AccessItems,
    SettingsItems,
    JobItems,
    WindowItems,
    SnapshotItems,
    BaselineItems,
    KevItems,
    HistoryItems,
    FleetViewItems,
):
    """``Store`` on two DynamoDB tables; the client is injected or built on first use."""

    def __init__(
        self,
        catalog_table: str = DEFAULT_CATALOG_TABLE,
        state_table: str = DEFAULT_STATE_TABLE,
        *,
        client: Any = None,
        session: Any = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.catalog_table = catalog_table
        self.state_table = state_table
        self.region = region
        self.endpoint_url = endpoint_url
        self._client = client
        self._owns_client = client is None
        self._session = session
        self._client_lock = threading.Lock()
        self._io = DynamoIO(self._dynamodb, sleep)
        self._catalog_lock = threading.Lock()
        self._view: CatalogView | None = None
        self._known_products: dict[str, Product] | None = None

    def _dynamodb(self) -> Any:
        """The client, built once on first use (a boto3 Session must not be shared between threads)."""
        with self._client_lock:
            if self._client is None:
                try:
                    if self._session is None:
                        import boto3  # type: ignore[import-untyped, unused-ignore]  # late: CLI start-up stays fast

                        self._session = boto3.session.Session(region_name=self.region)
                    self._client = self._session.client(
                        "dynamodb", region_name=self.region, endpoint_url=self.endpoint_url, config=CLIENT_CONFIG
                    )
                except Exception as exc:  # botocore raises many kinds here (no region, bad profile…)
                    raise StoreError(f"cannot create the DynamoDB client: {exc}") from exc
            return self._client

    def create_tables(self, wait: bool = True) -> None:
        """Create both tables (tests, DynamoDB Local); on AWS the SAM template creates them."""
        for definition in table_definitions(self.catalog_table, self.state_table):
            self._io.call("create_table", **definition)
        if wait:
            waiter = self._dynamodb().get_waiter("table_exists")
            for table in (self.catalog_table, self.state_table):
                waiter.wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    def close(self) -> None:
        """Close a client this store built (an injected one belongs to its owner)."""
        with self._client_lock:
            if self._owns_client and self._client is not None:
                self._client.close()
                self._client = None


if TYPE_CHECKING:

    def _implements_every_port(store: DynamoStore) -> Store:
        """mypy proves here that the adapter is a whole ``Store``: a port's new method fails the type check."""
        return store

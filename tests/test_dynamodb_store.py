"""What only the DynamoDB adapter has to get right: DynamoDB's limits, retries and races, on moto.

The store contract (``tests/store_contract.py``) proves the behaviour every adapter shares. These
tests look under it: batches the service leaves unprocessed, transactions cancelled by conflicts,
items near the 400 KB limit, imports that die half way, and two processes racing for a server or
a KB — the cases SQLite never meets because its transactions serialise everything.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from autopatch.domain.catalog import KbFix
from autopatch.domain.fleet import OfferedUpdate, ScanReport
from autopatch.domain.patching import KbState
from autopatch.domain.runs import RunServer
from autopatch.errors import ConflictError, NotFoundError, StateError, StoreError
from autopatch.store.dynamodb import DynamoStore, table_definitions
from autopatch.store.dynamodb_catalog_items import build_items
from autopatch.store.dynamodb_holds import CLAIM_SECONDS, hold_key
from autopatch.store.dynamodb_io import MAX_TRIES, pk_sk
from autopatch.store.dynamodb_run_reads import item_key

from .store_contract import DB, SHA_A, SHA_B, WEB, WS2022, create, february, january, run_record
from .test_store_contract import moto_client


class FlakyClient:
    """The moto client, except that some calls answer as a busy DynamoDB does."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.unprocessed_writes = 0  # BatchWriteItem calls that leave half their requests unprocessed
        self.conflicts = 0  # TransactWriteItems calls cancelled by a TransactionConflict

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:  # noqa: N803 - boto3's name
        if not self.unprocessed_writes:
            return dict(self.client.batch_write_item(RequestItems=RequestItems))
        self.unprocessed_writes -= 1
        ((table, requests),) = RequestItems.items()
        done, left = requests[: len(requests) // 2], requests[len(requests) // 2 :]
        if done:
            self.client.batch_write_item(RequestItems={table: done})
        return {"UnprocessedItems": {table: left}}

    def transact_write_items(self, TransactItems: list[Any]) -> dict[str, Any]:  # noqa: N803 - boto3's name
        if self.conflicts:
            self.conflicts -= 1
            reasons = [{"Code": "TransactionConflict"}] + [{"Code": "None"}] * (len(TransactItems) - 1)
            error = {"Error": {"Code": "TransactionCanceledException", "Message": "conflict"}}
            raise ClientError(error | {"CancellationReasons": reasons}, "TransactWriteItems")
        return dict(self.client.transact_write_items(TransactItems=TransactItems))


@pytest.fixture
def flaky() -> Iterator[FlakyClient]:
    with mock_aws():
        yield FlakyClient(moto_client())


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def store(flaky: FlakyClient, sleeps: list[float]) -> DynamoStore:
    store = DynamoStore("test-catalog", "test-state", client=flaky, sleep=sleeps.append)
    store.create_tables(wait=False)
    return store


def scan_table(store: DynamoStore, table: str) -> list[dict[str, Any]]:
    pages = moto_client().get_paginator("scan").paginate(TableName=table)
    return [item for page in pages for item in page["Items"]]


def kb_fixes(count: int, build_length: int) -> list[KbFix]:
    """``count`` fixes of one KB whose fixed builds do not compress (random text)."""
    import os

    return [
        KbFix(
            f"CVE-2024-{10000 + n}",
            WS2022.product_id,
            5034129,
            "Security Update",
            os.urandom(build_length // 2).hex(),
            (),
            "Yes",
            None,
            None,
        )
        for n in range(count)
    ]


# --- tables ---------------------------------------------------------------------------------------


def test_the_created_tables_are_the_declared_definitions_without_ttl(store: DynamoStore) -> None:
    client = moto_client()
    for definition in table_definitions("test-catalog", "test-state"):
        table = client.describe_table(TableName=definition["TableName"])["Table"]
        assert table["KeySchema"] == definition["KeySchema"]
        assert sorted(a["AttributeName"] for a in table["AttributeDefinitions"]) == sorted(
            a["AttributeName"] for a in definition["AttributeDefinitions"]
        )
        assert [(i["IndexName"], i["KeySchema"]) for i in table["GlobalSecondaryIndexes"]] == [
            (i["IndexName"], i["KeySchema"]) for i in definition["GlobalSecondaryIndexes"]
        ]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        ttl = client.describe_time_to_live(TableName=definition["TableName"])["TimeToLiveDescription"]
        assert ttl["TimeToLiveStatus"] == "DISABLED"  # runs are history: nothing expires


# --- retries and errors ---------------------------------------------------------------------------


def test_unprocessed_batch_writes_are_sent_again_after_a_growing_backoff(
    store: DynamoStore, flaky: FlakyClient, sleeps: list[float]
) -> None:
    flaky.unprocessed_writes = 3
    store.replace_document(january(), SHA_A)
    assert len(sleeps) == 3 and sleeps[0] < sleeps[2] <= 2.0
    assert len(store.fixes_for_kbs([5034129])) == 3 and len(store.affected([WS2022.product_id])) == 2


def test_a_batch_the_service_never_takes_fails_as_a_store_error(store: DynamoStore, flaky: FlakyClient) -> None:
    flaky.unprocessed_writes = 10 * MAX_TRIES
    with pytest.raises(StoreError, match="unprocessed"):
        store.replace_document(january(), SHA_A)
    assert store.get_document("2024-Jan") is None  # never published


def test_a_transaction_cancelled_by_a_conflict_is_retried(
    store: DynamoStore, flaky: FlakyClient, sleeps: list[float]
) -> None:
    flaky.conflicts = 2
    store.save_instances([], datetime(2024, 2, 14, tzinfo=UTC))
    assert store.fleet_revision() == 1 and len(sleeps) == 2


def test_errors_of_the_service_become_store_errors(flaky: FlakyClient) -> None:
    missing = DynamoStore("no-catalog", "no-state", client=flaky)
    with pytest.raises(StoreError, match="ResourceNotFoundException"):
        missing.get_run("p-1")


def test_query_pages_are_followed_past_one_megabyte(store: DynamoStore) -> None:
    for number in range(30):
        store.put_setting(f"key-{number:02}", "x" * 60_000)
    assert len(store.stored_settings()) == 30


# --- the 400 KB item limit -------------------------------------------------------------------------


def test_a_scan_listing_thousands_of_kbs_is_one_item(store: DynamoStore) -> None:
    report = ScanReport(
        instance_id=WEB,
        os_caption="Microsoft Windows Server 2022 Datacenter",
        build="10.0.20348.2227",
        installation_type="Server",
        installed_kbs=frozenset(f"KB{5000000 + n}" for n in range(20_000)),
        offered=tuple(OfferedUpdate(f"KB{5100000 + n}", f"2024-02 Update {n} " + "x" * 180) for n in range(400)),
        pending_reboot=False,
        scanned_at=datetime(2024, 2, 14, tzinfo=UTC),
    )
    store.save_scans([report])
    assert store.latest_scans([WEB]) == {WEB: report}


def test_a_scan_too_large_even_compressed_is_refused_with_its_instance_named(store: DynamoStore) -> None:
    import os

    report = ScanReport(
        WEB,
        "Windows",
        "10.0.20348.1",
        "Server",
        frozenset(os.urandom(32).hex() for _ in range(20_000)),
        (),
        False,
        datetime(2024, 2, 14, tzinfo=UTC),
    )
    with pytest.raises(StoreError, match=WEB):
        store.save_scans([report])
    assert store.latest_scans() == {} and store.fleet_revision() == 0


def test_a_kb_whose_fixes_outgrow_an_item_is_split_into_parts(store: DynamoStore) -> None:
    document = january()
    document.fixes = kb_fixes(2_500, 240)
    store.replace_document(document, SHA_A)
    parts = moto_client().query(
        TableName="test-catalog",
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "KB#5034129"}},
    )["Items"]
    assert len(parts) >= 2
    found = {(r.fix.cve, r.fix.fixed_build) for r in store.fixes_for_kbs([5034129])}
    assert found == {(f.cve, f.fixed_build) for f in document.fixes}


# --- imports: generations ------------------------------------------------------------------------


def test_replacing_a_month_leaves_no_item_of_its_old_generation(store: DynamoStore) -> None:
    store.replace_document(january(), SHA_A)
    store.replace_document(february(), SHA_B)
    newer = january("2")
    newer.fixes = newer.fixes[:2]
    store.replace_document(newer, "c" * 64)
    current = {
        h["document_id"]["S"]: h["gen"]["S"] for h in scan_table(store, "test-state") if h["pk"]["S"] == "CATALOG"
    }
    generations = {(i["doc"]["S"], i["gen"]["S"]) for i in scan_table(store, "test-catalog") if "gen" in i}
    generations |= {(i["doc"]["S"], i["gen"]["S"]) for i in scan_table(store, "test-state") if i["pk"]["S"] == "DIGEST"}
    assert generations == set(current.items())
    entries = [i for i in scan_table(store, "test-catalog") if i["pk"]["S"].startswith("OS#")]
    assert len(entries) == 4 + 1  # January's four (product, CVE) pairs and February's one


def test_an_import_that_died_is_invisible_and_cleaned_up_by_the_next_import_of_its_month(store: DynamoStore) -> None:
    store.replace_document(january(), SHA_A)
    dead = january("2")
    dead.fixes = [f._replace(fixed_build="10.0.20348.9999") for f in dead.fixes]
    for generation, started in (("dead01", time.time() - 7200), ("young1", time.time())):
        items = build_items(dead, generation, started)
        store._io.batch_write("test-state", items.digest_items)
        store._io.batch_write("test-catalog", [*items.entries, *items.kb_items])  # then the process died
    assert {r.fix.fixed_build for r in store.fixes_for_kbs([5034129])} == {"10.0.20348.2227"}
    assert store.counts()["entries"] == 4
    store.replace_document(january("3"), SHA_B)
    left = {i["gen"]["S"] for i in scan_table(store, "test-catalog") if "gen" in i}
    assert "dead01" not in left and "young1" in left  # an hour-young generation may be an import running now
    assert {r.fix.fixed_build for r in store.fixes_for_kbs([5034129])} == {"10.0.20348.2227"}


# --- races ----------------------------------------------------------------------------------------


def skip_first_hold_check(store: DynamoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """As if another process claimed the server between our check and our write."""
    check = store.holds_to_take
    calls = []

    def racing(run_id: str, instance_ids: list[str]) -> dict[str, str | None]:
        calls.append(run_id)
        return dict.fromkeys(instance_ids) if len(calls) == 1 else check(run_id, instance_ids)

    monkeypatch.setattr(store, "holds_to_take", racing)


def test_two_runs_racing_for_a_server_cannot_both_hold_it(store: DynamoStore, monkeypatch: pytest.MonkeyPatch) -> None:
    create(store, "p-1")
    skip_first_hold_check(store, monkeypatch)
    with pytest.raises(ConflictError, match="p-1"):
        create(store, "p-2", created_at="2024-02-14T10:00:00+00:00")
    with pytest.raises(NotFoundError):
        store.get_run("p-2")
    assert store.run_items("p-2") == [] and store.run_servers("p-2") == [] and store.transitions("p-2") == []
    assert store.run_holding(WEB) == store.run_holding(DB) == "p-1"
    assert [i.run_id for i in store.items_of_instance(WEB)] == ["p-1"]


def servers(run_id: str, count: int) -> list[RunServer]:
    return [RunServer(run_id, f"i-{n:017x}", f"srv-{n:03}", None, None) for n in range(count)]


def test_a_run_claiming_more_servers_than_a_transaction_rolls_back_every_claim_when_one_fails(
    store: DynamoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy = servers("p-a", 105)[102]
    store.create_run(run_record("p-a"), [busy], [])
    skip_first_hold_check(store, monkeypatch)
    with pytest.raises(ConflictError, match="p-a"):
        store.create_run(run_record("p-b"), servers("p-b", 105), [])
    with pytest.raises(NotFoundError):
        store.get_run("p-b")
    assert store._io.get("test-state", hold_key(servers("p-b", 1)[0].instance_id)) is None  # first chunk undone
    free = [s for s in servers("p-c", 105) if s.instance_id != busy.instance_id]
    store.create_run(run_record("p-c"), free, [])
    assert {store.run_holding(s.instance_id) for s in free} == {"p-c"}
    assert store.run_holding(busy.instance_id) == "p-a"


def test_an_abandoned_claim_is_fenced_off_before_its_server_is_taken(store: DynamoStore) -> None:
    ghost = hold_key(WEB) | {"run_id": "p-ghost", "instance_id": WEB, "claimed": time.time() - CLAIM_SECONDS - 1}
    store._io.put("test-state", ghost)
    fresh = hold_key(DB) | {"run_id": "p-slow", "instance_id": DB, "claimed": time.time()}
    store._io.put("test-state", fresh)
    with pytest.raises(ConflictError, match="p-slow"):  # a claim in progress binds
        store.create_run(run_record("p-1"), [RunServer("p-1", DB, "db-1", None, None)], [])
    store.create_run(run_record("p-1"), [RunServer("p-1", WEB, "web-1", None, None)], [])
    assert store.run_holding(WEB) == "p-1"
    with pytest.raises(StoreError, match="already exists"):  # the ghost's creator, were it only slow
        store.create_run(run_record("p-ghost"), [], [])
    with pytest.raises(NotFoundError):
        store.get_run("p-ghost")


def test_a_kb_read_before_another_driver_started_it_is_not_started_again(store: DynamoStore) -> None:
    create(store, "p-1")
    seen = store._io.get("test-state", item_key("p-1", WEB, "KB5034770"))
    assert seen is not None
    store.transition_item("p-1", WEB, "KB5034770", KbState.IN_PROGRESS, "driver A")
    assert store._transition_many([seen], KbState.IN_PROGRESS, "driver B") == [seen]
    with pytest.raises(StateError):
        store.transition_item("p-1", WEB, "KB5034770", KbState.IN_PROGRESS, "driver B")
    moves = [(t.to_state, t.note) for t in store.transitions("p-1") if t.instance_id == WEB]
    assert moves == [(KbState.PENDING, ""), (KbState.IN_PROGRESS, "driver A")]


def test_a_waiter_is_taken_by_exactly_one_of_two_takers(store: DynamoStore) -> None:
    store.put_waiter("command#c-1", "token-1")
    assert [store.take_waiter("command#c-1") for _ in range(2)] == ["token-1", None]
    assert store._io.get("test-state", pk_sk("WAITER#command#c-1", "WAITER")) is None


def test_a_job_started_after_another_read_its_kind_still_finds_it_running(
    store: DynamoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autopatch.domain.jobs import JobRecord

    at = datetime(2024, 2, 14, 9, 0, tzinfo=UTC)
    store.start_job(JobRecord("j-000000000001", "catalog.update", "running", at, at), stale_before=at)
    read = store._io.get
    stale_reads = iter([None])  # the second starter read the kind before the first one wrote it

    def racing_get(table: str, key: dict[str, str], consistent: bool = True) -> dict[str, Any] | None:
        if key["pk"].startswith("JOBKIND#"):
            return next(stale_reads, read(table, key, consistent))
        return read(table, key, consistent)

    monkeypatch.setattr(store._io, "get", racing_get)
    with pytest.raises(ConflictError, match="j-000000000001"):
        store.start_job(JobRecord("j-000000000002", "catalog.update", "running", at, at), stale_before=at)
    assert store.get_job("j-000000000002") is None

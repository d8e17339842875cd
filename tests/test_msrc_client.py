"""The MSRC client and the live update step, against a real local server replaying recorded responses."""

from __future__ import annotations

import gzip
import socket
import zlib
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest

from autopatch.catalog import client as client_module
from autopatch.catalog.client import MsrcClient
from autopatch.catalog.update import default_months, update_catalog
from autopatch.domain.identifiers import Month
from autopatch.errors import DocumentFormatError, SourceUnavailableError, ValidationError
from autopatch.store.sqlite import SqliteStore

from .msrc_server import CVRF_PREFIX, MSRC_DATA, SUG_PATH, UPDATES_PATH, MsrcServer, Reply

JANUARY_2024 = Month(2024, 1)
MARCH_2025 = Month(2025, 3)


@pytest.fixture
def server() -> Iterator[MsrcServer]:
    if not (MSRC_DATA / "cvrf-updates-index.json").is_file():
        pytest.skip(f"the recorded MSRC responses are not at {MSRC_DATA}")
    running = MsrcServer().start()
    yield running
    running.stop()


class SleepRecorder:
    """Stands in for time.sleep: backoff is asserted, never waited for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def client(server: MsrcServer, sleeps: SleepRecorder) -> Iterator[MsrcClient]:
    with MsrcClient(server.base_url, timeout=10, retries=3, backoff=0.5, sleep=sleeps) as live:
        yield live


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "c.db")
    yield opened
    opened.close()


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_list_updates_reads_the_index_with_dates(client: MsrcClient) -> None:
    entries = {entry.document_id: entry for entry in client.list_updates()}
    assert len(entries) == 190
    january = entries["2024-Jan"]
    assert january.title == "January 2024 Security Updates"
    assert january.initial_release_date == date(2024, 1, 9)
    assert january.current_release_date == date(2026, 6, 28)
    assert january.cvrf_url == "https://api.msrc.microsoft.com/cvrf/v3.0/cvrf/2024-Jan"


def test_fetch_cvrf_asks_for_xml_and_returns_the_decoded_document(client: MsrcClient, server: MsrcServer) -> None:
    with client.fetch_cvrf("2024-Jan") as body:
        raw = body.read()
    assert raw.startswith(b"<cvrf:cvrfdoc")
    assert b"<cvrf:ID>2024-Jan</cvrf:ID>" in raw[:2000]
    (request,) = server.requests
    assert request.path == "/cvrf/v3.0/cvrf/2024-Jan"
    assert request.headers["accept"] == "application/xml"
    assert "gzip" in request.headers["accept-encoding"]


def test_transient_503s_are_retried_with_exponential_backoff(
    client: MsrcClient, server: MsrcServer, sleeps: SleepRecorder
) -> None:
    server.script(UPDATES_PATH, Reply(503), Reply(503))
    assert len(client.list_updates()) == 190
    assert server.paths() == [UPDATES_PATH] * 3
    assert sleeps.delays == [0.5, 1.0]


def test_a_429_waits_for_the_seconds_retry_after_asks(
    client: MsrcClient, server: MsrcServer, sleeps: SleepRecorder
) -> None:
    server.script(UPDATES_PATH, Reply(429, {"Retry-After": "1"}), Reply(502))
    client.list_updates()
    assert sleeps.delays == [1.0, 1.0]  # Retry-After first, then the second backoff step (0.5 * 2)


def test_a_persistent_503_raises_source_unavailable_after_the_last_attempt(
    client: MsrcClient, server: MsrcServer, sleeps: SleepRecorder
) -> None:
    server.script(UPDATES_PATH, *[Reply(503)] * 10)
    with pytest.raises(SourceUnavailableError, match=r"503 Service Unavailable.*4 attempts") as caught:
        client.list_updates()
    assert UPDATES_PATH in str(caught.value)
    assert "\n" not in str(caught.value)
    assert len(server.paths()) == 4
    assert sleeps.delays == [0.5, 1.0, 2.0]


def test_a_closed_port_raises_source_unavailable_saying_offline(sleeps: SleepRecorder) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}"
    offline = r"no route to the MSRC API \(offline\?\)"
    with (
        MsrcClient(base_url, timeout=2, retries=2, sleep=sleeps) as client,
        pytest.raises(SourceUnavailableError, match=offline) as caught,
    ):
        client.list_updates()
    assert base_url + UPDATES_PATH in str(caught.value)
    assert len(sleeps.delays) == 2


def test_other_client_errors_are_not_retried(client: MsrcClient, server: MsrcServer, sleeps: SleepRecorder) -> None:
    server.script(UPDATES_PATH, Reply(403))
    with pytest.raises(SourceUnavailableError, match="HTTP 403"):
        client.list_updates()
    assert len(server.paths()) == 1
    assert sleeps.delays == []


def gzip_stream_of(unit: bytes, size: int) -> bytes:
    """One gzip member inflating to ``size`` bytes of ``unit``, built without holding them in memory."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = unit * (1 << 20)
    parts = [compressor.compress(block) for _ in range(size >> 20)]
    return b"".join([*parts, compressor.flush()])


def test_a_gzip_bomb_body_is_refused_at_the_json_cap_and_not_retried(
    client: MsrcClient, server: MsrcServer, sleeps: SleepRecorder
) -> None:
    bomb = gzip_stream_of(b" ", 80 << 20)  # 80 MiB of JSON whitespace in about 80 KB
    assert len(bomb) < 1 << 20
    server.script(UPDATES_PATH, Reply(200, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, bomb))
    with pytest.raises(DocumentFormatError, match=r"updates: more than 64 MiB of JSON, the size cap"):
        client.list_updates()
    assert server.paths() == [UPDATES_PATH]
    assert sleeps.delays == []


def test_a_cvrf_document_past_the_xml_cap_is_refused(
    client: MsrcClient, server: MsrcServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "XML_SIZE_LIMIT", 1 << 20)  # 2024-Jan is 3.4 MB of XML
    with pytest.raises(DocumentFormatError, match=r"cvrf/2024-Jan: more than 1 MiB of CVRF XML"):
        client.fetch_cvrf("2024-Jan")
    assert server.paths() == ["/cvrf/v3.0/cvrf/2024-Jan"]


def test_a_sug_page_nested_too_deeply_is_a_format_error(client: MsrcClient, server: MsrcServer) -> None:
    deep = b'{"value": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    server.script(SUG_PATH, Reply(200, {"Content-Type": "application/json"}, deep))
    with pytest.raises(DocumentFormatError, match="nested too deeply"):
        list(client.iter_sug_records(MARCH_2025, MARCH_2025))


class BodyCutShort(httpx.SyncByteStream):
    """A body whose connection drops after the first bytes."""

    def __iter__(self) -> Iterator[bytes]:
        yield b"<cvrf:cvrfdoc"
        raise httpx.ReadError("connection reset by peer")


def test_a_body_cut_short_is_fetched_again_with_backoff(sleeps: SleepRecorder) -> None:
    whole = gzip.decompress((MSRC_DATA / "cvrf-xml" / "2017-May-B.xml.gz").read_bytes())
    answers = iter([httpx.Response(200, stream=BodyCutShort()), httpx.Response(200, content=whole)])
    transport = httpx.MockTransport(lambda request: next(answers))
    with (
        MsrcClient("https://msrc.example", retries=2, sleep=sleeps, transport=transport) as client,
        client.fetch_cvrf("2017-May-B") as body,
    ):
        assert body.read() == whole
    assert sleeps.delays == [0.5]


def test_a_month_the_api_does_not_have_is_a_validation_error(client: MsrcClient) -> None:
    with pytest.raises(ValidationError, match="no such MSRC monthly document") as caught:
        client.fetch_cvrf("1990-Jan")
    assert caught.value.field == "month"


def test_a_document_id_that_could_change_the_url_path_is_rejected(client: MsrcClient, server: MsrcServer) -> None:
    with pytest.raises(ValidationError, match="document_id"):
        client.fetch_cvrf("../updates")
    assert server.requests == []


@pytest.mark.parametrize("base_url", ["ftp://api.msrc.microsoft.com", "api.msrc.microsoft.com", "https://"])
def test_a_base_url_that_is_not_http_is_a_validation_error(base_url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        MsrcClient(base_url)
    assert caught.value.field == "msrc_base_url"


def test_sug_records_follow_the_next_link_onto_the_local_server(client: MsrcClient, server: MsrcServer) -> None:
    records = list(client.iter_sug_records(MARCH_2025, MARCH_2025))
    assert len(records) == 4
    fix = next(r for r in records if r["cveNumber"] == "CVE-2025-24066" and r["productId"] == 10816)
    assert fix["kbArticles"][0]["articleName"] == "5053594"
    first, second = server.requests
    assert first.path == second.path == SUG_PATH
    assert first.query["$filter"] == ["releaseDate ge 2025-03-01T00:00:00Z and releaseDate lt 2025-04-01T00:00:00Z"]
    assert second.query == {"$skip": ["2"]}


def test_update_from_cvrf_imports_the_month_then_skips_it_when_unchanged(
    server: MsrcServer, sleeps: SleepRecorder, store: SqliteStore
) -> None:
    with MsrcClient(server.base_url, sleep=sleeps) as client:
        first = update_catalog(store, client, JANUARY_2024, JANUARY_2024, "cvrf")
        assert [(o.document_id, o.action) for o in first.outcomes] == [("2024-Jan", "imported")]
        fixes = [
            record.fix
            for record in store.fixes_for_kbs([5034129])
            if record.fix.cve == "CVE-2024-20674" and record.fix.product_id == "11923"
        ]
        assert [fix.fixed_build for fix in fixes] == ["10.0.20348.2227"]

        second = update_catalog(store, client, JANUARY_2024, JANUARY_2024, "cvrf")
    assert [(o.document_id, o.action) for o in second.outcomes] == [("2024-Jan", "unchanged")]
    assert server.paths(CVRF_PREFIX) == ["/cvrf/v3.0/cvrf/2024-Jan"]
    assert server.paths(UPDATES_PATH) == [UPDATES_PATH] * 2


def test_a_month_revised_in_the_index_is_fetched_again(
    client: MsrcClient, server: MsrcServer, store: SqliteStore
) -> None:
    update_catalog(store, client, JANUARY_2024, JANUARY_2024, "cvrf")
    server.revised["2024-Jan"] = "2026-07-01T00:00:00Z"
    again = update_catalog(store, client, JANUARY_2024, JANUARY_2024, "cvrf")
    assert server.paths(CVRF_PREFIX) == ["/cvrf/v3.0/cvrf/2024-Jan"] * 2
    # The recording did not change, so the import step recognises the same bytes.
    assert [o.action for o in again.outcomes] == ["unchanged"]


def test_february_2018_is_found_under_its_upper_case_id(
    client: MsrcClient, server: MsrcServer, store: SqliteStore
) -> None:
    summary = update_catalog(store, client, Month(2018, 2), Month(2018, 2), "cvrf")
    assert [(o.document_id, o.action) for o in summary.outcomes] == [("2018-FEB", "imported")]
    assert server.paths(CVRF_PREFIX) == ["/cvrf/v3.0/cvrf/2018-FEB"]


def test_update_from_sug_stores_one_document_per_release_month(client: MsrcClient, store: SqliteStore) -> None:
    summary = update_catalog(store, client, MARCH_2025, MARCH_2025, "sug")
    assert [(o.document_id, o.action) for o in summary.outcomes] == [("sug/2025-Mar", "imported")]
    assert store.get_document("sug/2025-Mar") is not None
    fixes = [r.fix for r in store.fixes_for_kbs([5053594]) if r.fix.product_id == "10816"]
    assert [(f.cve, f.fixed_build) for f in fixes] == [("CVE-2025-24066", "10.0.14393.7876")]

    again = update_catalog(store, client, MARCH_2025, MARCH_2025, "sug")
    assert [o.action for o in again.outcomes] == ["unchanged"]


def test_an_unknown_source_is_a_validation_error(client: MsrcClient, store: SqliteStore) -> None:
    with pytest.raises(ValidationError, match="must be cvrf or sug"):
        update_catalog(store, client, JANUARY_2024, JANUARY_2024, "rss")


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (date(2025, 3, 15), (Month(2025, 1), Month(2025, 3))),
        (date(2025, 1, 1), (Month(2024, 11), Month(2025, 1))),
    ],
)
def test_default_months_are_the_last_three_ending_this_month(today: date, expected: tuple[Month, Month]) -> None:
    assert default_months(today) == expected

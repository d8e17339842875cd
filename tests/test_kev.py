"""CISA's KEV catalog in: ``kev update`` against a real local HTTP server replaying the recorded feed
(with the MSRC client's retries and backoff), ``kev import`` from a file, ``kev list``, and bad input."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from autopatch.catalog.client import MsrcClient
from autopatch.catalog.kev import fetch_kev, import_kev_file
from autopatch.cli.context import load_settings
from autopatch.errors import DocumentFormatError, SourceUnavailableError, ValidationError
from autopatch.store.sqlite import SqliteStore

from .conftest import run_cli
from .kev_store_contract import KEV_FILE
from .msrc_server import MsrcServer, Reply
from .test_msrc_client import SleepRecorder, closed_port

FEED_PATH = "/sites/default/files/feeds/known_exploited_vulnerabilities.json"
RECORDED = gzip.decompress(KEV_FILE.read_bytes())


@pytest.fixture
def cisa() -> Iterator[MsrcServer]:
    """The local server, answering the feed's path with the recorded catalog (scripted per test)."""
    running = MsrcServer().start()
    yield running
    running.stop()


def feed(body: bytes = RECORDED, **headers: str) -> Reply:
    return Reply(200, {"Content-Type": "application/json", **headers}, body)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "kev.db")
    yield opened
    opened.close()


def test_an_update_fetches_the_feed_after_retrying_503s_with_backoff(
    cisa: MsrcServer, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOPATCH_KEV_URL", cisa.base_url + FEED_PATH)
    cisa.script(FEED_PATH, Reply(503), Reply(503), feed())
    sleeps = SleepRecorder()
    with MsrcClient(cisa.base_url, timeout=10, retries=3, backoff=0.5, sleep=sleeps) as client:
        summary = fetch_kev(store, load_settings(), client)
    assert cisa.paths() == [FEED_PATH] * 3 and sleeps.delays == [0.5, 1.0]
    assert cisa.requests[-1].headers["accept"] == "application/json"
    assert (summary.catalog_version, summary.entries, summary.counts.added) == ("2025.08.25", 1404, 1404)
    info = store.kev_catalog_info()
    assert info is not None and info.source == cisa.base_url + FEED_PATH
    # Unchanged the second time (a 429 first: its Retry-After is waited, not the backoff).
    cisa.script(
        FEED_PATH, Reply(429, {"Retry-After": "7"}), feed(gzip.compress(RECORDED), **{"Content-Encoding": "gzip"})
    )
    with MsrcClient(cisa.base_url, timeout=10, retries=3, backoff=0.5, sleep=sleeps) as client:
        again = fetch_kev(store, load_settings(), client)
    assert again.counts.unchanged == 1404 and again.counts.added == 0 and sleeps.delays[-1] == 7.0


def test_an_unreachable_feed_is_named_after_the_retries(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOPATCH_KEV_URL", f"http://127.0.0.1:{closed_port()}/feed.json")
    sleeps = SleepRecorder()
    with MsrcClient(timeout=2, retries=2, sleep=sleeps) as client, pytest.raises(SourceUnavailableError) as caught:
        fetch_kev(store, load_settings(), client)
    assert "no route to CISA's KEV feed" in str(caught.value) and "3 attempts" in str(caught.value)
    assert sleeps.delays == [0.5, 1.0] and store.kev_catalog_info() is None


def test_a_page_that_is_not_the_feed_stores_nothing(
    cisa: MsrcServer, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOPATCH_KEV_URL", cisa.base_url + FEED_PATH)
    cisa.script(FEED_PATH, feed(b"<html>Access Denied</html>"))
    with MsrcClient(cisa.base_url, retries=0) as client, pytest.raises(DocumentFormatError, match="not CISA's KEV"):
        fetch_kev(store, load_settings(), client)
    assert store.list_kev_entries() == []


def test_an_import_reads_plain_and_gzip_files_and_refuses_others(store: SqliteStore, tmp_path: Path) -> None:
    plain = tmp_path / "known_exploited_vulnerabilities.json"
    plain.write_bytes(RECORDED)
    assert import_kev_file(store, plain).counts.added == 1404
    assert import_kev_file(store, KEV_FILE).counts.unchanged == 1404
    with pytest.raises(ValidationError, match="readable file"):
        import_kev_file(store, tmp_path / "missing.json")
    cvrf = tmp_path / "2024-Feb.json"
    cvrf.write_text(json.dumps({"DocumentTracking": {}}))
    with pytest.raises(DocumentFormatError, match=r"2024-Feb\.json"):
        import_kev_file(store, cvrf)
    assert len(store.list_kev_entries()) == 1404


def test_the_cli_updates_imports_and_lists_the_kev_catalog(
    env: Path, cisa: MsrcServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run_cli(capsys, "kev", "list")
    assert code == 0 and "kev update" in err and "kev import" in err
    monkeypatch.setenv("AUTOPATCH_KEV_URL", cisa.base_url + FEED_PATH)
    cisa.script(FEED_PATH, feed())
    code, out, err = run_cli(capsys, "kev", "update", "--format", "json")
    assert code == 0 and json.loads(out)["added"] == 1404, err
    code, out, _ = run_cli(capsys, "kev", "list", "--vendor", "microsoft", "--as-of", "2024-03-04", "--format", "json")
    listed = json.loads(out)
    assert listed[0] == listed[0] | {"cveID": "CVE-2024-21338", "dateAdded": "2024-03-04", "dueDate": "2024-03-25"}
    assert all(
        row["vendorProject"] == "Microsoft" and date.fromisoformat(row["dateAdded"]) <= date(2024, 3, 4)
        for row in listed
    )
    code, out, _ = run_cli(capsys, "kev", "list", "--cve", "CVE-2024-21412")
    assert code == 0 and "CVE-2024-21412" in out and "2024-03-05" in out and "1 of 1404" in out
    code, _, err = run_cli(capsys, "kev", "import", str(env))  # the database is not a KEV file
    assert code == 2 and "not CISA's KEV catalog" in err
    code, _, err = run_cli(capsys, "kev", "list", "--as-of", "yesterday")
    assert code == 2 and "as_of" in err


def test_sla_show_and_set_from_the_cli_are_audited(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "sla", "show", "--format", "json")
    assert code == 0 and json.loads(out) == {
        "critical": 15,
        "important": 30,
        "moderate": 90,
        "low": 180,
        "source": "default",
    }
    code, out, _ = run_cli(capsys, "sla", "set", "--critical", "7", "--low", "365", "--format", "json")
    assert code == 0 and json.loads(out) == {
        "critical": 7,
        "important": 30,
        "moderate": 90,
        "low": 365,
        "source": "stored",
    }
    code, out, _ = run_cli(capsys, "sla", "show")
    assert code == 0 and "Critical" in out and "7" in out and "stored" in out
    code, _, err = run_cli(capsys, "sla", "set", "--important", "0")
    assert code == 2 and "important" in err and "1 to 3650" in err
    code, _, err = run_cli(capsys, "sla", "set")
    assert code == 2 and "at least one severity" in err
    code, out, _ = run_cli(capsys, "audit", "--format", "json")
    entries = [entry for entry in json.loads(out) if entry["action"] == "sla.set"]
    assert [entry["result"][:5] for entry in entries] == ["error", "error", "ok"]
    assert entries[-1]["detail"] == "critical=7, low=365" and entries[-1]["actor"].startswith("cli:")
    code, out, _ = run_cli(capsys, "sla", "show", "--format", "json")
    assert json.loads(out)["important"] == 30  # refused changes changed nothing

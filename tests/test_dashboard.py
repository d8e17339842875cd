"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright against ``autopatch serve``.

The server runs as a subprocess on a free loopback port, on a copy of the session catalog and six
simulated servers (seed 11, one offline) at a high time scale; the first KB of one server is made
to fail once, so a run ends Failed and a retry from the run page succeeds. Each page is saved as a
screenshot in the test's temporary folder (look at them when changing the dashboard).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from autopatch.access import create_token
from autopatch.cli.context import load_settings
from autopatch.fleet.simulator import FleetSimulator
from autopatch.store.sqlite import SqliteStore
from autopatch.wiring import build_fleet

from .conftest import CVRF_XML, configured_simulator, run_cli

CHROMIUM = Path("/usr/bin/chromium")
playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)"),
]
INSTALL_FAILURE = -2147023293  # 0x80070643, the generic installer failure
WAIT_MS = 20_000
# The live-update tests' fleet: simulated time 500 times faster than real, and one install of 7000 simulated
# seconds (under the 7200 s execution timeout), so the run is quiet for 14 s while it installs.
SLOW_TIME_SCALE = 500
SLOW_INSTALL_SECONDS = 7000


@dataclass
class Server:
    url: str
    tokens: dict[str, str]
    shots: Path
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server(env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """``autopatch serve`` on the CLI's test environment, with one catalog month to "update" from a folder."""
    catalog_dir = tmp_path / "msrc"
    catalog_dir.mkdir()
    shutil.copyfile(CVRF_XML / "2024-Jan.xml.gz", catalog_dir / "2024-Jan.xml.gz")
    monkeypatch.setenv("AUTOPATCH_CATALOG_DIR", str(catalog_dir))
    store = SqliteStore(env)
    try:
        tokens = {role: create_token(store, f"web-{role}", role)[1] for role in ("viewer", "operator", "admin")}
    finally:
        store.close()
    port = free_port()
    autopatch = str(Path(sys.executable).parent / "autopatch")
    command = [autopatch, "serve", "--host", "127.0.0.1", "--port", str(port), "--access-log"]
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(command, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "autopatch serve did not answer within 20 s"
            time.sleep(0.1)
        shots = tmp_path / "screenshots"
        shots.mkdir()
        yield Server(url, tokens, shots, tmp_path / "serve.log")
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture
def page(server: Server) -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(WAIT_MS)
        yield context.new_page()
        browser.close()


def sign_in(page: Any, server: Server, token: str) -> None:
    page.goto(f"{server.url}/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def nav(page: Any, name: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name).click()


def shoot(page: Any, server: Server, name: str) -> None:
    page.screenshot(path=str(server.shots / f"{name}.png"), full_page=True)
    page.screenshot(path=str(server.shots / f"{name}-top.png"))  # what a person sees first


def chart_values(page: Any, group: str) -> dict[str, int]:
    bars = page.locator(f'[data-testid="exposure-chart"] rect[data-group="{group}"]')
    return {bar.get_attribute("data-series"): int(bar.get_attribute("data-value")) for bar in bars.all()}


def inject_first_kb_failure(capsys: pytest.CaptureFixture[str]) -> tuple[str, str, str]:
    """The first planned KB of a server with work fails once: (instance id, its name, the KB)."""
    code, out, _ = run_cli(capsys, "patch", "--all", "--dry-run", "--format", "json")
    assert code == 0
    target = next(row for row in json.loads(out) if row["kbs_in_order"])
    settings = load_settings()
    store = SqliteStore(Path(settings.db))
    fleet = build_fleet(settings, store)
    try:
        assert isinstance(fleet, FleetSimulator)
        fleet.inject_failure(target["instance_id"], target["kbs_in_order"][0], INSTALL_FAILURE, times=1)
        fleet.close()
    finally:
        store.close()
    return target["instance_id"], target["name"], target["kbs_in_order"][0]


def test_an_admin_updates_the_catalog_patches_retries_and_sees_the_exposure_fall(
    server: Server, page: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    expect = playwright_api.expect
    instance_id, name, kb = inject_first_kb_failure(capsys)

    sign_in(page, server, server.tokens["admin"])
    expect(page.get_by_role("heading", name="Fleet")).to_be_visible()
    expect(page.locator("table.fleet tbody tr")).to_have_count(6)
    expect(page.get_by_test_id("fleet-severity-chart")).to_be_visible()
    shoot(page, server, "1-fleet")

    nav(page, "Catalog")
    page.get_by_role("button", name="Update now").click()
    expect(page.get_by_role("heading", name="Catalog update")).to_be_visible()
    expect(page.locator(".job-status")).to_have_text("succeeded")
    expect(page.get_by_role("table", name="Import summary: documents")).to_contain_text("2024-Jan.xml.gz")
    shoot(page, server, "2-catalog")

    nav(page, "Settings")
    retries = page.locator('tr[data-key="http_retries"]')
    retries.get_by_label("New value of http_retries").fill("11")
    retries.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text("less than or equal to 10")  # the server's rule, shown
    retries.get_by_label("New value of http_retries").fill("6")
    retries.get_by_role("button", name="Save").click()
    expect(page.locator('tr[data-key="http_retries"] td').nth(1)).to_have_text("stored")
    expect(page.locator('tr[data-key="notify"]')).to_contain_text("set by AUTOPATCH_NOTIFY")  # the environment wins
    shoot(page, server, "2-settings")

    nav(page, "CVEs")
    expect(page.locator("table.cves tbody tr").first).to_be_visible()
    page.get_by_label("Product").select_option("Windows Server 2022")
    page.get_by_label("Severity").select_option("Critical")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile("severity=Critical"))
    expect(page.get_by_role("table", name="CVEs of Windows Server 2022, Critical")).to_be_visible()
    shoot(page, server, "3-cves")
    page.locator("table.cves a").first.click()
    expect(page.get_by_role("heading", name="Supersedence")).to_be_visible()
    shoot(page, server, "4-kb")

    nav(page, "Fleet")
    page.get_by_label(f"Select {name}").check()
    # Another server with work (dry-run rows come exploited-first, not in the fleet table's order).
    _, out, _ = run_cli(capsys, "patch", "--all", "--dry-run", "--format", "json")
    other = next(row["name"] for row in json.loads(out) if row["kbs_in_order"] and row["name"] != name)
    page.get_by_label(f"Select {other}").check()
    page.get_by_role("button", name="Scan (2)").click()
    target_row = page.locator("table.fleet tbody tr", has=page.get_by_text(name, exact=True))
    expect(target_row).not_to_contain_text("never scanned")
    expect(page.get_by_test_id("fleet-severity-chart").locator("rect").first).to_be_visible()
    page.get_by_role("button", name="Plan (2)").click()
    plan = page.get_by_role("table", name="The plan, per server, KBs in install order")
    expect(plan.get_by_role("link", name=kb).first).to_be_visible()
    shoot(page, server, "5-plan")
    page.get_by_role("button", name="Start patch run (2)").click()
    page.get_by_role("button", name="Patch 2 server(s)").click()

    expect(page).to_have_url(re.compile("#/runs/p-"))
    run_url = page.url
    failed = page.locator(f'section.server[data-instance="{instance_id}"]')
    expect(page.locator(".run-header .chip").first).to_have_text("✗ Failed")  # reached without a reload
    expect(failed.get_by_role("button", name=f"Retry {kb}")).to_be_visible()
    expect(page.get_by_role("heading", name="Summary")).to_be_visible()
    expect(page.get_by_test_id("exposure-chart")).to_be_visible()
    first_run = chart_values(page, "All open")
    assert first_run["after"] < first_run["before"], first_run  # the KBs that succeeded closed CVEs
    shoot(page, server, "6-run-failed")
    page.reload()  # before/after are the run's stored facts, not something this browser remembered
    expect(page.get_by_test_id("exposure-chart")).to_be_visible()
    assert chart_values(page, "All open") == first_run
    assert page.url == run_url
    assert f"GET /api/v1/runs/{run_url.rsplit('/', 1)[1]}/events" in server.log.read_text()  # live, not polled

    failed.get_by_role("button", name=f"Retry {kb}").click()
    expect(page).not_to_have_url(run_url)
    expect(page.locator(".run-header .chip").first).to_have_text("✓ Succeeded")
    expect(page.locator("#progress-overall")).to_have_attribute("value", "100")
    expect(page.get_by_role("row", name=kb).get_by_text("Success")).to_be_visible()
    expect(page.get_by_test_id("exposure-chart")).to_be_visible()
    all_open = chart_values(page, "All open")
    assert all_open["after"] < all_open["before"], all_open  # the retried KB closed CVEs on that server
    shoot(page, server, "7-run-retried")

    nav(page, "Runs")
    expect(page.locator("tbody tr")).to_have_count(2)
    shoot(page, server, "8-runs")


def test_a_viewer_sees_no_controls_and_a_bad_token_is_refused(server: Server, page: Any) -> None:
    expect = playwright_api.expect
    sign_in(page, server, "ap_not-a-real-token")
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    shoot(page, server, "0-bad-token")

    page.get_by_label("API token").fill(server.tokens["viewer"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("table.fleet tbody tr")).to_have_count(6)
    expect(page.get_by_text("web-viewer (viewer)")).to_be_visible()
    assert page.get_by_role("button", name="Start patch run").count() == 0
    assert page.get_by_role("button", name="Plan").count() == 0
    assert page.get_by_role("checkbox").count() == 0
    nav(page, "Catalog")
    expect(page.get_by_role("heading", name="Catalog")).to_be_visible()
    assert page.get_by_role("button", name="Update now").count() == 0
    assert page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").count() == 0
    shoot(page, server, "9-viewer-catalog")

    operator = {"Authorization": f"Bearer {server.tokens['operator']}"}
    started = httpx.post(f"{server.url}/api/v1/runs", json={"all": True}, headers=operator, timeout=10)
    assert started.status_code == 202, started.text
    page.goto(f"{server.url}/#/runs/{started.json()['run_id']}")
    expect(page.locator(".run-header .chip").first).to_have_text(re.compile("Succeeded|Failed"))
    expect(page.locator("section.server").first).to_be_visible()
    assert page.get_by_role("button", name=re.compile("Reboot|Retry|Cancel")).count() == 0
    shoot(page, server, "10-viewer-run")


@pytest.fixture
def slow_fleet(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slower simulated fleet for the server and this process alike (requested before ``server``)."""
    monkeypatch.setenv("AUTOPATCH_SIMULATOR_TIME_SCALE", str(SLOW_TIME_SCALE))


def start_slow_run(server: Server, page: Any, capsys: pytest.CaptureFixture[str]) -> tuple[str, str, list[float]]:
    """Sign in, start a one-KB run whose install is slow and open its page: (run id, KB, when the page read the run)."""
    code, out, _ = run_cli(capsys, "patch", "--all", "--dry-run", "--format", "json")
    assert code == 0
    target = next(row for row in json.loads(out) if row["kbs_in_order"])
    instance_id, kb = target["instance_id"], target["kbs_in_order"][0]
    with configured_simulator() as fleet:
        fleet.set_install_seconds(instance_id, SLOW_INSTALL_SECONDS)
    sign_in(page, server, server.tokens["operator"])
    playwright_api.expect(page.locator("table.fleet tbody tr")).to_have_count(6)

    operator = {"Authorization": f"Bearer {server.tokens['operator']}"}
    body = {"instance_ids": [instance_id], "kbs": [kb], "reboot": "never"}
    started = httpx.post(f"{server.url}/api/v1/runs", json=body, headers=operator, timeout=10)
    assert started.status_code == 202, started.text
    run_id: str = started.json()["run_id"]
    reads: list[float] = []  # the page's first read of the run, then one per event burst or poll

    def on_request(request: Any) -> None:
        if request.method == "GET" and request.url == f"{server.url}/api/v1/runs/{run_id}":
            reads.append(time.monotonic())

    page.on("request", on_request)
    page.goto(f"{server.url}/#/runs/{run_id}")
    return run_id, kb, reads


def expect_finished(page: Any, kb: str) -> None:
    """The run's final state on the page, reached without a reload: status, progress, KB row, summary, chart."""
    expect = playwright_api.expect
    expect(page.locator(".run-header .chip").first).to_have_text("✓ Succeeded", timeout=WAIT_MS)
    expect(page.locator("#progress-overall")).to_have_attribute("value", "100")
    expect(page.get_by_role("row", name=kb).get_by_text("Success")).to_be_visible()
    expect(page.get_by_role("heading", name="Summary")).to_be_visible()
    expect(page.get_by_test_id("exposure-chart")).to_be_visible()
    expect(page.locator(".run-header .live")).to_have_text("Finished")
    expect(page.locator(".live-note")).to_be_hidden()


@pytest.mark.parametrize("gateway", ["held", "504"])
def test_the_run_page_polls_with_backoff_when_events_cannot_stream(
    slow_fleet: None, server: Server, page: Any, capsys: pytest.CaptureFixture[str], gateway: str
) -> None:
    """As behind API Gateway and a Lambda: the events route answers nothing until the run ends ("held": the
    body is buffered, the page gives up waiting after 5 s) or a gateway error ("504"). The page polls the run."""
    expect = playwright_api.expect
    held: list[Any] = []

    def events_route(route: Any) -> None:
        if gateway == "held":
            held.append(route)  # never answered while the run lasts, as a buffering gateway does
        else:
            route.fulfill(status=504, content_type="application/json", body='{"message": "Endpoint request timed out"}')

    page.route("**/api/v1/runs/*/events", events_route)
    run_id, kb, reads = start_slow_run(server, page, capsys)
    note = page.locator(".live-note")
    polled = re.compile(r"^Live updates every \d+ s \(streaming is not available through this API\)\.$")
    expect(note).to_have_text(polled, timeout=WAIT_MS)  # at once (504), or after waiting 5 s for an answer
    expect(page.locator(".run-header .live")).to_have_text("Polling")
    expect(page.get_by_role("row", name=kb).get_by_text("InProgress")).to_be_visible()
    expect(note).to_have_text(re.compile("every [2-9] s"))  # the quiet install: the interval grew
    shoot(page, server, f"11-run-polled-{gateway}")

    expect_finished(page, kb)
    shoot(page, server, f"12-run-polled-done-{gateway}")
    finished = len(reads)
    page.wait_for_timeout(2500)  # more than the fast interval: polling has stopped
    assert len(reads) == finished, "the page kept polling a finished run"

    intervals = [round(later - earlier, 2) for earlier, later in itertools.pairwise(reads[1:])]
    print(f"{gateway}: first poll {reads[1] - reads[0]:.2f} s after the first read, then intervals {intervals}")
    assert len(reads) >= 5, reads  # the first read, then polls
    assert min(intervals) >= 0.8, intervals
    assert max(intervals) <= 13, intervals  # the cap (12 s) with some slack
    grew = [later > 1.3 * earlier for earlier, later in itertools.pairwise(intervals)]
    assert any(a and b for a, b in itertools.pairwise(grew)), f"no backoff in {intervals}"  # twice in a row
    if gateway == "held":
        assert held, "the page never asked for the events"
        assert reads[1] - reads[0] >= 5, "polling started before the 5 s wait for the stream's answer"
    assert f"/api/v1/runs/{run_id}/events" not in server.log.read_text()  # the route never reached the server


def test_the_run_page_keeps_streaming_through_a_quiet_install(
    slow_fleet: None, server: Server, page: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where the events do stream, a run quiet for longer than the 5 s wait is followed by its stream, not polled."""
    expect = playwright_api.expect
    run_id, kb, reads = start_slow_run(server, page, capsys)
    expect(page.get_by_role("row", name=kb).get_by_text("InProgress")).to_be_visible()
    page.wait_for_timeout(1000)  # the bursts of the run's start are read
    started = len(reads)
    page.wait_for_timeout(6000)  # past the 5 s wait for the stream's answer, the install still under way
    expect(page.get_by_role("row", name=kb).get_by_text("InProgress")).to_be_visible()
    expect(page.locator(".run-header .live")).to_have_text("Live")
    expect(page.locator(".live-note")).to_be_hidden()
    assert len(reads) == started, reads  # 6 quiet seconds, no event, no read: nothing polled
    expect_finished(page, kb)
    print(f"stream: {started} read(s) at the start, {len(reads)} in all")
    assert f"GET /api/v1/runs/{run_id}/events" in server.log.read_text()

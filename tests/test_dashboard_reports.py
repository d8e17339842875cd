"""The Compliance and CVE lookup pages in a real browser, on the fleet patched over four simulated months.

``autopatch serve`` runs on the reports' database of ``report_fleet.py`` (its history runs from
2023-12-20 to 2024-03-27); a viewer opens the Compliance page on that window, reads the trend, the
overdue table and the per-baseline compliance, downloads the reports, and looks a CVE up. Each page
is saved as a screenshot in the test's temporary folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from autopatch.access import create_token
from autopatch.baselines import create_baseline, new_baseline
from autopatch.store.sqlite import SqliteStore

from .report_fleet import SEED, SERVERS, SimulatedHistory, simulate_months
from .test_dashboard import CHROMIUM, WAIT_MS, Server, free_port, nav, playwright_api, shoot, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)"),
]


@pytest.fixture
def months(tmp_path: Path) -> SimulatedHistory:
    return simulate_months(tmp_path)


@pytest.fixture
def server(months: SimulatedHistory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    store = SqliteStore(months.reports_db)
    try:
        tokens = {role: create_token(store, f"web-{role}", role)[1] for role in ("viewer", "admin")}
        create_baseline(store, new_baseline("prod", groups=["Environment=prod"]))
    finally:
        store.close()
    environment = dict(os.environ) | {
        "AUTOPATCH_DB": str(months.reports_db),
        "AUTOPATCH_SIMULATOR_SERVERS": str(SERVERS),
        "AUTOPATCH_SIMULATOR_SEED": str(SEED),
        "AUTOPATCH_NOTIFY": "",
    }
    port = free_port()
    autopatch = str(Path(sys.executable).parent / "autopatch")
    log_path = tmp_path / "serve.log"
    log = log_path.open("w")
    command = [autopatch, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-scheduler"]
    process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "autopatch serve did not answer within 20 s"
            time.sleep(0.1)
        shots = tmp_path / "screenshots"
        shots.mkdir()
        yield Server(url, tokens, shots, log_path)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture
def page(server: Server) -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        context.set_default_timeout(WAIT_MS)
        yield context.new_page()
        browser.close()


def test_a_viewer_reads_compliance_trend_and_overdue_and_downloads_the_reports(
    server: Server, page: Any, months: SimulatedHistory, tmp_path: Path
) -> None:
    expect = playwright_api.expect
    sign_in(page, server, server.tokens["viewer"])
    nav(page, "Compliance")
    expect(page.get_by_role("heading", name="Compliance", exact=True)).to_be_visible()
    page.get_by_label("Trend over days").fill("110")
    page.get_by_label("ending on (UTC)").fill("2024-03-31")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("heading", name="Trend: 110 days, 2023-12-13 to 2024-03-31")).to_be_visible()
    assert "until=2024-03-31" in page.url and "days=110" in page.url  # the window lives in the URL
    important = page.locator('[data-testid="trend-open"] text[data-series="Important"]')
    api = httpx.get(
        f"{server.url}/api/v1/reports/trend",
        params={"days": 110, "until": "2024-03-31"},
        headers={"Authorization": f"Bearer {server.tokens['viewer']}"},
    ).json()
    assert important.get_attribute("data-last") == str(api["days"][-1]["open_important"])
    mttr = page.locator('[data-testid="mttr"] tr[data-severity="Important"]')
    expect(mttr).to_contain_text(
        f"{next(r for r in api['time_to_remediate'] if r['severity'] == 'Important')['mean_days']:.1f}"
    )
    overdue = page.get_by_role("table", name="Overdue CVEs by server and severity, oldest deadline first")
    expect(overdue.locator(f'tr[data-instance="{months.never}"]').first).to_be_visible()
    per_baseline = page.locator('[data-testid="per-baseline"]')
    expect(
        per_baseline.locator('tr[data-baseline="prod"]').or_(per_baseline.locator('tr[data-baseline="(none)"]')).first
    ).to_be_visible()
    expect(page.get_by_role("group", name="Unknown")).to_contain_text("1")  # the offline server, never "compliant"
    shoot(page, server, "compliance-1-page")

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download Trend report as PDF").click()
    download = download_info.value
    assert download.suggested_filename.startswith("trend_") and download.suggested_filename.endswith(".pdf")
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert saved.read_bytes().startswith(b"%PDF-")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download Compliance report as CSV").click()
    csv_file = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(csv_file)
    assert csv_file.read_text().splitlines()[0].startswith("server,instance,baseline,state")

    page.get_by_label("Judge servers by").select_option("prod")
    expect(page.get_by_role("heading", name="Compliance against baseline prod")).to_be_visible()
    assert "baseline=prod" in page.url
    shoot(page, server, "compliance-2-baseline")


def test_a_cve_lookup_lists_the_exposed_servers_since_when_and_the_closing_kb(
    server: Server, page: Any, months: SimulatedHistory
) -> None:
    expect = playwright_api.expect
    last = max(months.exposure)
    first = min(months.exposure)
    cve = sorted(set(months.exposure[first][months.never]) & set(months.exposure[last][months.never]))[0]
    sign_in(page, server, server.tokens["viewer"])
    nav(page, "CVE lookup")
    expect(page.get_by_text("Type a CVE id")).to_be_visible()
    page.get_by_label("CVE id").fill(cve.lower())
    page.get_by_role("button", name="Look up").click()
    exposed = page.get_by_role("table", name=f"Servers exposed to {cve}, longest exposed first")
    row = exposed.locator(f'tr[data-instance="{months.never}"]')
    expect(row).to_contain_text("2023-12-20 09:00:00 UTC")  # since the first recorded scan
    expect(row).to_contain_text("KB")
    expect(row.get_by_text("Offered").or_(row.get_by_text("Not offered: install by hand"))).to_be_visible()
    expect(page.get_by_role("table", name="Servers whose exposure is unknown (not counted as safe)")).to_contain_text(
        "offline"
    )
    assert f"cve={cve}" in page.url
    shoot(page, server, "cve-1-lookup")
    page.reload()
    expect(row).to_be_visible()  # the CVE is in the URL: a reload shows the same lookup

    page.get_by_label("CVE id").fill("CVE-1999-0001")
    page.get_by_role("button", name="Look up").click()
    expect(page.locator("#banner")).to_contain_text("CVE-1999-0001 is not in the catalog")
    shoot(page, server, "cve-2-unknown")

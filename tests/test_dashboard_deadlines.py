"""Deadlines and exploited-first in a real browser: the fleet's overdue counts per severity, one server's
open CVEs with their badges and deadlines (sortable), the CVE page as of a day, the SLA policy and the
KEV catalog (screenshots in the test's folder)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import run_cli
from .kev_store_contract import KEV_FILE
from .test_dashboard import CHROMIUM, Server, nav, page, playwright_api, server, shoot, sign_in

__all__ = ["page", "server"]  # the fixtures, shared with test_dashboard.py
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)"),
]


def test_overdue_and_exploited_cves_are_visible_from_the_fleet_down_to_each_cve(
    server: Server, page: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    expect = playwright_api.expect
    assert run_cli(capsys, "kev", "import", str(KEV_FILE))[0] == 0
    assert run_cli(capsys, "fleet", "scan")[0] == 0
    code, out, _ = run_cli(capsys, "exposure", "--format", "json")
    rows = [row for row in json.loads(out) if row["status"] == "assessed"]
    late = max(rows, key=lambda row: row["overdue_total"])
    assert code == 0 and late["overdue_total"] > 0

    sign_in(page, server, server.tokens["viewer"])
    expect(page.get_by_role("heading", name="Fleet")).to_be_visible()
    totals = sum(row["overdue_total"] for row in rows)
    expect(page.get_by_test_id("fleet-overdue")).to_contain_text(f"{totals} open CVE(s) past their deadline")
    overdue_bars = page.locator('[data-testid="fleet-severity-chart"] rect[data-series="overdue"]')
    expect(overdue_bars).to_have_count(3)
    shoot(page, server, "deadlines-1-fleet")

    page.get_by_role("link", name=late["name"], exact=True).click()
    expect(page.get_by_role("heading", name=f"Exposure of {late['name']}")).to_be_visible()
    expect(page.get_by_test_id("server-overdue")).to_contain_text(f"{late['overdue_total']}:")
    table = page.locator("table.exposure")
    expect(table.locator(".badge", has_text="Overdue")).to_have_count(late["overdue_total"])
    due = table.get_by_role("columnheader", name="Due")
    expect(due).to_have_attribute("aria-sort", "ascending")
    shoot(page, server, "deadlines-2-server")
    severity = table.get_by_role("columnheader", name="Severity")
    severity.get_by_role("button").click()
    expect(severity).to_have_attribute("aria-sort", "ascending")
    expect(table.locator("tbody tr").first.locator("td").first).to_contain_text("Critical")
    severity.get_by_role("button").click()
    expect(severity).to_have_attribute("aria-sort", "descending")
    table.get_by_role("columnheader", name="Risk").get_by_role("button").click()
    first_risk = table.locator("tbody tr").first.locator(".badge").first
    expect(first_risk).to_have_text("Overdue")
    page.get_by_label("As of").fill("2024-03-06")  # the same server as on that day: later CVEs not yet out
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("Overdue on 2024-03-06")).to_be_visible()
    assert page.url.endswith("?as_of=2024-03-06")
    expect(page.locator("table.exposure .mono", has_text="CVE-2025-")).to_have_count(0)

    page.goto(f"{server.url}/#/cves?product=Windows%20Server%202022&month=2024-02&as_of=2024-03-06")
    row = page.locator('tr[data-cve="CVE-2024-21412"]')
    expect(row).to_contain_text("2024-03-05")
    expect(row.locator(".badge")).to_have_text(["KEV", "Exploited"])
    expect(page.get_by_label("As of")).to_have_value("2024-03-06")
    shoot(page, server, "deadlines-3-cves")


def test_an_admin_sets_the_sla_and_sees_the_kev_catalog(
    server: Server, page: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    expect = playwright_api.expect
    run_cli(capsys, "kev", "import", str(KEV_FILE))
    sign_in(page, server, server.tokens["admin"])
    expect(page.get_by_role("heading", name="Fleet")).to_be_visible()
    nav(page, "Settings")
    form = page.get_by_role("form", name="SLA policy")
    expect(form.get_by_label("Critical (days)")).to_have_value("15")
    form.get_by_label("Critical (days)").fill("7")
    form.get_by_role("button", name="Save deadlines").click()
    expect(page.locator("#banner")).to_contain_text("Critical 7 days")
    form.get_by_label("Low (days)").fill("0")
    form.get_by_role("button", name="Save deadlines").click()
    expect(page.locator("#banner")).to_contain_text("low: Input should be greater than or equal to 1")
    shoot(page, server, "deadlines-4-sla")
    code, out, _ = run_cli(capsys, "sla", "show", "--format", "json")
    assert code == 0 and json.loads(out)["critical"] == 7 and json.loads(out)["low"] == 180

    nav(page, "Catalog")
    expect(page.get_by_test_id("kev-status")).to_contain_text("Version 2025.08.25, 1,404 entries")
    expect(page.get_by_role("button", name="Update KEV now")).to_be_visible()
    shoot(page, server, "deadlines-5-kev")

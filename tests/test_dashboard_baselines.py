"""The Baselines page in a real browser: an admin creates, edits and deletes one; a viewer reads the rules;
a plan on the Fleet page shows the KB the baseline holds back and why (screenshots in the test's folder)."""

from __future__ import annotations

from typing import Any

import pytest

from .test_dashboard import CHROMIUM, Server, nav, page, playwright_api, server, shoot, sign_in

__all__ = ["page", "server"]  # the fixtures, shared with test_dashboard.py
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)"),
]
TARGET = "sim-ws2016-002"  # seed 11: Windows Server 2016, Environment=prod, offered KB5070882


def test_an_admin_manages_baselines_and_a_plan_shows_what_they_hold_back(server: Server, page: Any) -> None:
    expect = playwright_api.expect
    sign_in(page, server, server.tokens["admin"])
    expect(page.get_by_role("heading", name="Fleet")).to_be_visible()
    nav(page, "Baselines")
    expect(page.get_by_role("heading", name="Baselines")).to_be_visible()
    expect(page.get_by_text("No baseline yet")).to_be_visible()

    page.get_by_role("button", name="New baseline").click()
    form = page.get_by_role("form", name="New baseline")
    form.get_by_label("Name", exact=True).fill("bad name")
    form.get_by_role("button", name="Create baseline").click()
    expect(page.locator("#banner")).to_contain_text("name: 'bad name' is invalid")  # the server's rule, shown

    form.get_by_label("Name", exact=True).fill("prod")
    form.get_by_label("Minimum severity").select_option("Important")
    form.get_by_label("Approve after (days)").fill("7")
    form.get_by_label("security", exact=True).check()
    form.get_by_label("servicing-stack").check()
    form.get_by_label("Approved by name").fill("KB5034439")
    form.get_by_label("Rejected (KB: reason, one per line)").fill("KB5070882: breaks the SQL cluster")
    form.get_by_label("Servers with these tags").fill("Environment=prod")
    shoot(page, server, "baselines-1-form")
    form.get_by_role("button", name="Create baseline").click()
    expect(page.locator("#banner")).to_contain_text("Baseline prod saved")
    row = page.locator('tr[data-baseline="prod"]')
    expect(row).to_contain_text("severity: Important and above")
    expect(row).to_contain_text("approved 7 days after release")
    expect(row).to_contain_text("rejected: KB5070882 (breaks the SQL cluster)")
    expect(row).to_contain_text(TARGET)
    shoot(page, server, "baselines-2-list")

    row.get_by_role("button", name="Edit").click()
    edit = page.get_by_role("form", name="Edit baseline prod")
    expect(edit.get_by_label("Rejected (KB: reason, one per line)")).to_have_value("KB5070882: breaks the SQL cluster")
    edit.get_by_label("Approve after (days)").fill("0")
    edit.get_by_role("button", name="Save changes").click()
    expect(row).to_contain_text("approved on release")
    expect(row).to_contain_text("classifications: security, servicing-stack")

    nav(page, "Fleet")
    page.get_by_label(f"Select {TARGET}").check()
    page.get_by_role("button", name="Plan (1)").click()
    plan = page.get_by_role("table", name="The plan, per server, KBs in install order")
    expect(plan).to_contain_text("baseline prod")
    plan.get_by_text("1 KB(s) held back").click()
    expect(plan).to_contain_text("KB5070882 — rejected: breaks the SQL cluster")
    shoot(page, server, "baselines-3-plan")

    nav(page, "Baselines")
    row.get_by_role("button", name="Delete").click()
    row.get_by_role("button", name="Confirm delete prod").click()
    expect(page.get_by_text("No baseline yet")).to_be_visible()


def test_a_viewer_reads_the_rules_but_has_no_controls(server: Server, page: Any) -> None:
    expect = playwright_api.expect
    sign_in(page, server, server.tokens["admin"])
    expect(page.get_by_role("heading", name="Fleet")).to_be_visible()
    token = server.tokens["admin"]
    created = page.request.post(
        f"{server.url}/api/v1/baselines",
        headers={"Authorization": f"Bearer {token}"},
        data={"name": "slow", "approve_after_days": 14, "exploited_first": True, "groups": ["Environment=test"]},
    )
    assert created.status == 201
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, server, server.tokens["viewer"])
    nav(page, "Baselines")
    row = page.locator('tr[data-baseline="slow"]')
    expect(row).to_contain_text("approved 14 days after release (KBs fixing an exploited CVE: on release)")
    expect(row).to_contain_text("servers: Environment=test")
    assert page.get_by_role("button", name="New baseline").count() == 0
    assert row.get_by_role("button").count() == 0
    shoot(page, server, "baselines-4-viewer")

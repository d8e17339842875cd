"""The run page's rings in a real browser: a ring soaking (with its end), then a run halted by its canary.

The server and the browser are ``test_dashboard``'s (``autopatch serve`` on six simulated servers,
headless Chromium); screenshots go to the test's temporary folder.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from . import test_dashboard
from .conftest import configured_simulator, run_cli
from .test_dashboard import WAIT_MS, Server, playwright_api, shoot, sign_in

pytestmark = test_dashboard.pytestmark
server, page = test_dashboard.server, test_dashboard.page  # the fixtures
INSTALL_FAILURE = -2147023293  # 0x80070643


def start(server: Server, body: dict[str, Any]) -> str:
    headers = {"Authorization": f"Bearer {server.tokens['operator']}"}
    started = httpx.post(f"{server.url}/api/v1/runs", json=body, headers=headers, timeout=10)
    assert started.status_code == 202, started.text
    run_id: str = started.json()["run_id"]
    return run_id


def wait_for(server: Server, run_id: str, done: Any) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {server.tokens['viewer']}"}
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        view: dict[str, Any] = httpx.get(f"{server.url}/api/v1/runs/{run_id}", headers=headers, timeout=10).json()
        if done(view):
            return view
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} never reached the awaited state")


def canary(capsys: pytest.CaptureFixture[str]) -> tuple[str, str, str]:
    code, out, _ = run_cli(capsys, "patch", "--all", "--dry-run", "--format", "json")
    assert code == 0
    row = next(row for row in json.loads(out) if row["kbs_in_order"])
    return row["instance_id"], row["name"], row["kbs_in_order"][0]


def test_the_run_page_shows_a_ring_that_halted_the_run_then_one_soaking(
    server: Server, page: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    expect = playwright_api.expect
    instance_id, name, kb = canary(capsys)
    rings = f"canary=Name={name};rest=*"
    with configured_simulator() as fleet:
        fleet.inject_failure(instance_id, kb, INSTALL_FAILURE, times=1)
    halted = start(server, {"all": True, "rings": rings})
    wait_for(server, halted, lambda view: view["status"] == "Halted")
    sign_in(page, server, server.tokens["operator"])
    expect(page.locator("table.fleet tbody tr")).to_have_count(6)  # signed in: the fleet page is up
    page.goto(f"{server.url}/#/runs/{halted}")
    expect(page.locator(".run-header .chip").first).to_have_text("✗ Halted", timeout=WAIT_MS)
    section = page.get_by_test_id("rings")
    expect(section.get_by_role("heading", name="Rings and health gates")).to_be_visible()
    failed = section.locator('li[data-ring="canary"]')
    expect(failed.locator(".ring-head .chip")).to_have_text("✗ Failed")
    expect(failed.locator(".ring-detail")).to_contain_text("ring canary failed its health gate")
    expect(failed.get_by_role("row", name=name).locator(".chip")).to_have_text("✗ Failed")  # opened: it failed
    expect(section.locator('li[data-ring="rest"] .ring-head .chip')).to_have_text("– Not Started")
    expect(page.locator(".summary")).to_contain_text("Halted")
    shoot(page, server, "21-run-ring-halted")

    soaking = start(server, {"all": True, "rings": rings, "soak": "1h"})  # the canary's KB installs this time
    wait_for(server, soaking, lambda view: view["rings"] and view["rings"][0]["status"] == "Soaking")
    page.goto(f"{server.url}/#/runs/{soaking}")
    first = section.locator('li[data-ring="canary"]')
    expect(first.locator(".ring-head .chip")).to_have_text("◔ Soaking", timeout=WAIT_MS)
    expect(first.locator(".ring-detail")).to_contain_text("about 60 min left")
    expect(section.locator('li[data-ring="rest"] .ring-head .chip')).to_have_text("… Waiting")
    shoot(page, server, "22-run-ring-soaking")
    page.get_by_role("button", name="Cancel run").click()  # the rings end with the run, at once
    expect(page.locator(".run-header .chip").first).to_have_text("– Cancelled", timeout=WAIT_MS)
    expect(first.locator(".ring-head .chip")).to_have_text("– Cancelled")
    expect(section.locator('li[data-ring="rest"] .ring-head .chip')).to_have_text("– Cancelled")

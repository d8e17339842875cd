"""The Windows page and a paused run's page in a real browser (Chromium, Playwright).

Uses the dashboard tests' server and browser (``tests/test_dashboard.py``). Before the server starts,
a run of window "prod" is paused (its window's clock moved past the cutoff during its first KB)
and the window redefined to be closed now, so the server's own scheduler leaves it paused.
Screenshots: ``windows.png``, ``windows-run-paused.png`` and ``windows-viewer.png``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from .test_dashboard import CHROMIUM, Server, nav, page, playwright_api, server, shoot, sign_in  # noqa: F401
from .test_windows_crash import closed_now, pause_a_window_run, redefine

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)"),
]


@pytest.fixture
def paused_run(env: Path) -> str:
    run_id, _ = pause_a_window_run(env)
    redefine(env, closed_now(), "2h")
    return run_id


def test_the_windows_page_lists_windows_their_next_occurrences_and_a_paused_run_and_when_it_continues(
    paused_run: str,
    server: Server,  # noqa: F811
    page: Any,  # noqa: F811
) -> None:
    expect = playwright_api.expect
    sign_in(page, server, server.tokens["admin"])
    expect(page.locator("table.fleet tbody tr")).to_have_count(6)
    nav(page, "Windows")
    expect(page.get_by_role("heading", name="Maintenance windows")).to_be_visible()
    prod = page.locator('tr[data-window="prod"]')
    expect(prod.locator("ol.occurrences li")).to_have_count(3)
    expect(prod).to_contain_text("Environment=prod")
    expect(prod).to_contain_text("Closed")
    run = prod.locator(f'li[data-run="{paused_run}"]')
    expect(run).to_contain_text("Paused")
    expect(run).to_contain_text(re.compile(r"Paused: window closed — continues \d{4}-\d{2}-\d{2} \d{2}:\d{2} "))

    # An admin creates a window; a bad value comes back as the server's rule, naming the field.
    page.get_by_role("button", name="New window").click()
    page.get_by_label("Name").fill("sunday")
    page.get_by_label("Schedule (cron)").fill("30 3 * * SUNDAY")
    page.get_by_label("Time zone").fill("America/New_York")
    page.get_by_label("Duration").fill("3h")
    page.get_by_label("Cutoff").fill("45m")
    page.get_by_label("Servers (tag)").fill("Environment=test")
    page.get_by_role("button", name="Create window").click()
    expect(page.get_by_role("alert")).to_contain_text("cron")
    page.get_by_label("Schedule (cron)").fill("30 3 * * SUN")
    page.get_by_role("button", name="Create window").click()
    sunday = page.locator('tr[data-window="sunday"]')
    expect(sunday).to_contain_text("America/New_York")
    expect(sunday.locator("ol.occurrences li").first).to_contain_text(re.compile(r" 03:30 E[SD]T "))
    expect(sunday).to_contain_text("none yet")
    shoot(page, server, "windows")

    run.get_by_role("link", name=paused_run).click()
    expect(page).to_have_url(re.compile(f"#/runs/{paused_run}$"))
    expect(page.locator(".run-header .chip").first).to_have_text("… Paused")
    note = page.locator(".paused-note")
    expect(note).to_contain_text("Paused: window closed — continues when window prod opens again: ")
    expect(note).to_contain_text(re.compile(r"opens again: \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC$"))
    shoot(page, server, "windows-run-paused")

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, server, server.tokens["viewer"])
    expect(page.locator("table.fleet tbody tr")).to_have_count(6)
    nav(page, "Windows")
    expect(page.locator('tr[data-window="sunday"]')).to_be_visible()
    assert page.get_by_role("button", name="New window").count() == 0
    assert page.get_by_role("button", name="Delete").count() == 0
    shoot(page, server, "windows-viewer")

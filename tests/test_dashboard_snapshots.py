"""The run page shows each server's EBS snapshots and how to roll back to them (Chromium, Playwright).

Uses the dashboard tests' server and browser (``tests/test_dashboard.py``); the screenshot is saved
in the test's temporary folder as ``snapshots-run.png``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from .test_dashboard import CHROMIUM, Server, page, playwright_api, server, shoot, sign_in  # noqa: F401

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)"),
]


def test_the_run_page_lists_each_servers_snapshots_with_the_rollback_command(server: Server, page: Any) -> None:  # noqa: F811
    expect = playwright_api.expect
    operator = {"Authorization": f"Bearer {server.tokens['operator']}"}
    started = httpx.post(
        f"{server.url}/api/v1/runs", json={"all": True, "snapshot": True}, headers=operator, timeout=10
    )
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    sign_in(page, server, server.tokens["viewer"])
    expect(page.locator("table.fleet tbody tr")).to_have_count(6)
    page.goto(f"{server.url}/#/runs/{run_id}")
    expect(page.locator(".run-header .chip").first).to_have_text(re.compile("Succeeded|Failed"))

    viewer = {"Authorization": f"Bearer {server.tokens['viewer']}"}
    view = httpx.get(f"{server.url}/api/v1/runs/{run_id}", headers=viewer, timeout=10).json()
    snapshotted = [s for s in view["servers"] if s["snapshot"]]
    assert snapshotted
    for target in snapshotted:
        panel = page.get_by_test_id(f"snapshots-{target['instance_id']}")
        expect(panel).to_be_visible()
        expect(panel.get_by_role("heading")).to_contain_text("EBS snapshots before patching")
        for volume in target["snapshot"]["volumes"]:
            expect(panel).to_contain_text(volume["snapshot_id"])
        root = next(v for v in target["snapshot"]["volumes"] if v["root"])
        command = f"--instance-id {target['instance_id']} --snapshot-id {root['snapshot_id']}"
        expect(panel.locator("code").first).to_contain_text(f"aws ec2 create-replace-root-volume-task {command}")
    others = [s for s in view["servers"] if not s["snapshot"]]
    for target in others:
        assert page.get_by_test_id(f"snapshots-{target['instance_id']}").count() == 0
    page.get_by_test_id(f"snapshots-{snapshotted[0]['instance_id']}").scroll_into_view_if_needed()
    shoot(page, server, "snapshots-run")
    (server.shots / "snapshots-run.json").write_text(json.dumps(snapshotted[0]["snapshot"], indent=2))

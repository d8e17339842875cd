"""Maintenance windows from the CLI and over the API: roles, audit, errors naming the field, the scheduler.

A window with the cron ``* * * * *`` opens every minute and lasts an hour: it is always open, so
``autopatch scheduler --once`` and ``serve`` start its run at once, on the real clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from autopatch.api.app import create_app
from autopatch.cli.context import load_settings
from autopatch.domain.patching import RunStatus
from autopatch.domain.runs import RunServer
from autopatch.domain.windows import build_window, window_run_options
from autopatch.store.sqlite import SqliteStore

from .conftest import run_cli
from .store_contract import WEB, run_record
from .test_api import Api, error_of, make_tokens
from .test_api_runs import wait_for_run


def fleet_group(capsys: pytest.CaptureFixture[str]) -> str:
    """``OS=<product>`` of the simulated fleet's first online server: a group with at least one server."""
    code, out, _ = run_cli(capsys, "fleet", "list", "--format", "json")
    assert code == 0
    row = next(row for row in json.loads(out) if row["online"])
    return f"OS={row['tags']['OS']}"


# --- CLI ---------------------------------------------------------------------------------------


def test_window_commands_create_show_list_update_and_delete_a_window(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys,
        *("window", "create", "saturday", "--cron", "0 2 * * SAT", "--duration", "4h", "--cutoff", "1h"),
        *("--group", "PatchGroup=web", "--timezone", "Europe/Berlin", "--format", "json"),
    )
    assert code == 0, err
    [created] = json.loads(out)
    assert (created["name"], created["duration"], created["cutoff"], created["group"]) == (
        "saturday",
        "4h",
        "1h",
        "PatchGroup=web",
    )
    assert len(created["next"]) == 3
    assert all(" 02:00 " in o["starts_local"] and "Europe/Berlin" in o["starts_local"] for o in created["next"])

    code, out, _ = run_cli(capsys, "window", "next", "saturday", "--count", "30", "--format", "json")
    starts = [datetime.fromisoformat(row["starts_at"]) for row in json.loads(out)]
    assert code == 0 and len(starts) == 30  # more than half a year: a change of clocks among them
    gaps = {later - earlier for earlier, later in pairwise(starts)}
    week = timedelta(days=7)
    assert week in gaps and gaps <= {week - timedelta(hours=1), week, week + timedelta(hours=1)}
    assert len({start.hour for start in starts}) == 2  # 01:00 UTC in winter, 00:00 UTC in summer

    code, out, err = run_cli(capsys, "window", "update", "saturday", "--duration", "3h", "--format", "json")
    assert code == 0, err
    assert json.loads(out)[0]["duration"] == "3h"
    code, out, _ = run_cli(capsys, "window", "list")
    assert code == 0 and "saturday" in out and "0 2 * * SAT" in out and "3h" in out
    code, out, _ = run_cli(capsys, "window", "show", "saturday", "--format", "json")
    assert code == 0 and json.loads(out)["occurrences"] == []

    code, out, _ = run_cli(capsys, "window", "delete", "saturday")
    assert code == 0 and "deleted" in out
    code, _, err = run_cli(capsys, "window", "show", "saturday")
    assert code == 2 and "not a known window" in err
    code, out, _ = run_cli(capsys, "audit", "--format", "json")
    actions = [(entry["action"], entry["target"], entry["result"]) for entry in json.loads(out)]
    assert ("window.create", "saturday", "ok") in actions and ("window.delete", "saturday", "ok") in actions


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--cron", "0 2 * * XYZ", "cron: '0 2 * * XYZ' is invalid"),
        ("--duration", "4 hours", "duration: '4 hours' is invalid"),
        ("--cutoff", "5h", "cutoff: '5h' is invalid: the cutoff must be shorter than the duration"),
        ("--timezone", "Mars/Olympus", "timezone: 'Mars/Olympus' is invalid: unknown time zone"),
        ("--group", "web", "group: 'web' is invalid"),
        ("--baseline", "nope", "baseline: 'nope' is not a known baseline"),
    ],
)
def test_a_bad_window_exits_2_naming_the_field_and_stores_nothing(
    env: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    values = {"--cron": "0 2 * * SAT", "--duration": "4h", "--group": "PatchGroup=web"} | {option: value}
    arguments = [part for pair in values.items() for part in pair]
    code, out, err = run_cli(capsys, "window", "create", "w", *arguments)
    assert code == 2 and message in err and out == ""
    code, out, _ = run_cli(capsys, "window", "list", "--format", "json")
    assert json.loads(out) == []


def test_scheduler_once_starts_a_due_window_and_drives_its_run_to_the_end(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    group = fleet_group(capsys)
    code, _, err = run_cli(
        capsys, "window", "create", "always", "--cron", "* * * * *", "--duration", "1h", "--group", group
    )
    assert code == 0, err
    code, out, err = run_cli(capsys, "scheduler", "--once")
    assert code == 0, err
    assert "window always: started p-" in out
    run_id = out.split("started ", 1)[1].split()[0]
    store = SqliteStore(env)
    try:
        run = store.get_run(run_id)
        assert run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED) and run.owner is None
        assert run.options["window"] == "always" and "window_cutoff" in run.options
        assert all(item.state.is_terminal for item in store.run_items(run_id))
    finally:
        store.close()
    code, out, _ = run_cli(capsys, "scheduler", "--once")  # this minute's occurrence is taken
    assert code == 0 and "Nothing due." in out
    code, out, _ = run_cli(capsys, "window", "show", "always", "--format", "json")
    assert code == 0 and json.loads(out)["occurrences"][0]["run_id"] == run_id
    code, _, err = run_cli(capsys, "window", "delete", "always")
    assert code == 0, err


def test_resume_leaves_a_paused_run_to_its_window_and_run_show_says_when_it_continues(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = "p-20240601-020000-aaaaaa"
    store = SqliteStore(env)
    try:
        window = store.create_window(build_window("nightly", "0 2 * * *", "4h", "PatchGroup=web", "1h"))
        past = window.occurrence(datetime(2024, 6, 1, 2, tzinfo=UTC))
        run = replace(run_record(run_id), options=window_run_options(window, past))  # as the scheduler stores it
        store.create_run(run, [RunServer(run_id, WEB, "web-1", None, None)], [])
        store.set_run_status(run_id, RunStatus.PAUSED, "Paused: window closed")
    finally:
        store.close()
    code, out, err = run_cli(capsys, "resume")
    assert code == 0 and f"Run {run_id} is paused until its window opens again" in err
    code, out, _ = run_cli(capsys, "run", "show", run_id)
    assert code == 0 and "Paused Paused: window closed" in out and "continues when its window opens: " in out
    code, _, err = run_cli(capsys, "window", "delete", "nightly")
    assert code == 2 and f"unfinished run {run_id}" in err


# --- API ---------------------------------------------------------------------------------------


@pytest.fixture
def api(env: Path) -> Iterator[Api]:
    tokens = make_tokens(env)
    with TestClient(create_app(load_settings(), start_scheduler=False)) as client:
        yield Api(client, env, tokens)


BODY = {"name": "saturday", "cron": "0 2 * * SAT", "duration": "4h", "cutoff": "1h", "group": "PatchGroup=web"}


def test_admins_change_windows_viewers_read_them_and_every_change_is_audited(api: Api) -> None:
    headers = api.headers
    refused = api.client.post("/api/v1/windows", headers=headers("operator"), json=BODY)
    assert refused.status_code == 403
    created = api.client.post("/api/v1/windows", headers=headers("admin"), json=BODY | {"timezone": "Europe/Berlin"})
    assert created.status_code == 201 and created.json()["timezone"] == "Europe/Berlin"
    again = api.client.post("/api/v1/windows", headers=headers("admin"), json=BODY)
    assert again.status_code == 409 and "saturday" in error_of(again)["message"]

    listed = api.get("/windows")
    assert listed.status_code == 200 and listed.json()["total"] == 1
    [item] = listed.json()["items"]
    assert item["name"] == "saturday" and len(item["next"]) == 3 and item["open_now"] in (True, False)
    detail = api.get("/windows/saturday", count=2)
    assert detail.status_code == 200 and len(detail.json()["next"]) == 2 and detail.json()["occurrences"] == []
    upcoming = api.get("/windows/saturday/next", count=7)
    assert upcoming.status_code == 200 and upcoming.json()["total"] == 7
    assert api.get("/windows/nope").status_code == 404

    changed = api.client.put(
        "/api/v1/windows/saturday",
        headers=headers("admin"),
        json={k: v for k, v in BODY.items() if k != "name"} | {"duration": "6h"},
    )
    assert changed.status_code == 200 and changed.json()["duration"] == "6h" and changed.json()["timezone"] == "UTC"
    assert api.client.put("/api/v1/windows/saturday", headers=headers("viewer"), json=BODY).status_code == 403
    assert api.client.delete("/api/v1/windows/saturday", headers=headers("operator")).status_code == 403
    assert api.client.delete("/api/v1/windows/saturday", headers=headers("admin")).status_code == 204
    assert api.get("/windows").json()["total"] == 0

    entries = [(e["action"], e["target"], e["result"][:9]) for e in api.audit() if e["action"].startswith("window.")]
    assert ("window.create", "saturday", "error: 40") in entries  # the operator's 403, the admin's 409
    assert ("window.update", "saturday", "ok") in entries and ("window.delete", "saturday", "ok") in entries


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cron": "0 2 * *"}, "cron"),
        ({"duration": "forever"}, "duration"),
        ({"cutoff": "4h"}, "cutoff"),
        ({"timezone": "Nowhere/City"}, "timezone"),
        ({"group": "=web"}, "group"),
        ({"name": "bad name"}, "name"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_window_is_a_422_naming_its_field(api: Api, change: dict[str, str], field: str) -> None:
    response = api.client.post("/api/v1/windows", headers=api.headers("admin"), json=BODY | change)
    assert response.status_code == 422 and error_of(response)["field"] == field
    assert api.get("/windows").json()["total"] == 0


def test_serve_starts_a_due_window_run_by_itself(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    group = fleet_group(capsys)
    store = SqliteStore(env)
    try:
        store.create_window(build_window("always", "* * * * *", "1h", group))
    finally:
        store.close()
    tokens = make_tokens(env)
    with TestClient(create_app(load_settings())) as client:  # the scheduler's first pass runs at start
        api = Api(client, env, tokens)
        deadline = time.monotonic() + 60
        occurrences: list[dict[str, Any]] = []
        while time.monotonic() < deadline and not occurrences:
            occurrences = [o for o in api.get("/windows/always").json()["occurrences"] if o["run_id"]]
            time.sleep(0.05)
        assert occurrences, "the scheduler started no run"
        view = wait_for_run(api, occurrences[0]["run_id"])
        assert view["options"]["window"] == "always" and view["status"] in ("Succeeded", "Failed")

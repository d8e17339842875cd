"""Runs driven by ``autopatch serve``: start, collide, retry, follow as events, resume at start; catalog jobs.

The app runs in-process on the CLI's test environment (six simulated servers of seed 11 at a
high time scale); the simulator the server drives is opened beside it on the same state file to
inject faults, slow installs down and count what was installed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from autopatch.api import events
from autopatch.api.app import create_app
from autopatch.api.jobs import JobBoard
from autopatch.cli.context import load_settings
from autopatch.engine.planning import plan_run, start_run, store_plan
from autopatch.errors import ConflictError
from autopatch.store.sqlite import SqliteStore
from autopatch.wiring import build_fleet

from .conftest import configured_simulator as simulator
from .conftest import xml_path
from .test_api import Api, error_of, make_tokens

INSTALL_FAILURE = -2147023293  # 0x80070643
DEADLINE = 30.0


@pytest.fixture
def api(env: Path) -> Iterator[Api]:
    tokens = make_tokens(env)
    with TestClient(create_app(load_settings())) as client:
        yield Api(client, env, tokens)


def planned_target(api: Api) -> tuple[str, list[str]]:
    """An online server with KBs to install, and those KBs in order (from a dry run)."""
    online = [row["instance_id"] for row in api.fleet() if row["online"]]
    plan = api.post("/runs", instance_ids=online, dry_run=True)
    assert plan.status_code == 200
    row = next(row for row in plan.json()["servers"] if row["kbs_in_order"])
    return str(row["instance_id"]), list(row["kbs_in_order"])


def wait_for_run(api: Api, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        view: dict[str, Any] = api.get(f"/runs/{run_id}").json()
        if view["status"] in ("Succeeded", "Failed", "Cancelled"):
            return view
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish within {DEADLINE} s")


def read_events(api: Api, run_id: str) -> list[dict[str, str]]:
    """Every event of the stream until it ends: {"event", "id", "data"} per event."""
    events: list[dict[str, str]] = []
    with api.client.stream("GET", f"/api/v1/runs/{run_id}/events", headers=api.headers("viewer")) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        current: dict[str, str] = {}
        for line in response.iter_lines():
            if not line:
                if current:
                    events.append(current)
                current = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            current[name] = current.get(name, "") + value
    return events


def test_a_run_started_over_the_api_is_driven_by_the_server_and_collisions_are_409(api: Api) -> None:
    instance_id, kbs = planned_target(api)
    with simulator() as fleet:
        fleet.set_install_seconds(instance_id, 6_000.0)  # 0.12 s each at the test's time scale: live below
    started = api.post("/runs", instance_ids=[instance_id])
    assert started.status_code == 202
    run_id = started.json()["run_id"]
    assert started.json() == {"run_id": run_id, "status": "Pending"}
    again = api.post("/runs", instance_ids=[instance_id])
    assert again.status_code == 409 and run_id in error_of(again)["message"]
    view = wait_for_run(api, run_id)
    worked = [k for s in view["servers"] for k in s["kbs"] if k["state"] not in ("Already Installed", "Superseded")]
    assert view["status"] == "Succeeded", [(k["kb"], k["state"], k["reason"]) for k in worked]
    with simulator() as fleet:
        counts = fleet.install_counts
    assert all(counts.get((instance_id, kb), 0) >= 1 for kb in kbs)
    before, after = view["exposure"]["before"], view["exposure"]["after"]  # stored by the run, not the browser
    assert before["servers"] == after["servers"] == before["servers_assessed"] == after["servers_assessed"] == 1
    assert before["open_total"] > after["open_total"] and after["open_critical"] <= before["open_critical"]
    entries = [e for e in api.audit() if e["action"] == "run.create"]
    assert len(entries) == 3  # the dry run, the run, the refused collision
    assert any(
        e["detail"] == f"run {run_id}" and e["result"] == "ok" and e["actor"] == "test-operator" for e in entries
    )
    assert any(e["result"].startswith("error: 409") and run_id in e["result"] for e in entries)


def test_a_failed_kb_is_retried_as_a_new_run_and_an_installed_one_is_409(api: Api) -> None:
    instance_id, kbs = planned_target(api)
    with simulator() as fleet:
        fleet.inject_failure(instance_id, kbs[0], INSTALL_FAILURE, times=1)
    run_id = api.post("/runs", instance_ids=[instance_id]).json()["run_id"]
    failed = wait_for_run(api, run_id)
    assert failed["status"] == "Failed"
    [server] = failed["servers"]
    assert next(kb for kb in server["kbs"] if kb["kb"] == kbs[0])["state"] == "Failed"
    retried = api.post(f"/runs/{run_id}/retry", instance_id=instance_id, kb=kbs[0])
    assert retried.status_code == 202
    retry_id = retried.json()["run_id"]
    assert retry_id != run_id and retried.json()["status"] == "Pending"
    done = wait_for_run(api, retry_id)
    assert done["kind"] == "retry" and done["status"] == "Succeeded"
    again = api.post(f"/runs/{run_id}/retry", instance_id=instance_id, kb=kbs[0])
    assert again.status_code == 409 and "already installed" in error_of(again)["message"]
    [ok] = [e for e in api.audit() if e["action"] == "run.retry" and e["result"] == "ok"]
    assert ok["target"] == f"{run_id}/{instance_id}/{kbs[0]}" and retry_id in ok["detail"]


def test_retry_input_is_checked(api: Api) -> None:
    instance_id, kbs = planned_target(api)
    run_id = api.post("/runs", instance_ids=[instance_id]).json()["run_id"]
    wait_for_run(api, run_id)
    other = next(row["instance_id"] for row in api.fleet() if row["instance_id"] != instance_id)
    stranger = api.post(f"/runs/{run_id}/retry", instance_id=other, kb=kbs[0])
    assert stranger.status_code == 422 and error_of(stranger)["field"] == "instance_id"
    unknown = api.post("/runs/p-20240109-081500-1a2b3c/retry", instance_id=instance_id, kb=kbs[0])
    assert unknown.status_code == 404
    bad_kb = api.post(f"/runs/{run_id}/retry", instance_id=instance_id, kb="KB12x")
    assert bad_kb.status_code == 422 and error_of(bad_kb)["field"] == "kb"
    viewer = api.client.post(
        f"/api/v1/runs/{run_id}/retry", headers=api.headers("viewer"), json={"instance_id": instance_id, "kb": kbs[0]}
    )
    assert viewer.status_code == 403


def test_events_stream_every_transition_then_end(api: Api) -> None:
    instance_id, _ = planned_target(api)
    with simulator() as fleet:
        fleet.set_install_seconds(instance_id, 6_000.0)
    run_id = api.post("/runs", instance_ids=[instance_id]).json()["run_id"]
    events = read_events(api, run_id)  # opened while the run is live: it follows it to the end
    assert events[-1] == {"event": "end", "data": "Succeeded"}
    store = SqliteStore(api.db)
    stored = store.transitions(run_id)
    store.close()
    sent = [json.loads(e["data"]) for e in events[:-1]]
    assert len(sent) == len(stored) > 0 and len({e["id"] for e in events[:-1]}) == len(sent)
    assert sorted((t.instance_id, t.kb, t.from_state or "", t.to_state, t.at) for t in stored) == sorted(
        (e["instance"], e["kb"], e["from"] or "", e["to"], e["at"]) for e in sent
    )
    assert set(sent[0]) == {"instance", "kb", "from", "to", "at", "note"}
    replay = read_events(api, run_id)  # a finished run: the stored transitions, then end at once
    assert [e["data"] for e in replay] == [e["data"] for e in events]
    assert api.get("/runs/p-20240109-081500-1a2b3c/events").status_code == 404
    assert api.get("/runs/p-nope/events").status_code == 422


def test_a_viewer_may_not_start_runs_and_the_refusal_is_audited(api: Api) -> None:
    instance_id = next(row["instance_id"] for row in api.fleet() if row["online"])
    refused = api.post("/runs", role="viewer", instance_ids=[instance_id])
    assert refused.status_code == 403
    [entry] = [e for e in api.audit() if e["action"] == "run.create"]
    assert entry["actor"] == "test-viewer" and entry["result"].startswith("error: 403")
    store = SqliteStore(api.db)
    assert store.list_runs() == []
    store.close()


def test_the_worker_resumes_at_start_a_run_whose_driver_is_gone(env: Path) -> None:
    tokens = make_tokens(env)
    settings = load_settings()
    store = SqliteStore(env)
    fleet = build_fleet(settings, store)
    try:
        [instance] = [i for i in fleet.list_instances() if i.online][:1]
        store.save_instances([instance], datetime.now(UTC))
        run, lease = start_run(store, "patch", [instance], {})
        store_plan(store, plan_run(store, fleet, [instance], run=run))
        lease.release()  # its driver is gone: nobody holds the lease
    finally:
        getattr(fleet, "close", lambda: None)()
        store.close()
    with TestClient(create_app(settings)) as client:
        view = wait_for_run(Api(client, env, tokens), run.run_id)
    assert view["status"] == "Succeeded"


def test_an_app_without_its_worker_started_leaves_unfinished_runs_alone(env: Path) -> None:
    settings = load_settings()
    store = SqliteStore(env)
    fleet = build_fleet(settings, store)
    try:
        [instance] = [i for i in fleet.list_instances() if i.online][:1]
        store.save_instances([instance], datetime.now(UTC))
        run, lease = start_run(store, "patch", [instance], {})
        lease.release()
        with TestClient(create_app(settings, start_worker=False)):
            time.sleep(0.3)
            assert store.get_run(run.run_id).status == "Pending" and store.get_run(run.run_id).owner is None
    finally:
        getattr(fleet, "close", lambda: None)()
        store.close()


def test_a_catalog_update_job_imports_the_configured_folder(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "msrc"
    folder.mkdir()
    (folder / "2024-Apr.xml.gz").write_bytes(xml_path("2024-Apr").read_bytes())  # not in the session catalog
    monkeypatch.setenv("AUTOPATCH_CATALOG_DIR", str(folder))
    tokens = make_tokens(env)
    with TestClient(create_app(load_settings())) as client:
        api = Api(client, env, tokens)
        assert api.post("/catalog/update", role="operator").status_code == 403
        accepted = api.post("/catalog/update", role="admin")
        assert accepted.status_code == 202
        job_id = accepted.json()["job_id"]
        deadline = time.monotonic() + DEADLINE
        while (job := api.get(f"/jobs/{job_id}").json())["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert job["status"] == "succeeded" and job["error"] is None and job["kind"] == "catalog.update"
        assert job["progress"]["done"] == job["progress"]["total"] == 1
        assert job["summary"]["documents_imported"] == 1 and job["summary"]["entries_added"] > 0
        assert api.get("/jobs/j-0123456789ab").status_code == 404
        assert error_of(api.get("/jobs/nope"))["field"] == "job_id"
        [entry] = [e for e in api.audit() if e["action"] == "catalog.update" and e["result"] == "ok"]
        assert entry["actor"] == "test-admin" and entry["target"] == job_id


def test_a_second_job_of_a_kind_is_refused_while_one_runs_and_a_failure_is_one_line(tmp_path: Path) -> None:
    board = JobBoard(lambda: SqliteStore(tmp_path / "jobs.db"), lambda exc: f"503 {exc}")
    release = threading.Event()
    progressed = threading.Event()

    def slow(on_progress: Any) -> dict[str, Any]:
        on_progress(1, 2, "first")
        progressed.set()
        release.wait(10)
        return {"done": True}

    running = board.start("catalog.update", slow)
    with pytest.raises(ConflictError, match=running.job_id):
        board.start("catalog.update", slow)
    assert progressed.wait(10)
    assert board.get(running.job_id).view()["progress"] == {"done": 1, "total": 2}  # read back from the store
    release.set()
    deadline = time.monotonic() + DEADLINE
    while board.get(running.job_id).status == "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert board.get(running.job_id).summary == {"done": True}

    def broken(on_progress: Any) -> dict[str, Any]:
        raise OSError("disk full")

    failed = board.start("catalog.update", broken)
    while board.get(failed.job_id).status == "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert board.get(failed.job_id).status == "failed" and board.get(failed.job_id).error == "503 disk full"


def test_a_job_whose_process_died_reads_as_failed_and_frees_its_kind(tmp_path: Path) -> None:
    from autopatch.domain.jobs import STALE_AFTER

    board = JobBoard(lambda: SqliteStore(tmp_path / "jobs.db"), str)
    orphan = board.create("catalog.update")  # stored, but nothing runs it (its process was killed)
    store = SqliteStore(tmp_path / "jobs.db")
    try:
        store.update_job(orphan.job_id, datetime.now(UTC) - STALE_AFTER - timedelta(minutes=1), done=5, total=126)
    finally:
        store.close()
    seen = board.get(orphan.job_id)
    assert seen.status == "failed" and "the process running it stopped" in (seen.error or "")
    assert board.create("catalog.update").job_id != orphan.job_id  # no 409 for a dead job


def test_a_quiet_stream_sends_keep_alive_comments(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "KEEP_ALIVE_SECONDS", 0.2)
    tokens = make_tokens(env)
    settings = load_settings()
    store = SqliteStore(env)
    fleet = build_fleet(settings, store)
    try:
        [instance] = [i for i in fleet.list_instances() if i.online][:1]
        store.save_instances([instance], datetime.now(UTC))
        run, lease = start_run(store, "patch", [instance], {})
        lease.release()  # nobody drives it: the stream has nothing to say
    finally:
        getattr(fleet, "close", lambda: None)()
        store.close()
    with TestClient(create_app(settings, start_worker=False)) as client:
        api = Api(client, env, tokens)
        with client.stream("GET", f"/api/v1/runs/{run.run_id}/events", headers=api.headers("viewer")) as response:
            lines = response.iter_lines()
            assert next(line for line in lines if line) == ": keep-alive"
        assert api.post(f"/runs/{run.run_id}/cancel").status_code == 200
        assert [e["data"] for e in read_events(api, run.run_id)] == ["Cancelled"]

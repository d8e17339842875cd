"""The original's own React dashboard, built from its lockfile, driving ``autopatch serve`` in Chromium.

Nobody here wrote that client: it proves the compatibility endpoints answer what it reads. It is
built in a temporary copy (``npm ci``, ``vite build``) with ``BASE_URL`` pointed at a small reverse
proxy that adds the operator's Bearer token (the client sends none), served by ``http.server`` on
its own origin (so CORS is opened for it with ``AUTOPATCH_CORS_ORIGINS``), and clicked through:
list servers, select all, CVEs, patch (one KB made to fail), every server at 100%, retry, reboot.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from autopatch.access import create_token
from autopatch.cli.context import load_settings
from autopatch.engine.options import RunOptions
from autopatch.fleet.simulator import FleetSimulator
from autopatch.fleet.simulator_model import INSTALL_FAILURE_HRESULTS
from autopatch.operations import plan_dry_run, prepare_patch
from autopatch.store.sqlite import SqliteStore
from autopatch.wiring import build_fleet

pytestmark = pytest.mark.browser
FRONTEND = Path(__file__).resolve().parents[2] / "shared" / "seed" / "original-frontend"
CHROMIUM = Path("/usr/bin/chromium")
SERVERS = 3  # 10% of 3 rounds to no offline server: every selected server can be patched and rebooted
POLL_MS = 20_000  # the client polls /get-patch-status every 20 s


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def build_frontend(target: Path, base_url: str) -> Path:
    """The client as its README builds it, with only ``BASE_URL`` changed; ``dist/`` holds the site."""
    shutil.copytree(FRONTEND, target, ignore=shutil.ignore_patterns("node_modules", "dist"))
    config = target / "src" / "config" / "api.js"
    text = config.read_text(encoding="utf-8")
    config.write_text(re.sub(r"BASE_URL: '[^']*'", f"BASE_URL: '{base_url}'", text), encoding="utf-8")
    for command in (["npm", "ci", "--no-audit", "--no-fund"], ["npx", "vite", "build"]):
        done = subprocess.run(command, cwd=target, capture_output=True, text=True, timeout=240, check=False)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed (npm registry unreachable?):\n{done.stderr[-2000:]}")
    return target / "dist"


class TokenProxy(ThreadingHTTPServer):
    """A reverse proxy that adds ``Authorization: Bearer <token>``, as one in front of the API would."""

    def __init__(self, upstream: str, token: str) -> None:
        self.upstream, self.token = upstream, token
        self.http = httpx.Client(base_url=upstream, timeout=60)
        super().__init__(("127.0.0.1", 0), ProxyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ProxyHandler(BaseHTTPRequestHandler):
    server: TokenProxy

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length", "connection")}
        headers["Authorization"] = f"Bearer {self.server.token}"
        reply = self.server.http.request(self.command, self.path, content=body, headers=headers)
        self.send_response(reply.status_code)
        for key, value in reply.headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(reply.content)))
        self.end_headers()
        self.wfile.write(reply.content)

    do_GET = do_POST = do_OPTIONS = _forward  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        pass


def fail_one_kb(db: Path) -> tuple[str, str]:
    """Make the first KB the run will install on the first server fail once (the simulator's injected fault)."""
    settings = load_settings()
    store = SqliteStore(db)
    fleet = build_fleet(settings, store)
    assert isinstance(fleet, FleetSimulator)
    try:
        instances = fleet.list_instances()
        assert len(instances) == SERVERS and all(i.online for i in instances)
        target = sorted(i.instance_id for i in instances)[0]
        request = prepare_patch(
            fleet,
            store,
            all_servers=False,
            instance_ids=[target],
            tag=None,
            kbs=[],
            severity="Important",
            options=RunOptions(),
            targets_rule="",
        )
        kb = plan_dry_run(fleet, store, request).pending(target)[0].kb
        fleet.inject_failure(target, kb, INSTALL_FAILURE_HRESULTS[0], times=1)
        return target, kb
    finally:
        fleet.close()
        store.close()


def wait_until(check: Any, seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def stack(tmp_path: Path, env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """``autopatch serve`` on the simulator, the token proxy, and the built client on its own origin."""
    if not CHROMIUM.exists() or shutil.which("npm") is None:
        pytest.skip("needs /usr/bin/chromium and npm")
    monkeypatch.setenv("AUTOPATCH_SIMULATOR_SERVERS", str(SERVERS))
    monkeypatch.setenv("AUTOPATCH_SIMULATOR_TIME_SCALE", "100000")
    store = SqliteStore(env)
    tokens = {role: create_token(store, f"dash-{role}", role)[1] for role in ("operator", "admin")}
    store.close()
    failing = fail_one_kb(env)
    api_port, site_port = free_port(), free_port()
    site = f"http://127.0.0.1:{site_port}"
    server_env = os.environ | {"AUTOPATCH_CORS_ORIGINS": site}
    serve = subprocess.Popen(
        [str(Path(sys.executable).parent / "autopatch"), "serve", "--port", str(api_port)],
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "serve.log").open("w"),
    )
    proxy = TokenProxy(f"http://127.0.0.1:{api_port}", tokens["operator"])
    threading.Thread(target=proxy.serve_forever, args=(0.05,), daemon=True).start()
    dist = build_frontend(tmp_path / "frontend", proxy.url)
    static = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(site_port), "--bind", "127.0.0.1", "--directory", str(dist)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {tokens['admin']}"})
    try:
        wait_until(lambda: _answers(api, "/api/v1/health"), 20, "autopatch serve")
        wait_until(lambda: _answers(httpx.Client(base_url=site), "/"), 10, "the static server")
        yield {"site": site, "api": api, "failing": failing, "shots": tmp_path, "log": tmp_path / "serve.log"}
    finally:
        api.close()
        proxy.shutdown()
        proxy.server_close()
        for process in (static, serve):
            process.terminate()
            process.wait(timeout=15)


def _answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_the_original_dashboard_lists_patches_retries_and_reboots(stack: dict[str, Any]) -> None:
    from playwright.sync_api import expect, sync_playwright

    api: httpx.Client = stack["api"]
    shots: Path = stack["shots"]
    failing_instance, failing_kb = stack["failing"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.clock.install()  # time flows; fast_forward stands in for the client's 20 s poll interval
        page.goto(stack["site"])

        page.get_by_role("button", name="Quét Server").click()
        rows = page.locator("tbody tr").filter(has=page.locator("input[type=checkbox]"))
        expect(rows).to_have_count(SERVERS)
        expect(page.get_by_text(failing_instance)).to_be_visible()
        page.screenshot(path=shots / "1-servers.png", full_page=True)

        page.get_by_role("button", name="Chọn tất cả").click()
        page.get_by_role("button", name=f"Phân tích CVE ({SERVERS} server)").click()
        expect(page.get_by_text("Kết quả phân tích CVE")).to_be_visible()
        expect(page.get_by_text(re.compile(r"^CVE-\d{4}-\d+$")).first).to_be_visible()
        page.screenshot(path=shots / "2-cves.png", full_page=True)

        page.get_by_role("button", name=f"Run Patch KB ({SERVERS})").click()
        wait_until(lambda: _runs_finished(api, 1), 30, "the patch run")
        page.clock.fast_forward(POLL_MS)
        progress = page.get_by_text("100%", exact=True)
        expect(progress).to_have_count(SERVERS, timeout=15_000)
        retry = page.get_by_role("button", name="Retry Run Patch KB")
        expect(retry).to_have_count(1)
        failed_row = page.locator("tr").filter(has=retry)
        expect(failed_row).to_contain_text(failing_kb)
        expect(failed_row).to_contain_text("Failed")
        page.screenshot(path=shots / "3-patched-one-failed.png", full_page=True)

        retry.click()
        wait_until(lambda: _runs_finished(api, 2), 30, "the retry run")
        page.clock.fast_forward(POLL_MS)
        expect(page.get_by_role("button", name="Retry Run Patch KB")).to_have_count(0, timeout=15_000)
        expect(progress).to_have_count(SERVERS)
        expect(page.locator("tr").filter(has_text=failing_kb.removeprefix("KB")).first).to_contain_text("Success")
        page.screenshot(path=shots / "4-retried.png", full_page=True)

        page.get_by_role("button", name=f"Reboot {SERVERS} server").click()
        wait_until(lambda: _audited(api, "instance.reboot"), 15, "the reboot")
        expect(page.get_by_text("Lỗi")).to_have_count(0)
        page.screenshot(path=shots / "5-rebooted.png", full_page=True)
        browser.close()

    actions = [(e["action"], e["actor"], e["result"]) for e in api.get("/api/v1/audit").json()["items"]]
    assert ("run.create", "dash-operator", "ok") in actions and ("run.retry", "dash-operator", "ok") in actions
    assert ("instance.reboot", "dash-operator", "ok") in actions
    status = api.get(f"/api/v1/instances/{failing_instance}/status").json()
    assert status["percentage"] == 100.0
    assert {k["state"] for k in status["kbs"] if k["kb"] == failing_kb} == {"Success"}


def _runs_finished(api: httpx.Client, count: int) -> bool:
    runs = api.get("/api/v1/runs").json()["items"]
    return len(runs) >= count and all(run["status"] not in ("Pending", "Running", "Cancelling") for run in runs)


def _audited(api: httpx.Client, action: str) -> bool:
    return any(e["action"] == action for e in api.get("/api/v1/audit").json()["items"])

"""Benchmark: the HTTP API under load while a simulated patch run writes to the same database.

(a) ``autopatch patch --all`` drives a run on a simulated fleet (a subprocess, slow simulated time
    so it lasts the whole benchmark) while ``autopatch serve`` (another subprocess) answers. This
    process offers an open-loop load: 1,000 requests/s for 10 s on a fixed schedule, to
    ``GET /api/v1/instances/{id}/status`` and then to ``GET /api/v1/exposure``. Latency is counted
    from each request's *scheduled* send time, so a server that falls behind is charged for the
    queue it builds (no coordinated omission). Then the saturation throughput: closed-loop
    clients sending back to back, as fast as the server answers.
(b) The fleet summary, ``GET /api/v1/exposure``, for 10,000 scanned simulated servers against the
    full catalog (the fleet ``exposure.py`` builds), timed one request at a time.

    .venv/bin/python benchmarks/api.py [RATE] [SECONDS]   (default 1000 requests/s, 10 s)
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from _catalog import full_catalog
from autopatch.fleet.simulator import FleetSimulator, SimulatorConfig
from autopatch.scanning import discover_instances, scan_instances

AUTOPATCH = str(Path(sys.executable).with_name("autopatch"))
TIMEOUT = 5.0  # a request not answered within this is an error
CONNECTIONS = 8  # sender threads, each with one keep-alive connection
SATURATION_CLIENTS = 4  # more client threads only fight over this process's GIL
SATURATION_SECONDS = 3.0


def environment(db: Path, servers: int, seed: int, time_scale: float) -> dict[str, str]:
    return os.environ | {
        "AUTOPATCH_DB": str(db),
        "AUTOPATCH_SIMULATOR_SERVERS": str(servers),
        "AUTOPATCH_SIMULATOR_SEED": str(seed),
        "AUTOPATCH_SIMULATOR_TIME_SCALE": str(time_scale),
        "AUTOPATCH_NOTIFY": "",
    }


def viewer_token(env: dict[str, str]) -> str:
    name = f"bench-{time.time_ns()}"
    out = subprocess.run(
        [AUTOPATCH, "token", "create", "--name", name, "--role", "viewer", "--format", "json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return str(json.loads(out)["token"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[str]:
    """``autopatch serve`` on a free port until the block ends; yields its base URL once it answers."""
    port = free_port()
    with log.open("w") as output:
        server = subprocess.Popen(
            [AUTOPATCH, "serve", "--port", str(port)], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/api/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"autopatch serve did not start: see {log}")
            time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:  # still answering a backlog of slow requests
            server.kill()
            server.wait()


def connect(url: str) -> tuple[http.client.HTTPConnection, str]:
    parsed = httpx.URL(url)
    return http.client.HTTPConnection(parsed.host, parsed.port, timeout=TIMEOUT), parsed.raw_path.decode()


def send(connection: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> int:
    """One request on a keep-alive connection: its status once the whole body has arrived."""
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status


def open_loop(url: str, token: str, rate: float, seconds: float) -> tuple[list[float], int, float]:
    """Requests on a fixed schedule: (latencies from the scheduled send, errors, seconds to drain).

    ``CONNECTIONS`` sender threads take the next scheduled time, wait for it, send and record
    the latency from the scheduled time: a request that waits because every sender is still busy
    is charged for the wait. One still unsent ``TIMEOUT`` after its time is an error and is
    skipped, as is one unanswered after ``TIMEOUT``. Plain ``http.client`` on keep-alive
    connections keeps the load generator's own CPU cost low (it shares this machine's 2 cores).
    """
    headers = {"Authorization": f"Bearer {token}"}
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2
    schedule = iter(range(total))
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def sender() -> None:
        connection, path = connect(url)
        while True:
            with lock:
                number = next(schedule, None)
            if number is None:
                break
            scheduled = start + number / rate
            if (delay := scheduled - time.perf_counter()) > 0:
                time.sleep(delay)
            try:
                late = time.perf_counter() - scheduled > TIMEOUT
                ok = not late and send(connection, path, headers) == 200
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
                connection, path = connect(url)
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - scheduled)
                else:
                    errors[0] += 1
        connection.close()

    threads = [threading.Thread(target=sender) for _ in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0], time.perf_counter() - start - seconds


def closed_loop(url: str, token: str) -> float:
    """Saturation: ``SATURATION_CLIENTS`` clients each sending its next request when the last is answered."""
    headers = {"Authorization": f"Bearer {token}"}
    done = [0]
    end = time.perf_counter() + SATURATION_SECONDS
    lock = threading.Lock()

    def client() -> None:
        connection, path = connect(url)
        while time.perf_counter() < end:
            try:
                ok = send(connection, path, headers) == 200
            except (OSError, http.client.HTTPException):  # a timeout: not counted as done
                ok = False
                connection.close()
                connection, path = connect(url)
            with lock:
                done[0] += ok
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(SATURATION_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0] / (time.perf_counter() - started)


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load(name: str, url: str, token: str, rate: float, seconds: float, goal: str) -> None:
    latencies, errors, drained = open_loop(url, token, rate, seconds)
    saturation = closed_loop(url, token)
    offered = int(rate * seconds)
    p50, p99 = 1000 * quantile(latencies, 0.5), 1000 * quantile(latencies, 0.99)
    print(
        f"    {name:<34} p50 {p50:8.1f} ms  p99 {p99:8.1f} ms  "
        f"errors {errors:,}/{offered:,}  saturation {saturation:,.0f} req/s  (drained {drained:.1f} s after the "
        f"schedule){goal}"
    )


def patch_run(scratch: Path, catalog: Path, rate: float, seconds: float) -> None:
    db = scratch / "run.db"
    shutil.copyfile(catalog, db)
    servers = 100
    env = environment(db, servers, seed=5, time_scale=60.0)  # a 10-minute install takes 10 s
    token = viewer_token(env)
    run_log = (scratch / "patch.log").open("w")
    run = subprocess.Popen([AUTOPATCH, "patch", "--all"], env=env, stdout=run_log, stderr=subprocess.STDOUT)
    try:
        with serving(env, scratch / "serve-run.log") as base:
            headers = {"Authorization": f"Bearer {token}"}
            deadline = time.monotonic() + 60
            while not httpx.get(f"{base}/api/v1/runs", headers=headers).json()["items"]:
                if time.monotonic() > deadline or run.poll() is not None:
                    raise RuntimeError(f"the patch run did not start: see {scratch / 'patch.log'}")
                time.sleep(0.2)
            while (current := httpx.get(f"{base}/api/v1/runs", headers=headers).json()["items"][0])[
                "status"
            ] != "Running":
                if time.monotonic() > deadline or run.poll() is not None:  # past the scan and the plan: installs run
                    raise RuntimeError(f"the patch run did not reach Running: see {scratch / 'patch.log'}")
                time.sleep(0.2)
            detail = httpx.get(f"{base}/api/v1/runs/{current['run_id']}", headers=headers).json()
            target = detail["servers"][0]["instance_id"]
            print(
                f"(a) while run {current['run_id']} ({current['status']}) patches {len(detail['servers'])} of "
                f"{servers} simulated servers; open loop {rate:,.0f} requests/s for {seconds:.0f} s, "
                f"{CONNECTIONS} sender threads"
            )
            load(
                "GET /instances/{id}/status",
                f"{base}/api/v1/instances/{target}/status",
                token,
                rate,
                seconds,
                "  goal: p99 < 50 ms, 0 errors",
            )
            load(f"GET /exposure ({servers} servers)", f"{base}/api/v1/exposure", token, rate, seconds, "")
            still = httpx.get(f"{base}/api/v1/runs/{current['run_id']}", headers=headers, timeout=120).json()["status"]
            print(f"    the run was still {still} at the end (it must outlast the load)")
    finally:
        run.terminate()
        run.wait(10)
        run_log.close()


def fleet_10k(catalog: Path, servers: int) -> Path:
    """The 10,000-server scanned fleet of ``exposure.py`` (seed 3), built once and kept in the scratch folder."""
    db = catalog.with_name(f"fleet-{servers}.db")
    if db.exists():
        return db
    building = db.with_suffix(".building")
    shutil.copyfile(catalog, building)
    store = full_catalog(building)
    fleet = FleetSimulator(store, SimulatorConfig(servers=servers, seed=3, offline_fraction=0.0, time_scale=1e9))
    scan_instances(fleet, store, discover_instances(fleet, store), sleep=lambda _: None)
    fleet.close()
    store.close()
    building.rename(db)
    return db


def fleet_summary(scratch: Path, catalog: Path, servers: int) -> None:
    started = time.perf_counter()
    db = fleet_10k(catalog, servers)
    setup = time.perf_counter() - started
    env = environment(db, servers, seed=3, time_scale=1e9)
    token = viewer_token(env)
    with serving(env, scratch / "serve-10k.log") as base:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(headers=headers, timeout=60) as client:
            times = []
            for _ in range(6):
                began = time.perf_counter()
                response = client.get(f"{base}/api/v1/exposure")
                times.append(time.perf_counter() - began)
                assert response.status_code == 200, response.text
            body = response.json()
    first, rest = times[0], times[1:]
    print(
        f"(b) GET /exposure, {body['totals']['servers']:,} servers ({body['totals']['servers_assessed']:,} assessed, "
        f"{body['totals']['open_total']:,} open pairs; fleet ready in {setup:.1f} s)"
    )
    print(
        f"    first {1000 * first:,.0f} ms; then median {1000 * statistics.median(rest):,.0f} ms, "
        f"max {1000 * max(rest):,.0f} ms over {len(rest)} requests  goal: < 200 ms"
    )


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so the servers started here are stopped too
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 1000.0
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    scratch = Path(tempfile.mkdtemp(prefix="autopatch-api-bench-"))
    catalog = Path(tempfile.gettempdir()) / "autopatch-bench" / "catalog.db"
    catalog.parent.mkdir(exist_ok=True)
    full_catalog(catalog).close()
    print(f"API benchmark on {os.cpu_count()} cores; logs in {scratch}")
    patch_run(scratch, catalog, rate, seconds)
    fleet_summary(scratch, catalog, 10_000)


if __name__ == "__main__":
    main()

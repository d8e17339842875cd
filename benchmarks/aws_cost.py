"""Benchmark: what a patched KB costs on Step Functions, ours against the original's 30-second poll.

Executes the real ``deploy/statemachines/patch_run.asl.json`` in moto (the tests' harness:
``tests/aws_support.py``) against the real handlers, the DynamoDB store on moto and the fleet
simulator, with the deployed waiting limits (``Timing()``: HeartbeatSeconds 1,800, TimeoutSeconds
7,200, growing looks at a rebooting server) and no lost event. Each KB is a 20-minute install that
needs a reboot (the simulator's Windows: 30 s to shut down, 120 s to boot, 30 s per scan).

Simulated time runs ``SPEED`` times faster than the wall clock for the fleet and for the Wait
states alike (a Wait of 30 s sleeps 0.3 s), so the execution's shape is the one a real 20-minute
install gives. Two executions, one server each: one KB, then two KBs (each with its own reboot);
the difference is what one more installed KB costs (measured again with the policy ``never``: an
install without its reboot) (the run's own Plan, FinishRun and Notify, and
the server's Gate and end, are paid once per run and per server, not per KB).

The original's design, from its description: about 4 state transitions per KB plus 3 per
30-second poll (Wait, the status Lambda, a Choice) for as long as the KB is in flight — here the
install plus the reboot and its verification scan, the same simulated durations as ours — and one
Lambda invocation to send plus one per poll.

Prices (us-east-1 list, free tiers left out, ``../shared/docs/AWS_TESTING.md``): Step Functions
standard $0.025 per 1,000 transitions; Lambda $0.20 per million requests plus $0.0000133334 per
GB-second (arm64), each invocation taken as 128 MB for 200 ms; DynamoDB on-demand $0.625 per million
write units and $0.125 per million read units (counted here as requests: a batch's items, a
transaction's items twice, one unit per item or query).

    .venv/bin/python benchmarks/aws_cost.py
"""

from __future__ import annotations

import importlib
import math
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.handlers
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' moto harness, shared rather than copied
support: Any = importlib.import_module("tests.aws_support")

from autopatch.aws.run_starter import hand_over  # noqa: E402
from autopatch.aws.wiring import Runtime, Timing, use_runtime  # noqa: E402
from autopatch.domain.patching import KbState  # noqa: E402
from autopatch.domain.runs import RunItem, RunServer  # noqa: E402
from autopatch.engine.ownership import RunLease, new_owner_id  # noqa: E402
from autopatch.engine.planning import RunPlan, new_run, store_plan  # noqa: E402
from autopatch.fleet.simulator import FleetSimulator, SimulatorConfig  # noqa: E402
from autopatch.scanning import scan_instances  # noqa: E402
from autopatch.store.dynamodb import DynamoStore  # noqa: E402
from autopatch.store.sqlite import SqliteStore  # noqa: E402

SPEED = 100.0  # simulated seconds per wall second
INSTALL_SECONDS = 1200.0
POLL_SECONDS = 30.0
SHUTDOWN, BOOT, SCAN = 30.0, 120.0, 30.0  # the simulator's defaults: the reboot and its verification scan
TRANSITION = 0.025 / 1000
REQUEST = 0.20 / 1_000_000
GB_SECOND = 0.0000133334
INVOCATION = REQUEST + 0.128 * 0.2 * GB_SECOND
WRITE_UNIT, READ_UNIT = 0.625 / 1_000_000, 0.125 / 1_000_000
KBS = (("KB5066782", "10.0.20348.4294"), ("KB5070884", "10.0.20348.4297"))


class FastClock:
    """The simulator's clock: ``SPEED`` simulated seconds per wall second."""

    def __init__(self) -> None:
        self.started = time.time()

    def __call__(self) -> float:
        return self.started + (time.time() - self.started) * SPEED


class StoreUnits:
    """DynamoDB write and read requests, by item, as on-demand capacity counts them (approximately)."""

    def __init__(self) -> None:
        self.units: Counter[str] = Counter()

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.service_model.service_name != "dynamodb":
            return
        name = model.name
        if name in ("PutItem", "UpdateItem", "DeleteItem"):
            self.units["write"] += 1
        elif name == "BatchWriteItem":
            self.units["write"] += sum(len(requests) for requests in params["RequestItems"].values())
        elif name == "TransactWriteItems":
            self.units["write"] += 2 * len(params["TransactItems"])
        elif name in ("GetItem", "Query"):
            self.units["read"] += 1
        elif name == "BatchGetItem":
            self.units["read"] += sum(len(request["Keys"]) for request in params["RequestItems"].values())


def planned_run(store: DynamoStore, fleet: FleetSimulator, kbs: int, reboot: str) -> str:
    """A run of the September server with the next ``kbs`` cumulative updates, each needing a reboot."""
    [target] = fleet.list_instances()
    store.save_instances([target], datetime.now(UTC))
    scan_instances(fleet, store, [target])
    owner = new_owner_id()
    run = new_run("patch", {"concurrency": 1, "reboot": reboot}, owner=owner)
    server = RunServer(run.run_id, target.instance_id, target.name, "Windows Server 2022", "10.0.20348.4171")
    items = [
        RunItem(run.run_id, target.instance_id, kb, position, KbState.PENDING, "Security Update", build, "Yes")
        for position, (kb, build) in enumerate(KBS[:kbs])
    ]
    run_id = store_plan(store, RunPlan(run, [server], items))
    hand_over(store, RunLease(store, run_id, owner))  # as the API does: the run's lease goes to its workflow
    return run_id


def execute(kbs: int, reboot: str = "if-required") -> tuple[Any, Counter[str], dict[str, int]]:
    """One execution of the patch-run machine for one server and ``kbs`` KBs; its history and store requests."""
    units = StoreUnits()
    entry = ("before-parameter-build.*.*", units)
    botocore.handlers.BUILTIN_HANDLERS.append(entry)
    boto3.setup_default_session()
    try:
        with pytest.MonkeyPatch.context() as patch, support.aws_mock(patch), tempfile.TemporaryDirectory() as folder:
            client = boto3.client("dynamodb", region_name=support.REGION)
            store = DynamoStore("autopatch-catalog", "autopatch-state", client=client, sleep=lambda _: None)
            store.create_tables(wait=False)
            support.import_catalog(store)
            catalog = SqliteStore(":memory:")
            support.import_catalog(catalog)
            config = SimulatorConfig(
                servers=1, seed=169, offline_fraction=0.0, core_fraction=0.0, failure_rate=0.0, time_scale=1.0
            ).model_copy(update={"products": ["Windows Server 2022"], "install_seconds_jitter": 0.0})
            fleet = FleetSimulator(catalog, config, state_path=Path(folder) / "fleet.db", clock=FastClock())
            fleet.set_install_seconds(fleet.servers[0].instance_id, INSTALL_SECONDS)
            run_id = planned_run(store, fleet, kbs, reboot)
            states = support.StepFunctions(patch)
            waits = _scaled_waits(patch)
            recording = support.RecordingFleet(fleet)
            runtime = Runtime(
                store=store,
                fleet=recording,
                states=states.client,
                timing=Timing(),  # the deployed limits
                idempotency_client=client,
                notifiers=[],
                sleep=lambda seconds: time.sleep(seconds / SPEED),
            )
            with use_runtime(runtime), support.EventBridge(recording):
                execution = states.execute("PatchRunStateMachine", run_id, timeout=600)
            assert execution.status == "SUCCEEDED", states.errors
            final = {item.kb: str(item.state) for item in store.run_items(run_id)}
            assert set(final.values()) == {"Success"}, final
            fleet.close()
            catalog.close()
            return execution, units.units, waits
    finally:
        botocore.handlers.BUILTIN_HANDLERS.remove(entry)
        boto3.setup_default_session()


def _scaled_waits(patch: pytest.MonkeyPatch) -> dict[str, int]:
    """Wait states sleep their seconds divided by ``SPEED``: the fleet's time and the workflow's agree."""
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction

    waited = {"states": 0, "seconds": 0}

    def wait(function: Any, env: Any, wait_seconds: int) -> None:
        waited["states"] += 1
        waited["seconds"] += wait_seconds
        time.sleep(wait_seconds / SPEED)

    patch.setattr(WaitFunction, "_wait_interval", wait)
    return waited


def dollars(transitions: float, invocations: float, writes: float = 0.0, reads: float = 0.0) -> float:
    return transitions * TRANSITION + invocations * INVOCATION + writes * WRITE_UNIT + reads * READ_UNIT


def main() -> None:
    (quiet_one, quiet_one_units, _), (quiet_two, quiet_two_units, _) = execute(1, "never"), execute(2, "never")
    quiet = (quiet_two.transitions - quiet_one.transitions, quiet_two.lambda_invocations - quiet_one.lambda_invocations)
    quiet_writes = quiet_two_units["write"] - quiet_one_units["write"]
    runs = {kbs: execute(kbs) for kbs in (1, 2)}
    (one, units_one, waits_one), (two, units_two, _) = runs[1], runs[2]
    transitions = two.transitions - one.transitions
    invocations = two.lambda_invocations - one.lambda_invocations
    writes = units_two["write"] - units_one["write"]
    reads = units_two["read"] - units_one["read"]
    in_flight = INSTALL_SECONDS + SHUTDOWN + BOOT + SCAN
    polls = math.ceil(in_flight / POLL_SECONDS)
    original_transitions, original_invocations = 4 + 3 * polls, 1 + polls
    print(
        f"one server, one KB (20-minute install, one reboot): {one.transitions} transitions, "
        f"{one.lambda_invocations} Lambda invocations, {units_one['write']} DynamoDB writes, "
        f"{units_one['read']} reads; {waits_one['states']} Wait states ({waits_one['seconds']} s)"
    )
    print(
        f"one server, two KBs: {two.transitions} transitions, {two.lambda_invocations} invocations, "
        f"{units_two['write']} writes, {units_two['read']} reads"
    )
    print(f"the second KB added: {transitions} transitions, {invocations} invocations, {writes} writes, {reads} reads")
    print(
        f"without a reboot (policy never), one more KB: {quiet[0]} transitions, {quiet[1]} invocations, "
        f"{quiet_writes} writes; ${dollars(*quiet) * 1000:.2f} per 1,000 KBs (Step Functions + Lambda)"
    )
    print(f"original design, one KB in flight {in_flight:.0f} s polled every {POLL_SECONDS:.0f} s: {polls} polls")
    ours = dollars(transitions, invocations) * 1000
    ours_with_store = dollars(transitions, invocations, writes, reads) * 1000
    original = dollars(original_transitions, original_invocations) * 1000
    print(
        f"per 1,000 patched KBs: ours ${ours:.2f} (Step Functions + Lambda), ${ours_with_store:.2f} with DynamoDB; "
        f"original ${original:.2f} (Step Functions + Lambda, its polling alone)"
    )
    print(
        f"per installed KB: ours {transitions} transitions, {invocations} invocations; "
        f"original {original_transitions} transitions, {original_invocations} invocations"
    )


if __name__ == "__main__":
    main()

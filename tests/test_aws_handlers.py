"""The Lambda handlers one at a time: tokens taken once, waits completed at once or by the event, repeats harmless."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from pydantic import ValidationError

from autopatch.aws import command_events, run_handlers
from autopatch.aws.run_models import StepTask
from autopatch.aws.run_starter import hand_over
from autopatch.aws.wiring import Runtime, Timing, use_runtime
from autopatch.engine.planning import start_run
from autopatch.fleet.simulator import FleetSimulator
from autopatch.store.dynamodb import DynamoStore
from autopatch.store.sqlite import SqliteStore

from .aws_scenarios import Collecting, fleet_config
from .aws_support import REGION, FakeContext, aws_mock, command_event, import_catalog


class States:
    """The Step Functions client as the handlers use it: tokens sent back, or refused as AWS refuses them."""

    def __init__(self, gone: frozenset[str] = frozenset()) -> None:
        self.completed: list[tuple[str, str]] = []
        self.gone = gone

    def send_task_success(self, *, taskToken: str, output: str) -> None:  # noqa: N803
        if taskToken in self.gone:
            raise ClientError({"Error": {"Code": "TaskTimedOut", "Message": "Task Timed Out"}}, "SendTaskSuccess")
        self.completed.append((taskToken, output))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Runtime, FleetSimulator]]:
    """A runtime on SQLite and a simulated fleet whose commands take real seconds (1 simulated s per s)."""
    store = SqliteStore(tmp_path / "store.db")
    import_catalog(store)
    fleet = FleetSimulator(store, fleet_config(1.0), state_path=tmp_path / "fleet.db")
    runtime = Runtime(
        store=store, fleet=fleet, states=States(), timing=Timing(silence_seconds=1, wait_timeout_seconds=2)
    )
    with use_runtime(runtime):
        yield runtime, fleet
    fleet.close()
    store.close()


def wait_event(runtime: Runtime, fleet: FleetSimulator, command_id: str, token: str) -> dict[str, Any]:
    instance_id = fleet.servers[0].instance_id
    step = {"phase": "sent", "kb": "KB5070884", "attempt": 1, "command_id": command_id}
    return {"run_id": "p-20260105-030000-abcdef", "instance_id": instance_id, "step": step, "token": token}


def test_an_event_for_a_command_nobody_waits_for_completes_nothing(world: tuple[Runtime, FleetSimulator]) -> None:
    runtime, fleet = world
    event = command_event("0b5c1cbb-3f3b-4c39-9f2a-5f1f4b0c2a11", fleet.servers[0].instance_id, "Success")
    assert command_events.handler(event, FakeContext("CommandEventsFunction")) == {"completed": False}
    assert runtime.states.completed == []


def test_a_running_command_keeps_its_token_until_its_event_and_a_duplicate_event_completes_nothing(
    world: tuple[Runtime, FleetSimulator],
) -> None:
    runtime, fleet = world
    instance_id = fleet.servers[0].instance_id
    command_id = fleet.send_scan(instance_id)  # 30 simulated seconds: still running
    assert run_handlers.wait_command(wait_event(runtime, fleet, command_id, "token-1"), FakeContext("W")) == {
        "waiting": f"command#{command_id}"
    }
    assert runtime.states.completed == []
    running = command_event(command_id, instance_id, "InProgress")
    assert command_events.handler(running, FakeContext("E")) == {"completed": False}  # not final: the wait goes on
    ended = command_event(command_id, instance_id, "Success")
    assert command_events.handler(ended, FakeContext("E")) == {"completed": True}
    assert command_events.handler(ended, FakeContext("E")) == {"completed": False}  # EventBridge delivered it twice
    [(token, output)] = runtime.states.completed
    assert token == "token-1" and '"status": "Success"' in output


def test_a_wait_for_a_command_that_already_ended_is_completed_at_once(world: tuple[Runtime, FleetSimulator]) -> None:
    runtime, fleet = world
    fleet.config = fleet.config.model_copy(update={"scan_seconds": 0.0})
    command_id = fleet.send_scan(fleet.servers[0].instance_id)  # its event came before the token was stored
    run_handlers.wait_command(wait_event(runtime, fleet, command_id, "token-2"), FakeContext("W"))
    assert [token for token, _ in runtime.states.completed] == ["token-2"]
    assert runtime.store.take_waiter(f"command#{command_id}") is None


def test_a_wait_that_already_gave_up_is_not_an_error_for_the_event(world: tuple[Runtime, FleetSimulator]) -> None:
    runtime, _ = world
    runtime.states = States(gone=frozenset({"token-3"}))
    runtime.store.put_waiter("command#c-3", "token-3")
    assert command_events.complete_waiter(runtime, "command#c-3", {"status": "Success"}) is False


def test_task_inputs_are_checked_at_the_edge() -> None:
    step = {"phase": "sent", "kb": "KB5070884", "command_id": "0b5c1cbb-3f3b-4c39-9f2a-5f1f4b0c2a11"}
    good = {"run_id": "p-20260105-030000-abcdef", "instance_id": "i-0123456789abcdef0", "step": step}
    assert StepTask.model_validate(good).step.kb == "KB5070884"
    for field, value in (("instance_id", "i-0123; Restart-Computer"), ("run_id", "../etc"), ("step", {"phase": "x"})):
        with pytest.raises(ValidationError):
            StepTask.model_validate(good | {field: value})
    with pytest.raises(ValidationError):
        StepTask.model_validate(good | {"step": step | {"kb": "KB1; rm"}})


def test_a_heartbeat_must_be_shorter_than_the_timeout() -> None:
    with pytest.raises(ValueError, match="HeartbeatSeconds"):
        Timing(silence_seconds=7200, wait_timeout_seconds=7200)


def test_a_repeated_install_task_or_notification_acts_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Step Functions retried the task after its Lambda died answering: the stored result answers the repeat."""
    with aws_mock(monkeypatch):
        client = boto3.client("dynamodb", region_name=REGION)
        store = DynamoStore("autopatch-catalog", "autopatch-state", client=client, sleep=lambda _: None)
        store.create_tables(wait=False)
        import_catalog(store)
        with FleetSimulator(store, fleet_config(100_000.0), state_path=tmp_path / "fleet.db") as fleet:
            notifier = Collecting()
            runtime = Runtime(
                store=store, fleet=fleet, states=States(), notifiers=[notifier], idempotency_client=client
            )  # type: ignore[list-item]
            with use_runtime(runtime):
                instances = fleet.list_instances()
                store.save_instances(instances, datetime.now(UTC))
                run, lease = start_run(store, "patch", instances[:1], {})
                hand_over(store, lease)
                server = {"run_id": run.run_id, "instance_id": instances[0].instance_id}
                run_handlers.plan({"run_id": run.run_id}, FakeContext("PlanFunction"))
                run_handlers.gate(server, FakeContext("GateFunction"))
                step = run_handlers.next_kb(server, FakeContext("NextKbFunction"))
                first = run_handlers.send_install({**server, "step": step}, FakeContext("SendInstallFunction"))
                again = run_handlers.send_install({**server, "step": step}, FakeContext("SendInstallFunction"))
                assert first == again and first["phase"] == "sent"
                assert fleet.install_counts == {(instances[0].instance_id, step["kb"]): 1}
                for _ in range(2):
                    run_handlers.notify({"run_id": run.run_id}, FakeContext("NotifyFunction"))
                assert len(notifier.summaries) == 1


def test_the_deployed_wiring_is_built_once_per_container_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from autopatch.aws import wiring
    from autopatch.fleet.ssm import SsmFleet

    for name, value in {
        "AUTOPATCH_CATALOG_TABLE": "ap-catalog",
        "AUTOPATCH_STATE_TABLE": "ap-state",
        "AUTOPATCH_IDEMPOTENCY_TABLE": "ap-idempotency",
        "AUTOPATCH_COMMAND_SILENCE_SECONDS": "900",
        "AUTOPATCH_AWS_REGION": REGION,
        "AUTOPATCH_NOTIFY": "sns:arn:aws:sns:us-east-1:123456789012:autopatch",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(wiring, "_current", None)
    runtime = wiring.runtime()
    assert wiring.runtime() is runtime  # the next invocation reuses it (and its connections)
    assert isinstance(runtime.store, DynamoStore) and runtime.store.state_table == "ap-state"
    assert runtime.store.catalog_table == "ap-catalog" and isinstance(runtime.fleet, SsmFleet)
    assert runtime.idempotency_table == "ap-idempotency" and runtime.timing.silence_seconds == 900
    assert runtime.states.meta.service_model.service_name == "stepfunctions"


def test_the_catalog_update_function_does_the_apis_job_and_writes_its_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autopatch.api.jobs import JobBoard
    from autopatch.aws import ops_handlers
    from autopatch.settings import Settings

    from .conftest import xml_path

    folder = tmp_path / "msrc"
    folder.mkdir()
    (folder / xml_path("2024-Jan").name).write_bytes(xml_path("2024-Jan").read_bytes())
    store = SqliteStore(tmp_path / "store.db")
    runtime = Runtime(store=store, fleet=None, states=States(), settings=Settings(catalog_dir=folder))  # type: ignore[arg-type]
    board = JobBoard(lambda: SqliteStore(tmp_path / "store.db"), str)
    job = board.create("catalog.update")  # what POST /catalog/update stores before invoking the function
    with use_runtime(runtime):
        answer = ops_handlers.catalog_update({"job_id": job.job_id}, FakeContext("CatalogUpdateFunction"))
        assert answer == {"job_id": job.job_id}
    done = board.get(job.job_id)
    assert done.status == "succeeded" and done.total == done.done == 1
    assert done.summary is not None and done.summary["documents_imported"] == 1
    assert store.get_document("2024-Jan") is not None
    store.close()

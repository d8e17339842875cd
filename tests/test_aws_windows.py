"""A maintenance window on Step Functions: the scheduler starts the run, the window pauses it, the next one ends it.

moto executes the real fleet-run definition against the real handlers; the window is read against
the runtime's clock, which the test moves past the cutoff while the second install is sent (as
``test_windows_scheduler`` does for the local engine). KBs in flight finish; nothing new starts;
FinishRun pauses the run and gives its lease up; a week later the scheduler's pass continues it in
an execution of its own, and every KB is installed exactly once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import pytest

from autopatch.aws.wiring import Runtime, use_runtime
from autopatch.domain.patching import KbState, RunStatus
from autopatch.domain.windows import build_window
from autopatch.engine import scheduler
from autopatch.engine.options import RunOptions
from autopatch.fleet.simulator import FleetSimulator
from autopatch.store.sqlite import SqliteStore

from .aws_scenarios import Collecting, Scenario, aws_timing, dynamo_store, fleet_config
from .aws_support import (
    REGION,
    EventBridge,
    FakeContext,
    RecordingFleet,
    StepFunctions,
    aws_mock,
    handler_of,
    import_catalog,
)

SATURDAY = datetime(2024, 6, 1, 0, 0, tzinfo=UTC)  # 02:00 in Berlin (summer time)
CUTOFF = SATURDAY + timedelta(hours=3)


class WindowClock:
    """The runtime's clock (epoch seconds): still, until the test moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now.timestamp()


class CutoffDuringSecondInstall(RecordingFleet):
    """Moves the clock past the window's cutoff as the second install is sent: that one still finishes."""

    def __init__(self, fleet: FleetSimulator, clock: WindowClock) -> None:
        super().__init__(fleet)
        self.clock = clock
        self.sent_before_cutoff: list[tuple[str, str]] = []
        self._sending = threading.Lock()

    def send_install(self, instance_id: str, kb: str, token: str | None = None) -> str:
        with self._sending:
            if self.clock.now < CUTOFF:
                self.sent_before_cutoff.append((instance_id, kb))
                if len(self.sent_before_cutoff) == 2:
                    self.clock.now = CUTOFF + timedelta(minutes=1)
        return super().send_install(instance_id, kb, token)


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[FleetSimulator]:
    catalog = SqliteStore(":memory:")
    import_catalog(catalog)
    fleet = FleetSimulator(catalog, fleet_config(2_000.0), state_path=tmp_path / "fleet.db")
    yield fleet
    fleet.close()
    catalog.close()


def schedule() -> list[dict[str, Any]]:
    """One pass of the scheduler's Lambda (its EventBridge schedule fires every minute)."""
    answer = handler_of("SchedulerFunction")({}, FakeContext("SchedulerFunction"))
    actions: list[dict[str, Any]] = answer["actions"]
    return actions


def test_a_window_run_pauses_on_step_functions_and_the_next_window_finishes_it(
    simulator: FleetSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One server at a time, so that which KBs start before the cutoff is certain (a window run's
    # concurrency is otherwise the default 10: all four servers would start at once).
    monkeypatch.setattr(scheduler, "RunOptions", partial(RunOptions, concurrency=1))
    with aws_mock(monkeypatch):
        states = StepFunctions(monkeypatch)
        store = dynamo_store()
        store.save_instances(simulator.list_instances(), SATURDAY)
        store.create_window(
            build_window(
                "saturday", "0 2 * * SAT", "4h", "OS=Windows Server 2022", cutoff="1h", timezone="Europe/Berlin"
            )
        )
        clock = WindowClock(SATURDAY + timedelta(minutes=1))
        fleet = CutoffDuringSecondInstall(simulator, clock)
        notifier = Collecting()
        runtime = Runtime(
            store=store,
            fleet=fleet,
            states=states.client,
            timing=aws_timing(Scenario("window", lambda outcome, ids: None)),
            notifiers=[notifier],  # type: ignore[list-item]
            idempotency_table="autopatch-state",
            idempotency_client=boto3.client("dynamodb", region_name=REGION),
            sleep=lambda seconds: None,
            clock=clock,
        )
        machine = states.machines["PatchRunStateMachine"]
        runtime.settings = runtime.settings.model_copy(update={"state_machine_arn": machine})
        with use_runtime(runtime), EventBridge(fleet):
            [started] = schedule()
            assert (started["action"], started["window"]) == ("started", "saturday")
            run_id = started["run_id"]
            first = states.finish(f"{machine.replace(':stateMachine:', ':execution:')}:{run_id}")
            assert first.status == "SUCCEEDED", "\n".join(states.errors)
            assert first.entered("RunPaused") == 1 and first.entered("Notify") == 0
            assert first.entered("ServerHeld") == 2

            paused = store.get_run(run_id)
            assert (paused.status, paused.reason, paused.owner) == (RunStatus.PAUSED, "Paused: window closed", None)
            items = store.run_items(run_id)
            done = {(i.instance_id, i.kb) for i in items if i.state is KbState.SUCCESS}
            assert done == set(fleet.sent_before_cutoff)  # what started before the cutoff finished, nothing more
            assert KbState.IN_PROGRESS not in {i.state for i in items}
            assert any(i.state is KbState.PENDING for i in items) and notifier.summaries == []

            clock.now = CUTOFF + timedelta(minutes=30)  # later that night: the window takes no new KB
            assert schedule() == []
            clock.now = SATURDAY + timedelta(days=7, minutes=1)
            [resumed] = schedule()
            assert (resumed["action"], resumed["run_id"]) == ("resumed", run_id)
            executions = states.client.list_executions(stateMachineArn=machine)["executions"]
            [again] = [e for e in executions if e["name"] != run_id]
            assert again["name"].startswith(f"{run_id}-")
            second = states.finish(again["executionArn"])
        assert second.status == "SUCCEEDED", "\n".join(states.errors)
        assert second.entered("Notify") == 1 and second.entered("RunPaused") == 0
        finished = store.get_run(run_id)
        assert finished.status is RunStatus.SUCCEEDED, finished.reason
        pending = [i for i in store.run_items(run_id) if i.state is KbState.PENDING]
        assert pending == []
        assert simulator.install_counts and all(count == 1 for count in simulator.install_counts.values())
        assert len(notifier.summaries) == 1

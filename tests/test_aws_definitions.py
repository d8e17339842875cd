"""The two state machine definitions, read as data: what moto's interpreter cannot be trusted to catch.

cfn-lint never opens a ``DefinitionUri`` file and moto finds a ``Next`` to a missing state only when
an execution reaches it; these checks hold for every path, executed or not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from autopatch.aws.functions import FUNCTIONS, STATE_MACHINES
from autopatch.aws.run_models import Phase, RingAction

from .aws_support import ROOT

TIMEOUTS = {"States.Timeout", "States.HeartbeatTimeout"}


def load(path: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((ROOT / path).read_text(encoding="utf-8"))
    return document


def scopes(machine: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The machine itself and every Map's iteration: each has its own StartAt and States."""
    yield machine
    for state in machine["States"].values():
        if state["Type"] == "Map":
            yield from scopes(state["ItemProcessor"])


def targets(state: dict[str, Any]) -> list[str]:
    found = [state["Next"]] if "Next" in state else []
    found += [catcher["Next"] for catcher in state.get("Catch", [])]
    found += [choice["Next"] for choice in state.get("Choices", [])]
    found += [state["Default"]] if "Default" in state else []
    return found


MACHINES = sorted(STATE_MACHINES.items())


@pytest.mark.parametrize(("name", "path"), MACHINES)
def test_every_transition_leads_to_a_state_and_every_state_is_reachable(name: str, path: str) -> None:
    for scope in scopes(load(path)):
        states = scope["States"]
        seen, todo = set(), [scope["StartAt"]]
        while todo:
            current = todo.pop()
            assert current in states, f"{name}: a transition leads to {current!r}, which is not a state"
            if current not in seen:
                seen.add(current)
                todo.extend(targets(states[current]))
        assert seen == set(states), f"{name}: unreachable states {sorted(set(states) - seen)}"
        ends = [s for s, state in states.items() if state.get("End") or state["Type"] in ("Succeed", "Fail")]
        assert ends, f"{name}: no way out"


@pytest.mark.parametrize(("name", "path"), MACHINES)
def test_the_definitions_are_plain_jsonpath_with_registry_placeholders(name: str, path: str) -> None:
    text = (ROOT / path).read_text(encoding="utf-8")
    assert "JSONata" not in text and "{%" not in text and '"Assign"' not in text  # moto fails them at run time
    placeholders = set(re.findall(r"\$\{([A-Za-z0-9]+)\}", text))
    assert placeholders <= {function.placeholder for function in FUNCTIONS}
    assert "PlanFunctionArn" in placeholders and "NotifyFunctionArn" in placeholders


@pytest.mark.parametrize(("name", "path"), MACHINES)
def test_every_wait_for_a_token_has_a_heartbeat_a_timeout_and_catches_both(name: str, path: str) -> None:
    waits = [
        state
        for scope in scopes(load(path))
        for state in scope["States"].values()
        if state.get("Resource", "").endswith(".waitForTaskToken")
    ]
    # The install command, the reboot command, the scan after the reboot; in the fleet run, a ring
    # gate's health script too.
    assert len(waits) == (4 if name == "PatchRunStateMachine" else 3)
    for state in waits:
        assert {"HeartbeatSecondsPath", "TimeoutSecondsPath"} <= set(state)
        caught = [set(catcher["ErrorEquals"]) for catcher in state["Catch"]]
        assert TIMEOUTS in caught  # the fallback: read the command once, then go on
        assert state["Parameters"]["Payload"]["token.$"] == "$$.Task.Token"


@pytest.mark.parametrize(("name", "path"), MACHINES)
def test_no_fixed_poll_loop_and_every_error_of_an_iteration_fails_only_that_server(name: str, path: str) -> None:
    machine = load(path)
    servers = machine["States"]["Servers"]
    maps = [("Servers", "FailServer")] + ([("Checks", "FailCheck")] if "Checks" in machine["States"] else [])
    for map_name, catcher in maps:
        iteration = machine["States"][map_name]["ItemProcessor"]["States"]
        for state_name, state in iteration.items():
            if state["Type"] == "Wait":
                assert "Seconds" not in state and state["SecondsPath"] == "$.step.delay"  # each wait chosen by a step
            if state["Type"] == "Task" and state_name != catcher:
                assert state["Catch"][-1] == {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": catcher}
    after = "NextRing" if name == "PatchRunStateMachine" else "FinishRun"  # the retry machine has no rings
    assert servers["Next"] == after and machine["States"]["FinishRun"]["Next"] == "RunEnded"
    ended = machine["States"]["RunEnded"]  # a run its window paused sends no summary: its next execution will
    assert ended["Default"] == "Notify" and [c["Next"] for c in ended["Choices"]] == ["RunPaused"]
    assert machine["States"]["Notify"].get("End") is True


def test_the_retry_machine_runs_the_fleet_runs_own_iteration_for_its_one_server() -> None:
    fleet = load(STATE_MACHINES["PatchRunStateMachine"])["States"]["Servers"]
    retry = load(STATE_MACHINES["RetryKbStateMachine"])["States"]["Servers"]
    assert retry["ItemProcessor"] == fleet["ItemProcessor"]
    assert fleet["MaxConcurrencyPath"] == "$.max_concurrency" and retry["MaxConcurrency"] == 1


def test_the_fleet_run_loops_over_its_rings_through_next_ring_and_routes_on_its_actions() -> None:
    states = load(STATE_MACHINES["PatchRunStateMachine"])["States"]
    run_open = states["RunOpen"]
    routes = {choice.get("StringEquals"): choice["Next"] for choice in run_open["Choices"]}
    assert routes == {None: "AlreadyFinished", "patch": "Servers", "check": "Checks", "soak": "Soak"}
    assert set(routes) - {None} | {"finish"} == {str(action) for action in RingAction}
    assert run_open["Default"] == "FinishRun" and states["Plan"]["Next"] == "RunOpen"
    assert [states[name]["Next"] for name in ("Servers", "Checks", "Soak")] == ["NextRing"] * 3
    assert states["NextRing"]["Next"] == "RunOpen" and states["NextRing"]["ResultPath"] == "$"
    assert states["NextRing"]["Parameters"] == {"run_id.$": "$.run_id", "ring.$": "$.ring"}
    assert states["Soak"]["SecondsPath"] == "$.ring.delay"  # a Wait of seconds: moto's and a test clock's
    assert (states["Servers"]["ItemsPath"], states["Checks"]["ItemsPath"]) == ("$.servers", "$.ring.members")
    checks = states["Checks"]["ItemProcessor"]["States"]
    assert checks["FailCheck"]["Next"] == "MemberChecked"  # a check that failed is recorded: the gate is judged
    phases = {choice["StringEquals"] for choice in checks["CheckRoute"]["Choices"]}
    assert phases == {str(Phase.OFFLINE), str(Phase.SENT)} and checks["CheckRoute"]["Default"] == "MemberChecked"
    assert (
        checks["WaitHealthCheck"]["Parameters"]
        == states["Servers"]["ItemProcessor"]["States"]["WaitCommand"]["Parameters"]
    )


def test_the_retry_machine_has_no_rings() -> None:
    states = load(STATE_MACHINES["RetryKbStateMachine"])["States"]
    assert not {"NextRing", "Checks", "Soak"} & set(states)
    assert states["Servers"]["Next"] == "FinishRun"


@pytest.mark.parametrize(("name", "path"), MACHINES)
def test_a_server_snapshotted_first_goes_to_its_kbs_or_ends_skipped(name: str, path: str) -> None:
    iteration = load(path)["States"]["Servers"]["ItemProcessor"]["States"]
    [snapshot_first, start] = iteration["MayStart"]["Choices"]
    assert snapshot_first["Next"] == "Snapshot" and start["Next"] == "NextKb"
    assert {c["Variable"] for c in snapshot_first["And"]} == {"$.gate.start", "$.gate.snapshot"}
    assert iteration["Snapshot"]["Next"] == "Route" and iteration["Snapshot"]["ResultPath"] == "$.step"
    routes = {c.get("StringEquals"): c["Next"] for c in iteration["Route"]["Choices"] if "Variable" in c}
    assert routes["snapshot"] == "SnapshotWait" and routes["skipped"] == "ServerSkipped"
    assert iteration["SnapshotWait"]["Next"] == "Snapshot" and iteration["ServerSkipped"]["Type"] == "Succeed"
    assert {str(Phase.SNAPSHOT), str(Phase.SKIPPED)} <= set(routes)

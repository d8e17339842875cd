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
    assert len(waits) == 3  # the install command, the reboot command, the scan after the reboot
    for state in waits:
        assert {"HeartbeatSecondsPath", "TimeoutSecondsPath"} <= set(state)
        caught = [set(catcher["ErrorEquals"]) for catcher in state["Catch"]]
        assert TIMEOUTS in caught  # the fallback: read the command once, then go on
        assert state["Parameters"]["Payload"]["token.$"] == "$$.Task.Token"


@pytest.mark.parametrize(("name", "path"), MACHINES)
def test_no_fixed_poll_loop_and_every_error_of_an_iteration_fails_only_that_server(name: str, path: str) -> None:
    machine = load(path)
    [servers] = [state for state in machine["States"].values() if state["Type"] == "Map"]
    iteration = servers["ItemProcessor"]["States"]
    for state_name, state in iteration.items():
        if state["Type"] == "Wait":
            assert "Seconds" not in state and state["SecondsPath"] == "$.step.delay"  # each wait chosen by a step
        if state["Type"] == "Task" and state_name != "FailServer":
            assert state["Catch"][-1] == {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "FailServer"}
    assert servers["Next"] == "FinishRun" and machine["States"]["FinishRun"]["Next"] == "Notify"
    assert machine["States"]["Notify"].get("End") is True


def test_the_retry_machine_runs_the_fleet_runs_own_iteration_for_its_one_server() -> None:
    fleet = load(STATE_MACHINES["PatchRunStateMachine"])["States"]["Servers"]
    retry = load(STATE_MACHINES["RetryKbStateMachine"])["States"]["Servers"]
    assert retry["ItemProcessor"] == fleet["ItemProcessor"]
    assert fleet["MaxConcurrencyPath"] == "$.max_concurrency" and retry["MaxConcurrency"] == 1

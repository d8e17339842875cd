"""What a real fleet does that a naive engine misreads: each behaviour taught to the simulator, then handled.

SSM keeps saying Online for minutes after a restart was asked for; a send can fail after the command
was created; an agent away while Windows restarts refuses sends; a command waits for an absent agent and
times out undelivered; the execution timeout kills a slow install; a retried KB is already installed.
"""

from __future__ import annotations

from typing import Any

from autopatch.domain.fleet import CommandStatus
from autopatch.domain.patching import KbState, RunStatus
from autopatch.engine.planning import plan_retry, store_plan
from autopatch.engine.runner import Engine
from autopatch.errors import DeliveryUncertainError, TransientError
from autopatch.fleet.simulator import FleetSimulator
from autopatch.store.sqlite import SqliteStore

from .test_engine import behind, options, planned, worked_on


class Wrapped:
    """The simulator behind one changed call: the part of the world a test needs to be different."""

    def __init__(self, fleet: FleetSimulator) -> None:
        self.fleet = fleet

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fleet, name)


class LostReboot(Wrapped):
    """The restart request is accepted but never happens; the heartbeat keeps saying Online."""

    def reboot(self, instance_id: str) -> str | None:
        return None


def test_a_scan_that_does_not_show_a_newer_boot_time_never_verifies_a_reboot(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    target = behind(plan)[0]
    status = Engine(store, LostReboot(fleet)).execute(plan.run.run_id, options(reboot_timeout=0.05))  # type: ignore[arg-type]
    item = worked_on(store, plan.run.run_id, target)
    assert status is RunStatus.FAILED
    assert item.state is KbState.FAILED and "no scan from after the reboot" in item.reason
    assert fleet.server(target).pending_reboot  # the truth: it never restarted


def test_a_real_reboot_is_verified_by_a_newer_boot_time(lab: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    target = behind(plan)[0]
    before = store.latest_scans([target])[target].boot_time
    assert Engine(store, fleet).execute(plan.run.run_id, options()) is RunStatus.SUCCEEDED
    after = store.latest_scans([target])[target].boot_time
    assert before is not None and after is not None and after > before
    [server] = [s for s in store.run_servers(plan.run.run_id) if s.instance_id == target]
    assert server.boot_before == before.isoformat() and server.reboot_requested_at is not None


class LostResponse(Wrapped):
    """SendCommand created the command, but the answer was lost (a read timeout, a 5xx after the fact)."""

    def send_install(self, instance_id: str, kb: str, token: str | None = None) -> str:
        self.fleet.send_install(instance_id, kb, token)
        raise DeliveryUncertainError("SendCommand: read timeout after the request was sent")


def test_a_send_of_unknown_fate_is_looked_up_by_token_not_sent_again(lab: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    pending = [(i.instance_id, i.kb) for i in plan.items if i.state is KbState.PENDING]
    assert Engine(store, LostResponse(fleet)).execute(plan.run.run_id, options()) is RunStatus.SUCCEEDED  # type: ignore[arg-type]
    assert all(fleet.install_counts[key] == 1 for key in pending)
    [attempt] = store.attempts(plan.run.run_id, *pending[0])
    assert attempt.command_id is not None and attempt.status == "success"  # one attempt: found, never sent again


class RestartingOnce(Wrapped):
    """The first send finds the agent away (Windows restarting): SSM answers InvalidInstanceId."""

    refused = 0

    def send_install(self, instance_id: str, kb: str, token: str | None = None) -> str:
        if not self.refused:
            self.refused += 1
            raise TransientError(f"InvalidInstanceId: {instance_id} is restarting and its SSM agent is not connected")
        return self.fleet.send_install(instance_id, kb, token)


def test_an_agent_away_during_a_restart_is_transient(lab: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    flaky = RestartingOnce(fleet)
    assert Engine(store, flaky).execute(plan.run.run_id, options(concurrency=1)) is RunStatus.SUCCEEDED  # type: ignore[arg-type]
    phases = [a.phase for i in plan.items for a in store.attempts(plan.run.run_id, i.instance_id, i.kb)]
    assert phases.count("transient") == 1 and flaky.refused == 1


def test_a_command_that_waits_for_an_absent_agent_and_times_out_is_retried_then_failed(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    gone = behind(plan)[0]
    fleet.set_online(gone, False)
    Engine(store, fleet).execute(plan.run.run_id, options(transient_retries=1))
    item = worked_on(store, plan.run.run_id, gone)
    attempts = store.attempts(plan.run.run_id, gone, item.kb)
    assert [a.status for a in attempts] == [CommandStatus.DELIVERY_TIMED_OUT] * 2
    assert item.state is KbState.FAILED and "gave up after 2 transient failures" in item.reason
    assert fleet.server(gone).build == next(s.build_before for s in plan.servers if s.instance_id == gone)


class RebootRefused(Wrapped):
    def reboot(self, instance_id: str) -> str | None:
        raise TransientError("ThrottlingException: Rate exceeded")


def test_a_reboot_that_cannot_be_asked_for_leaves_the_kb_installed_with_the_reboot_pending(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    target = behind(plan)[0]
    assert Engine(store, RebootRefused(fleet)).execute(plan.run.run_id, options()) is RunStatus.SUCCEEDED  # type: ignore[arg-type]
    item = worked_on(store, plan.run.run_id, target)
    assert item.state is KbState.SUCCESS and item.reboot_required and "reboot pending" in item.reason


def test_a_retry_of_a_kb_that_finished_installing_succeeds_as_already_installed(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    target = behind(plan)[0]
    assert Engine(store, fleet).execute(plan.run.run_id, options()) is RunStatus.SUCCEEDED
    kb = worked_on(store, plan.run.run_id, target).kb
    instance = store.get_instance(target)
    assert instance is not None
    retry = plan_retry(store, instance, kb, "Windows Server 2022", None)
    store_plan(store, retry)
    assert Engine(store, fleet).execute(retry.run.run_id, options()) is RunStatus.SUCCEEDED
    [item] = store.run_items(retry.run.run_id)
    assert item.state is KbState.SUCCESS and "already installed" in item.reason

"""Patch runs on the simulator with injected faults: the exact final state of every (server, KB)."""

from __future__ import annotations

from autopatch.domain.patching import KbState, RebootPolicy, RunStatus
from autopatch.domain.polling import PollPolicy
from autopatch.domain.runs import RunItem
from autopatch.engine.options import RunOptions
from autopatch.engine.planning import RunPlan, plan_retry, plan_run, store_plan
from autopatch.engine.report import build_summary, instance_status, run_view
from autopatch.engine.runner import Engine
from autopatch.errors import TransientError
from autopatch.fleet.simulator import FleetSimulator
from autopatch.scanning import discover_instances
from autopatch.store.sqlite import SqliteStore

FAST = PollPolicy(first_delay=0.001, factor=1.5, max_delay=0.01, timeout=5.0)
INSTALL_FAILURE = -2147023293  # 0x80070643, a classic "fatal error during installation"


def options(**overrides: object) -> RunOptions:
    values: dict[str, object] = {"concurrency": 3, "poll": FAST, "reboot_timeout": 2.0, "install_timeout": 2.0}
    values.update(overrides)
    return RunOptions(**values)  # type: ignore[arg-type]


def planned(store: SqliteStore, fleet: FleetSimulator) -> RunPlan:
    targets = discover_instances(fleet, store)
    plan = plan_run(store, fleet, targets)
    store_plan(store, plan)
    return plan


def behind(plan: RunPlan) -> list[str]:
    return [s.instance_id for s in plan.servers if plan.pending(s.instance_id)]


def states(store: SqliteStore, run_id: str) -> dict[tuple[str, str], KbState]:
    return {(i.instance_id, i.kb): i.state for i in store.run_items(run_id)}


def test_a_clean_run_installs_every_pending_kb_once_and_verifies_after_reboot(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    assert len(behind(plan)) >= 2
    status = Engine(store, fleet).execute(plan.run.run_id, options())
    assert status is RunStatus.SUCCEEDED
    final = states(store, plan.run.run_id)
    for item in plan.items:
        expected = KbState.SUCCESS if item.state is KbState.PENDING else item.state
        assert final[(item.instance_id, item.kb)] is expected
    pending = [(i.instance_id, i.kb) for i in plan.items if i.state is KbState.PENDING]
    assert all(fleet.install_counts[key] == 1 for key in pending)
    servers = {s.instance_id: s for s in store.run_servers(plan.run.run_id)}
    for instance_id in behind(plan):
        assert servers[instance_id].reboots == 1 and servers[instance_id].status == "Done"
        assert fleet.server(instance_id).build == servers[instance_id].build_after
    transitions = [t for t in store.transitions(plan.run.run_id) if (t.instance_id, t.kb) == pending[0]]
    assert [(t.from_state, t.to_state) for t in transitions] == [
        (None, "Pending"),
        ("Pending", "InProgress"),
        ("InProgress", "Success"),
    ]
    [attempt] = store.attempts(plan.run.run_id, *pending[0])
    assert attempt.command_id and attempt.exit_code == 0 and attempt.hresult == 0


def test_an_install_failure_is_recorded_with_its_hresult_and_not_retried(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    victim = behind(plan)[0]
    [kb] = [i.kb for i in plan.pending(victim)]
    fleet.inject_failure(victim, kb, INSTALL_FAILURE, times=1)
    status = Engine(store, fleet).execute(plan.run.run_id, options())
    assert status is RunStatus.FAILED
    final = states(store, plan.run.run_id)
    assert final[(victim, kb)] is KbState.FAILED
    assert fleet.install_counts[(victim, kb)] == 1
    [item] = [i for i in store.run_items(plan.run.run_id, victim) if i.kb == kb]
    assert "0x80070643" in item.reason
    others = [s for s in behind(plan) if s != victim]
    assert all(final[(s, i.kb)] is KbState.SUCCESS for s in others for i in plan.pending(s))
    summary = build_summary(store, plan.run.run_id)
    [failed_server] = [s for s in summary.servers if s.failed]
    assert failed_server.instance_id == victim and "0x80070643" in failed_server.failed[0].reason
    # A single-KB retry installs it: the injected fault was for one install only.
    instance = store.get_instance(victim)
    assert instance is not None
    retry = plan_retry(store, instance, kb, "Windows Server 2022", None)
    store_plan(store, retry)
    assert Engine(store, fleet).execute(retry.run.run_id, options()) is RunStatus.SUCCEEDED
    assert fleet.install_counts[(victim, kb)] == 2
    assert instance_status(store, victim)["kbs"][-1]["state"] == "Success"


def worked_on(store: SqliteStore, run_id: str, instance_id: str) -> RunItem:
    [item] = [
        i
        for i in store.run_items(run_id, instance_id)
        if i.state not in (KbState.ALREADY_INSTALLED, KbState.SUPERSEDED, KbState.NOT_AVAILABLE)
    ]
    return item


def test_an_install_that_outlasts_the_engines_wait_is_failed_with_its_timeout(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    slow = behind(plan)[0]
    fleet.set_install_seconds(slow, 5_000.0)  # under the execution timeout, over the engine's wait
    Engine(store, fleet).execute(plan.run.run_id, options(install_timeout=0.01))  # 1,000 simulated seconds
    item = worked_on(store, plan.run.run_id, slow)
    assert item.state is KbState.FAILED and "no result within" in item.reason


def test_an_install_killed_by_the_execution_timeout_is_failed_saying_so(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    slow = behind(plan)[0]
    fleet.set_install_seconds(slow, 10_000.0)  # longer than the 7,200 s execution timeout
    assert Engine(store, fleet).execute(plan.run.run_id, options(install_timeout=1.0)) is RunStatus.FAILED
    item = worked_on(store, plan.run.run_id, slow)
    assert item.state is KbState.FAILED and "killed by the execution timeout" in item.reason


def test_a_server_that_never_comes_back_fails_its_kb_after_the_reboot_timeout(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    lost = behind(plan)[0]
    fleet.set_reboot_never_returns(lost)
    Engine(store, fleet).execute(plan.run.run_id, options(reboot_timeout=0.2))
    final = states(store, plan.run.run_id)
    assert all(final[(lost, i.kb)] is KbState.FAILED for i in plan.pending(lost))
    reasons = {i.reason for i in store.run_items(plan.run.run_id, lost) if i.state is KbState.FAILED}
    assert reasons == {"no scan from after the reboot within 0 s"}


def test_an_offline_server_is_retried_as_transient_then_failed(lab: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    gone = behind(plan)[0]
    fleet.set_online(gone, False)  # after the scan: every install comes back Undeliverable
    Engine(store, fleet).execute(plan.run.run_id, options(transient_retries=2))
    [kb] = [i.kb for i in plan.pending(gone)]
    attempts = store.attempts(plan.run.run_id, gone, kb)
    assert [a.phase for a in attempts] == ["transient", "transient", "transient"]
    assert states(store, plan.run.run_id)[(gone, kb)] is KbState.FAILED


def test_reboot_policy_never_marks_success_without_rebooting(lab: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    assert Engine(store, fleet).execute(plan.run.run_id, options(reboot=RebootPolicy.NEVER)) is RunStatus.SUCCEEDED
    servers = store.run_servers(plan.run.run_id)
    assert all(s.reboots == 0 for s in servers)
    assert all(fleet.server(s).pending_reboot for s in behind(plan))


def test_max_errors_stops_new_servers_and_leaves_them_pending(lab: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    for instance_id in behind(plan):
        for item in plan.pending(instance_id):
            fleet.inject_failure(instance_id, item.kb, INSTALL_FAILURE, times=None)
    status = Engine(store, fleet).execute(plan.run.run_id, options(concurrency=1, max_errors=1))
    assert status is RunStatus.FAILED
    assert "max-errors" in store.get_run(plan.run.run_id).reason
    final = states(store, plan.run.run_id)
    failed = [s for s in behind(plan) if any(final[(s, i.kb)] is KbState.FAILED for i in plan.pending(s))]
    untouched = [s for s in behind(plan) if all(final[(s, i.kb)] is KbState.PENDING for i in plan.pending(s))]
    assert len(failed) == 1 and len(untouched) == len(behind(plan)) - 1


def test_a_cancelled_run_cancels_kbs_that_had_not_started(lab: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    store.set_run_status(plan.run.run_id, RunStatus.CANCELLED, "operator")
    assert Engine(store, fleet).execute(plan.run.run_id, options()) is RunStatus.CANCELLED
    view = run_view(store, plan.run.run_id)
    assert view["status"] == "Cancelled"
    assert sum(fleet.install_counts.values()) == 0


class FlakyFleet:
    """The simulator behind an API that throttles the first few status reads."""

    def __init__(self, fleet: FleetSimulator, failures: int) -> None:
        self.fleet = fleet
        self.failures = failures

    def __getattr__(self, name: str) -> object:
        return getattr(self.fleet, name)

    def get_command(self, instance_id: str, command_id: str) -> object:
        if self.failures > 0:
            self.failures -= 1
            raise TransientError("ThrottlingException: Rate exceeded")
        return self.fleet.get_command(instance_id, command_id)


def test_throttled_status_reads_are_retried_not_counted_as_failures(lab: tuple[SqliteStore, FleetSimulator]) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    flaky = FlakyFleet(fleet, failures=5)
    assert Engine(store, flaky).execute(plan.run.run_id, options(concurrency=1)) is RunStatus.SUCCEEDED  # type: ignore[arg-type]
    assert flaky.failures == 0
    pending = [(i.instance_id, i.kb) for i in plan.items if i.state is KbState.PENDING]
    assert all(fleet.install_counts[key] == 1 for key in pending)


def test_reboot_policy_always_at_end_reboots_once_and_verifies_every_kb(
    lab: tuple[SqliteStore, FleetSimulator],
) -> None:
    store, fleet = lab
    plan = planned(store, fleet)
    status = Engine(store, fleet).execute(plan.run.run_id, options(reboot=RebootPolicy.ALWAYS_AT_END))
    assert status is RunStatus.SUCCEEDED
    servers = {s.instance_id: s for s in store.run_servers(plan.run.run_id)}
    final = states(store, plan.run.run_id)
    for instance_id in behind(plan):
        assert servers[instance_id].reboots == 1
        assert all(final[(instance_id, i.kb)] is KbState.SUCCESS for i in plan.pending(instance_id))
        assert not fleet.server(instance_id).pending_reboot

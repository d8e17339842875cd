"""The patch engine's steps: each reads the stored state, does one thing, and writes the next state.

Two drivers call them and nothing else decides: the local engine (``engine/runner.py``, threads
that wait by polling) and the Step Functions workflow (``aws/handlers.py``, Lambda tasks that wait
on task tokens). No step waits, sleeps or keeps memory between calls, so a driver may die between
any two of them and the next one (``resume``, a retried task) continues from the store.

Crash safety comes from the order of writes: an attempt is recorded ("sending", with a token)
before the install command is sent, the command id right after, so a successor either finds the
command by its token or knows it was never sent. A KB in Success is terminal, so nothing is
installed twice. A reboot is recorded as intended ("reboot-pending") before it is asked for and
as done with its count right after.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from enum import StrEnum

from autopatch.domain.fleet import CommandInvocation, CommandStatus, ScanReport
from autopatch.domain.identifiers import parse_build
from autopatch.domain.patching import InstallVerdict, KbState, RebootPolicy, RunStatus, classify_install
from autopatch.domain.runs import Attempt, RunItem, RunServer
from autopatch.engine.options import EventCallback, RunOptions, no_events
from autopatch.errors import AutoPatchError, DeliveryUncertainError, StateError, TransientError
from autopatch.fleet.base import FleetAdapter
from autopatch.fleet.reports import parse_install_output
from autopatch.store.base import RunStore, Store, now

# The command never ran (or was stopped before it could do anything): sending again is safe.
TRANSIENT_STATUSES = (
    CommandStatus.UNDELIVERABLE,
    CommandStatus.CANCELLED,
    CommandStatus.TERMINATED,
    CommandStatus.DELIVERY_TIMED_OUT,
)
# Attempt phases after which the install's verdict is stored.
VERDICT_PHASES = ("done", "reboot-pending", "rebooting", "awaiting-reboot")
REBOOT_PHASES = ("awaiting-reboot", "reboot-pending", "rebooting")


class Settled(StrEnum):
    """What a finished install leaves to do."""

    SUCCEEDED = "succeeded"  # Success (no reboot needed, or the policy says never)
    FAILED = "failed"
    REBOOT = "reboot"  # reboot now, then verify
    AT_END = "at-end"  # reboot once the server's last KB is installed (policy always-at-end)


def move(
    store: RunStore,
    item: RunItem,
    state: KbState,
    reason: str,
    reboot_required: bool | None = None,
    on_event: EventCallback = no_events,
) -> None:
    store.transition_item(item.run_id, item.instance_id, item.kb, state, reason, reboot_required)
    on_event(item.instance_id, item.kb, str(state), reason)


def run_cancelled(store: RunStore, run_id: str) -> bool:
    return store.get_run(run_id).status in (RunStatus.CANCELLING, RunStatus.CANCELLED)


def errors_reached(store: RunStore, run_id: str, max_errors: int | None) -> bool:
    """``--max-errors``: as many servers as allowed have failed, so no further server may start."""
    if max_errors is None:
        return False
    return sum(1 for server in store.run_servers(run_id) if server.status == "Failed") >= max_errors


def server_may_start(store: RunStore, run_id: str, instance_id: str, max_errors: int | None) -> bool:
    """The gate of each server, the same for both drivers: one already started goes on; a Pending one
    starts (and is marked Running) unless ``--max-errors`` servers have failed. A cancelled run's
    servers still pass: their KBs move to Cancelled one by one (``start_kb``)."""
    server = store.run_server(run_id, instance_id)
    if server.status == "Running":
        return True
    if server.status != "Pending" or errors_reached(store, run_id, max_errors):
        return False
    store.update_server(run_id, instance_id, status="Running", started_at=now())
    return True


def start_kb(store: RunStore, run_id: str, instance_id: str, kb: str, on_event: EventCallback = no_events) -> RunItem:
    """The KB as stored now, moved Pending → InProgress (or Cancelled, in a cancelled run).

    ``autopatch cancel`` in another process moves Pending KBs to Cancelled at any moment; the
    transition is checked inside the store's transaction, so losing that race is a StateError
    here and the KB is simply read again.
    """
    item = store.run_item(run_id, instance_id, kb)
    if item.state is not KbState.PENDING:
        return item
    new = KbState.CANCELLED if run_cancelled(store, run_id) else KbState.IN_PROGRESS
    try:
        move(store, item, new, "run cancelled" if new is KbState.CANCELLED else "", on_event=on_event)
    except StateError:  # lost to a concurrent cancel: read what it left
        return store.run_item(run_id, instance_id, kb)
    return replace(item, state=new)


def next_kb(
    store: RunStore, run_id: str, instance_id: str, reboot: RebootPolicy, on_event: EventCallback = no_events
) -> RunItem | None:
    """The server's next KB to work on, in install order (started now if it was Pending); None when none is left.

    Under ``always-at-end`` a KB installed and waiting for the final reboot is passed over: the
    server's end (``waiting_for_reboot``) takes them all at once.
    """
    for kb in [item.kb for item in store.run_items(run_id, instance_id)]:
        item = start_kb(store, run_id, instance_id, kb, on_event)
        if item.state is not KbState.IN_PROGRESS:
            continue
        last = latest_attempt(store, item)
        if reboot is RebootPolicy.ALWAYS_AT_END and last is not None and last.phase in REBOOT_PHASES:
            continue
        return item
    return None


def latest_attempt(store: RunStore, item: RunItem) -> Attempt | None:
    attempts = store.attempts(item.run_id, item.instance_id, item.kb)
    return attempts[-1] if attempts else None


def transient_failures(store: RunStore, item: RunItem) -> int:
    return sum(1 for a in store.attempts(item.run_id, item.instance_id, item.kb) if a.phase == "transient")


def resend_delay(
    store: RunStore, item: RunItem, options: RunOptions, on_event: EventCallback = no_events
) -> float | None:
    """Before sending (again): how long to wait first, or None when the KB has failed for good.

    An attempt that never ran (undeliverable, cancelled before it started) is sent again after a
    growing delay; a KB whose attempts never ran more than ``transient_retries`` times fails.
    """
    transient = transient_failures(store, item)
    if transient > options.transient_retries:
        last = latest_attempt(store, item)
        fail_kb(
            store, item, f"gave up after {transient} transient failures: {last.output_tail if last else ''}", on_event
        )
        return None
    return min(options.poll.max_delay, options.poll.first_delay * 2**transient) if transient else 0.0


def send_install(store: RunStore, fleet: FleetAdapter, item: RunItem, on_event: EventCallback = no_events) -> Attempt:
    """Record the attempt with a fresh token, then send; the attempt as it stands afterwards.

    Phase "sent" with the command id; "sending" when the fleet could not say whether it took the
    command (``look_for_send`` resolves it); "transient" when it surely did not.
    """
    token = uuid.uuid4().hex  # tags the command so a successor can find it (SSM Comment ≤ 100 chars)
    number = store.start_attempt(item.run_id, item.instance_id, item.kb, token)
    on_event(item.instance_id, item.kb, "sending", token)
    key = (item.run_id, item.instance_id, item.kb, number)
    try:
        command_id = fleet.send_install(item.instance_id, item.kb, token)
    except DeliveryUncertainError as exc:  # it may exist: left "sending", resolved by asking
        store.update_attempt(*key, output_tail=str(exc)[:500])
    except TransientError as exc:
        store.update_attempt(*key, phase="transient", output_tail=str(exc)[:500])
    else:
        store.update_attempt(*key, phase="sent", command_id=command_id, sent_at=now())
    return store.attempts(item.run_id, item.instance_id, item.kb)[-1]


def look_for_send(store: RunStore, fleet: FleetAdapter, item: RunItem, attempt: Attempt, last_look: bool) -> bool:
    """A send whose fate is unknown (a crash, a timeout): ask the fleet by token once.

    Found: the attempt is "sent" with its command id. Not found on the ``last_look``: it counts
    as never sent ("transient"). Sending again without asking could run the install twice (SSM's
    SendCommand has no idempotency token), so the driver looks a few times, a moment apart.
    """
    since = datetime.fromisoformat(attempt.sent_at) if attempt.sent_at else None
    command_id = fleet.find_command(item.instance_id, attempt.token, since) if attempt.token else None
    key = (item.run_id, item.instance_id, item.kb, attempt.attempt)
    if command_id is not None:
        store.update_attempt(*key, phase="sent", command_id=command_id, sent_at=now())
        return True
    if last_look or not attempt.token:
        store.update_attempt(*key, phase="transient", output_tail="never sent")
    return False


def record_command(
    store: RunStore, item: RunItem, attempt: Attempt, invocation: CommandInvocation | None, timeout: float
) -> None:
    """The install command's end (``None``: no result within ``timeout`` s): the verdict, or "transient"."""
    key = (item.run_id, item.instance_id, item.kb, attempt.attempt)
    if invocation is None:
        reason = f"no result within {timeout:.0f} s"
        store.update_attempt(*key, phase="done", status="failure", finished_at=now(), output_tail=reason)
        return
    if invocation.status in TRANSIENT_STATUSES:
        tail = (invocation.error or invocation.output)[-500:]
        store.update_attempt(*key, phase="transient", status=invocation.status, finished_at=now(), output_tail=tail)
        return
    try:
        report = parse_install_output(invocation.output)
    except AutoPatchError:
        report = None
    verdict = classify_install(report, invocation.exit_code, invocation.output)
    if invocation.status is CommandStatus.EXECUTION_TIMED_OUT:
        verdict = InstallVerdict("failure", False, f"killed by the execution timeout: {invocation.error}"[:300])
    elif invocation.status is CommandStatus.TIMED_OUT:
        verdict = InstallVerdict("failure", False, "command timed out on the server")
    # status holds the verdict; the first line of output_tail its reason, then the raw output.
    store.update_attempt(
        *key,
        phase="done",
        status=verdict.outcome,
        finished_at=now(),
        exit_code=invocation.exit_code,
        hresult=report.hresult if report else None,
        reboot_required=verdict.reboot_required,
        output_tail=f"{verdict.reason}\n{invocation.status}: {(invocation.output or invocation.error)[-800:]}",
    )


def stored_verdict(attempt: Attempt) -> InstallVerdict:
    return InstallVerdict(
        attempt.status or "failure", bool(attempt.reboot_required), attempt.output_tail.split("\n", 1)[0]
    )


def settle_install(
    store: RunStore, item: RunItem, attempt: Attempt, reboot: RebootPolicy, on_event: EventCallback = no_events
) -> Settled:
    """After the verdict: Success or Failed now, or what reboot it still waits for."""
    verdict = stored_verdict(attempt)
    if verdict.outcome != "success":
        move(store, item, KbState.FAILED, verdict.reason, on_event=on_event)
        return Settled.FAILED
    if not verdict.reboot_required or reboot is RebootPolicy.NEVER:
        note = f"{verdict.reason}; reboot pending (policy never)" if verdict.reboot_required else verdict.reason
        move(store, item, KbState.SUCCESS, note, reboot_required=verdict.reboot_required, on_event=on_event)
        return Settled.SUCCEEDED
    if reboot is RebootPolicy.ALWAYS_AT_END:
        if attempt.phase == "done":
            store.update_attempt(item.run_id, item.instance_id, item.kb, attempt.attempt, phase="awaiting-reboot")
        return Settled.AT_END
    return Settled.REBOOT


def fail_kb(store: RunStore, item: RunItem, reason: str, on_event: EventCallback = no_events) -> None:
    move(store, item, KbState.FAILED, reason[:500], on_event=on_event)


def installed_without_reboot(store: RunStore, item: RunItem, why: str, on_event: EventCallback = no_events) -> None:
    """Installed all the same: a reboot that could not be asked for fails nothing."""
    note = f"installed; reboot pending: the reboot could not be asked for ({why})"[:500]
    move(store, item, KbState.SUCCESS, note, reboot_required=True, on_event=on_event)


def waiting_for_reboot(store: RunStore, run_id: str, instance_id: str) -> list[tuple[RunItem, Attempt]]:
    """The server's KBs installed and waiting for a reboot (asked for or not), with their latest attempt."""
    latest = {attempt.kb: attempt for attempt in store.attempts(run_id, instance_id)}  # ordered by attempt
    return [
        (item, latest[item.kb])
        for item in store.run_items(run_id, instance_id)
        if item.state is KbState.IN_PROGRESS and item.kb in latest and latest[item.kb].phase in REBOOT_PHASES
    ]


def mark_reboot_intended(store: RunStore, waiting: list[tuple[RunItem, Attempt]]) -> None:
    for item, attempt in waiting:
        store.update_attempt(item.run_id, item.instance_id, item.kb, attempt.attempt, phase="reboot-pending")


def record_reboot(
    store: RunStore,
    run_id: str,
    instance_id: str,
    waiting: list[tuple[RunItem, Attempt]],
    requested_at: str | None = None,
    boot_before: datetime | None = None,
) -> None:
    """The reboot was asked for (or, without ``requested_at``, happened under a crashed predecessor): count it once."""
    store.record_reboot(
        run_id,
        instance_id,
        [(item.kb, attempt.attempt) for item, attempt in waiting],
        requested_at=requested_at,
        boot_before=boot_before.isoformat() if boot_before else None,
    )


def boot_baseline(server: RunServer) -> datetime | None:
    """What a scan's boot time must be newer than: the server's boot time before the reboot, if known."""
    return datetime.fromisoformat(server.boot_before) if server.boot_before else None


def is_after_reboot(store: RunStore, run_id: str, instance_id: str, scan: ScanReport) -> bool:
    """Does this scan come from after the run's reboot (a newer boot time than before it)?

    Being online proves nothing: SSM reports a server Online for minutes after a restart was
    asked for, and a scan in that window reads the old state, or is cut off by the shutdown.
    """
    baseline = boot_baseline(store.run_server(run_id, instance_id))
    return baseline is None or scan.boot_time is None or scan.boot_time > baseline


def verify_kbs(
    store: RunStore,
    items: list[RunItem],
    scan: ScanReport | None,
    reboot_timeout: float,
    on_event: EventCallback = no_events,
) -> bool:
    """After a reboot: each KB present by hotfix list or build in a scan from after it (None: none came)."""
    if scan is None:
        for item in items:
            fail_kb(store, item, f"no scan from after the reboot within {reboot_timeout:.0f} s", on_event)
        return False
    ok = True
    for item in items:
        present = item.kb in scan.installed_kbs or (
            item.fixed_build is not None and _same_branch_reached(scan.build, item.fixed_build)
        )
        if present:
            move(store, item, KbState.SUCCESS, "installed and verified after reboot", True, on_event)
        else:
            fail_kb(store, item, "not present after the reboot (hotfix list and build checked)", on_event)
            ok = False
    return ok


def fail_server(
    store: RunStore, run_id: str, instance_id: str, reason: str, on_event: EventCallback = no_events
) -> None:
    """An unexpected failure of one server: its KB in flight fails, the server fails, the others go on."""
    for item in store.run_items(run_id, instance_id):
        if item.state is KbState.IN_PROGRESS:
            fail_kb(store, item, reason, on_event)
    store.update_server(run_id, instance_id, status="Failed", reason=reason[:500], finished_at=now())


def finish_server(store: Store, run_id: str, instance_id: str) -> str:
    """The server's end status from its KBs (Failed, Cancelled or Done) and the build it reached."""
    items = store.run_items(run_id, instance_id)
    failed = any(item.state is KbState.FAILED for item in items)
    cancelled = any(item.state is KbState.CANCELLED for item in items) and run_cancelled(store, run_id)
    status = "Failed" if failed else "Cancelled" if cancelled else "Done"
    scans = store.latest_scans([instance_id])
    build = scans[instance_id].build if instance_id in scans else None
    store.update_server(run_id, instance_id, status=status, finished_at=now(), build_after=build)
    return status


def finish_run(store: RunStore, run_id: str, max_errors: int | None) -> RunStatus:
    """The run's end status from its servers; a server left Pending by ``--max-errors`` stops it as Failed."""
    if run_cancelled(store, run_id):
        store.set_run_status(run_id, RunStatus.CANCELLED, store.get_run(run_id).reason)
        return RunStatus.CANCELLED
    servers = store.run_servers(run_id)
    failed = sum(1 for s in servers if s.status == "Failed")
    skipped = [s for s in servers if s.status == "Skipped"]
    stopped = any(s.status == "Pending" for s in servers) and errors_reached(store, run_id, max_errors)
    if stopped:
        status, reason = RunStatus.FAILED, f"stopped after {failed} failed server(s) (--max-errors)"
    elif failed or skipped:
        parts = [f"{failed} server(s) with failed KBs"] if failed else []
        if skipped:
            parts.append(f"{len(skipped)} server(s) not patched ({_reasons(skipped)})")
        status, reason = RunStatus.FAILED, "; ".join(parts)
    else:
        status, reason = RunStatus.SUCCEEDED, ""
    store.set_run_status(run_id, status, reason)
    return status


def mark_running(store: RunStore, run_id: str) -> RunOptions:
    """A Pending run becomes Running; its options as the steps read them."""
    run = store.get_run(run_id)
    if run.status is RunStatus.PENDING:
        store.set_run_status(run_id, RunStatus.RUNNING)
    return RunOptions.from_dict(run.options)


def _reasons(servers: list[RunServer]) -> str:
    counted: dict[str, int] = {}
    for server in servers:
        reason = server.reason.split(":", 1)[-1].strip() if server.reason.startswith("not scanned") else server.reason
        counted[reason[:60]] = counted.get(reason[:60], 0) + 1
    return ", ".join(f"{count} {reason}" for reason, count in counted.items())


def _same_branch_reached(build: str, fixed_build: str) -> bool:
    current, fixed = parse_build(build), parse_build(fixed_build)
    return current[:3] == fixed[:3] and current >= fixed

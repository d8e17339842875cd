"""Executing (or resuming) a patch run: one KB at a time per server, many servers at once.

Crash safety comes from the order of writes: an attempt is recorded ("sending", with a token)
before the install command is sent, the command id right after; so a restarted engine either
finds the command by its token and re-polls it, or knows it was never sent. A KB in Success is
terminal (the state machine forbids InProgress again), so nothing is installed twice. A reboot
is recorded as intended ("reboot-pending") before it is asked for and as done with its count
right after, so a restart between the two looks at the server instead of assuming.

Only the run's lease holder drives it (``engine/ownership.py``); a store failure leaves every
state as it was (the run stays unfinished, for ``resume``), never turns an install into Failed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from autopatch.domain.fleet import CommandInvocation, CommandStatus, ScanReport
from autopatch.domain.identifiers import parse_build
from autopatch.domain.patching import InstallVerdict, KbState, RebootPolicy, RunStatus, classify_install
from autopatch.domain.polling import PollPolicy
from autopatch.domain.runs import Attempt, RunItem, RunServer
from autopatch.engine.ownership import RunLease
from autopatch.engine.run_exposure import record_exposure_after
from autopatch.errors import (
    AutoPatchError,
    ConflictError,
    DeliveryUncertainError,
    ExecutionError,
    StateError,
    StoreError,
    TransientError,
)
from autopatch.fleet.base import FleetAdapter
from autopatch.fleet.reports import parse_install_output, parse_scan_output
from autopatch.store.base import Store, now

log = logging.getLogger(__name__)

EventCallback = Callable[[str, str, str, str], None]  # (instance_id, kb, state, detail)
# The command never ran (or was stopped before it could do anything): sending again is safe.
_TRANSIENT_STATUSES = (
    CommandStatus.UNDELIVERABLE,
    CommandStatus.CANCELLED,
    CommandStatus.TERMINATED,
    CommandStatus.DELIVERY_TIMED_OUT,
)
# How often, and how far apart, a send whose fate is unknown is looked for before it counts as
# never sent: ListCommands shows a new command only after a moment.
_LOOKUPS = 3
_LOOKUP_DELAY = 2.0


@dataclass(frozen=True, slots=True)
class RunOptions:
    concurrency: int = 10
    max_errors: int | None = None
    reboot: RebootPolicy = RebootPolicy.IF_REQUIRED
    install_timeout: float = 7200.0  # a Server 2016 cumulative update can take over an hour
    reboot_timeout: float = 1800.0
    transient_retries: int = 3
    poll: PollPolicy = field(default_factory=lambda: PollPolicy(first_delay=1.0, max_delay=30.0))

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> RunOptions:
        return cls(
            concurrency=int(values.get("concurrency", 10)),  # type: ignore[call-overload]
            max_errors=None if values.get("max_errors") is None else int(values["max_errors"]),  # type: ignore[call-overload]
            reboot=RebootPolicy(str(values.get("reboot", RebootPolicy.IF_REQUIRED))),
        )

    def as_dict(self) -> dict[str, object]:
        return {"concurrency": self.concurrency, "max_errors": self.max_errors, "reboot": str(self.reboot)}


class Engine:
    """Runs stored plans against a fleet adapter; every decision is written before it is acted on."""

    def __init__(
        self,
        store: Store,
        fleet: FleetAdapter,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_event: EventCallback | None = None,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.sleep = sleep
        self.clock = clock
        self.on_event = on_event or (lambda *_: None)
        self._lock = threading.Lock()

    # --- run level -----------------------------------------------------------------------------

    def execute(self, run_id: str, options: RunOptions | None = None, lease: RunLease | None = None) -> RunStatus:
        """Run (or resume) ``run_id`` to a terminal status, as its one driver.

        Without a ``lease`` the engine claims the run itself (and refuses with ``ConflictError``
        when another live process drives it). It returns the run's status as it left it: not
        terminal when the lease was lost to another process, which then finishes the run.
        """
        run = self.store.get_run(run_id)
        if run.status.is_terminal:
            return run.status
        own = lease is None
        if lease is None:
            lease = RunLease.claim(self.store, run_id)
            if lease is None:
                held = self.store.get_run(run_id)
                raise ConflictError(f"run: {run_id} is being driven by {held.owner} (lease until {held.lease_expires})")
            lease.start()
        try:
            return self._execute(run_id, options or RunOptions.from_dict(run.options), lease)
        finally:
            if own:
                lease.release()

    def _execute(self, run_id: str, options: RunOptions, lease: RunLease) -> RunStatus:
        if self.store.get_run(run_id).status is RunStatus.PENDING:
            self.store.set_run_status(run_id, RunStatus.RUNNING)
        all_servers = self.store.run_servers(run_id)
        servers = [s for s in all_servers if s.status in ("Pending", "Running")]
        failed = sum(1 for s in all_servers if s.status == "Failed")
        state = _RunState(failed=failed, max_errors=options.max_errors, lease=lease)
        # Servers already started before a crash go first: they hold in-flight commands.
        servers.sort(key=lambda s: s.status != "Running")
        with ThreadPoolExecutor(max_workers=max(1, options.concurrency), thread_name_prefix="patch") as pool:
            futures = [pool.submit(self._server_worker, run_id, server, options, state) for server in servers]
            for future in futures:
                future.result()
        if state.store_error is not None:
            raise ExecutionError(
                f"the store failed ({state.store_error}); run {run_id} is left unfinished: `autopatch resume` it"
            )
        if lease.lost.is_set():
            return self.store.get_run(run_id).status
        self._measure_after(run_id, options)
        return self._finish(run_id, state)

    def _measure_after(self, run_id: str, options: RunOptions) -> None:
        """The final scan and the run's "after" exposure, stored before the run turns terminal (so readers see both)."""
        try:
            record_exposure_after(self.store, self.fleet, run_id, options.poll, self.sleep)
        except AutoPatchError as exc:  # a measurement: it never decides how the run ended
            log.warning("run %s: the exposure after the run was not measured: %s", run_id, exc)

    def _finish(self, run_id: str, state: _RunState) -> RunStatus:
        if self.store.get_run(run_id).status in (RunStatus.CANCELLING, RunStatus.CANCELLED):
            self.store.set_run_status(run_id, RunStatus.CANCELLED, self.store.get_run(run_id).reason)
            return RunStatus.CANCELLED
        servers = self.store.run_servers(run_id)
        failed = sum(1 for s in servers if s.status == "Failed")
        skipped = [s for s in servers if s.status == "Skipped"]
        if state.stopped:
            status, reason = RunStatus.FAILED, f"stopped after {state.failed} failed server(s) (--max-errors)"
        elif failed or skipped:
            parts = [f"{failed} server(s) with failed KBs"] if failed else []
            if skipped:
                parts.append(f"{len(skipped)} server(s) not patched ({_reasons(skipped)})")
            status, reason = RunStatus.FAILED, "; ".join(parts)
        else:
            status, reason = RunStatus.SUCCEEDED, ""
        self.store.set_run_status(run_id, status, reason)
        return status

    def cancelled(self, run_id: str) -> bool:
        return self.store.get_run(run_id).status in (RunStatus.CANCELLING, RunStatus.CANCELLED)

    def _server_worker(self, run_id: str, server: RunServer, options: RunOptions, state: _RunState) -> None:
        if server.status == "Pending" and not state.may_start():
            return  # --max-errors reached: this server's KBs stay Pending
        try:
            failed = self.patch_server(run_id, server, options, state)
        except StoreError as exc:  # nothing can be recorded: leave every state as it is, for resume
            state.store_error = exc
            self.on_event(server.instance_id, "", "store error", str(exc)[:100])
            return
        except AutoPatchError as exc:  # an unexpected failure of one server never stops the others
            reason = f"{type(exc).__name__}: {exc}"[:500]
            for item in self.store.run_items(run_id, server.instance_id):
                if item.state is KbState.IN_PROGRESS:
                    self._move(item, KbState.FAILED, reason)
            self.store.update_server(run_id, server.instance_id, status="Failed", reason=reason, finished_at=now())
            failed = True
        if failed:
            state.record_failure()

    # --- server level --------------------------------------------------------------------------

    def patch_server(self, run_id: str, server: RunServer, options: RunOptions, state: _RunState) -> bool:
        """Install the server's Pending KBs in order; return whether any failed."""
        instance_id = server.instance_id
        if server.status == "Pending":
            self.store.update_server(run_id, instance_id, status="Running", started_at=now())
        failed = cancelled = False
        for kb in [item.kb for item in self.store.run_items(run_id, instance_id)]:
            if state.lease.lost.is_set():
                return False  # another process drives the run now: it continues from the stored states
            item = self._start_item(run_id, instance_id, kb)  # read now: a cancel may have moved it
            if item.state is KbState.CANCELLED:
                cancelled = True
                continue
            if item.state is not KbState.IN_PROGRESS:
                continue
            ok = self._complete_item(run_id, item, options)
            failed = failed or not ok
        if options.reboot is RebootPolicy.ALWAYS_AT_END:
            failed = self._reboot_at_end(run_id, instance_id, options) or failed
        build = self._current_build(instance_id)
        status = "Failed" if failed else "Cancelled" if cancelled and self.cancelled(run_id) else "Done"
        self.store.update_server(run_id, instance_id, status=status, finished_at=now(), build_after=build)
        return failed

    def _start_item(self, run_id: str, instance_id: str, kb: str) -> RunItem:
        """The KB as stored now, moved Pending → InProgress (or Cancelled, in a cancelled run).

        ``autopatch cancel`` in another process moves Pending KBs to Cancelled at any moment; the
        transition is checked inside the store's transaction, so losing that race is a StateError
        here and the KB is simply read again.
        """
        item = self.store.run_item(run_id, instance_id, kb)
        if item.state is not KbState.PENDING:
            return item
        new = KbState.CANCELLED if self.cancelled(run_id) else KbState.IN_PROGRESS
        try:
            self._move(item, new, "run cancelled" if new is KbState.CANCELLED else "")
        except StateError:  # lost to a concurrent cancel: read what it left
            return self.store.run_item(run_id, instance_id, kb)
        return replace(item, state=new)

    def _complete_item(self, run_id: str, item: RunItem, options: RunOptions) -> bool:
        try:
            verdict, attempt = self._install(run_id, item, options)
        except StoreError:
            raise  # the store's failure, not the install's: the KB keeps its state
        except ExecutionError as exc:
            self._move(item, KbState.FAILED, str(exc)[:500])
            return False
        if verdict.outcome != "success":
            self._move(item, KbState.FAILED, verdict.reason)
            return False
        if not verdict.reboot_required or options.reboot is RebootPolicy.NEVER:
            note = f"{verdict.reason}; reboot pending (policy never)" if verdict.reboot_required else verdict.reason
            self._move(item, KbState.SUCCESS, note, reboot_required=verdict.reboot_required)
            return True
        if options.reboot is RebootPolicy.ALWAYS_AT_END:
            if attempt.phase == "done":
                self.store.update_attempt(run_id, item.instance_id, item.kb, attempt.attempt, phase="awaiting-reboot")
            return True
        try:
            self._reboot_once(run_id, item.instance_id, [(item, attempt)], options)
        except StoreError:
            raise
        except AutoPatchError as exc:  # installed all the same: a reboot that could not be asked for fails nothing
            note = f"installed; reboot pending: the reboot could not be asked for ({exc})"[:500]
            self._move(item, KbState.SUCCESS, note, reboot_required=True)
            return True
        return self._verify(run_id, [item], options)

    # --- one install, resumable ----------------------------------------------------------------

    def _install(self, run_id: str, item: RunItem, options: RunOptions) -> tuple[InstallVerdict, Attempt]:
        """Drive the KB's latest attempt forward from whatever phase it is in, until a verdict."""
        while True:
            attempts = self.store.attempts(run_id, item.instance_id, item.kb)
            last = attempts[-1] if attempts else None
            if last is None or last.phase == "transient":
                transient = sum(1 for a in attempts if a.phase == "transient")
                if transient > options.transient_retries:
                    raise ExecutionError(
                        f"gave up after {transient} transient failures: {last.output_tail if last else ''}"
                    )
                if transient:
                    self.sleep(min(options.poll.max_delay, options.poll.first_delay * 2**transient))
                self._send(run_id, item)
            elif last.phase == "sending":
                self._recover_send(run_id, item, last)
            elif last.phase == "sent":
                self._wait_install(run_id, item, last, options)
            else:  # done, reboot-pending, rebooting, awaiting-reboot: the verdict is stored
                return _stored_verdict(last), last

    def _send(self, run_id: str, item: RunItem) -> None:
        token = uuid.uuid4().hex  # tags the command so a restart can find it (SSM Comment ≤ 100 chars)
        number = self.store.start_attempt(run_id, item.instance_id, item.kb, token)
        self.on_event(item.instance_id, item.kb, "sending", token)
        try:
            command_id = self.fleet.send_install(item.instance_id, item.kb, token)
        except DeliveryUncertainError as exc:  # it may exist: left "sending", resolved by asking
            self.store.update_attempt(run_id, item.instance_id, item.kb, number, output_tail=str(exc)[:500])
            return
        except TransientError as exc:
            self.store.update_attempt(
                run_id, item.instance_id, item.kb, number, phase="transient", output_tail=str(exc)[:500]
            )
            return
        self.store.update_attempt(
            run_id, item.instance_id, item.kb, number, phase="sent", command_id=command_id, sent_at=now()
        )

    def _recover_send(self, run_id: str, item: RunItem, attempt: Attempt) -> None:
        """A send whose fate is unknown (a crash, a timeout): ask the fleet by token, a few times.

        Sending again without asking could run the install twice: SSM's SendCommand has no
        idempotency token. Only after the command stayed unfound for a while is it "never sent".
        """
        since = datetime.fromisoformat(attempt.sent_at) if attempt.sent_at else None
        command_id = None
        for lookup in range(_LOOKUPS if attempt.token else 0):
            if lookup:
                self.sleep(_LOOKUP_DELAY)
            command_id = self.fleet.find_command(item.instance_id, attempt.token, since)
            if command_id is not None:
                break
        if command_id is None:
            self.store.update_attempt(
                run_id, item.instance_id, item.kb, attempt.attempt, phase="transient", output_tail="never sent"
            )
        else:
            self.store.update_attempt(
                run_id, item.instance_id, item.kb, attempt.attempt, phase="sent", command_id=command_id, sent_at=now()
            )

    def _wait_install(self, run_id: str, item: RunItem, attempt: Attempt, options: RunOptions) -> None:
        assert attempt.command_id is not None
        invocation = self._wait(item.instance_id, attempt.command_id, options.poll, options.install_timeout)
        key = (run_id, item.instance_id, item.kb, attempt.attempt)
        if invocation is None:
            reason = f"no result within {options.install_timeout:.0f} s"
            self.store.update_attempt(*key, phase="done", status="failure", finished_at=now(), output_tail=reason)
            return
        if invocation.status in _TRANSIENT_STATUSES:
            self.store.update_attempt(
                *key,
                phase="transient",
                status=invocation.status,
                finished_at=now(),
                output_tail=(invocation.error or invocation.output)[-500:],
            )
            return
        report = None
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
        self.store.update_attempt(
            *key,
            phase="done",
            status=verdict.outcome,
            finished_at=now(),
            exit_code=invocation.exit_code,
            hresult=report.hresult if report else None,
            reboot_required=verdict.reboot_required,
            output_tail=f"{verdict.reason}\n{invocation.status}: {(invocation.output or invocation.error)[-800:]}",
        )

    def _wait(self, instance_id: str, command_id: str, policy: PollPolicy, timeout: float) -> CommandInvocation | None:
        """Poll with backoff (or sleep until the adapter's expected completion) until terminal."""
        deadline = self.clock() + timeout
        delays = policy.delays()
        while True:
            hint: float | None = None
            try:  # a throttled or briefly failing status read is not the command's failure
                invocation = self.fleet.get_command(instance_id, command_id)
                if invocation.status.is_terminal:
                    return invocation
                hint = self.fleet.expected_completion(instance_id, command_id)
            except TransientError as exc:
                self.on_event(instance_id, "", "poll retry", str(exc)[:100])
            remaining = deadline - self.clock()
            if remaining <= 0:
                return None
            delay = hint if hint is not None else next(delays, policy.max_delay)
            self.sleep(max(0.0, min(delay, remaining)))

    # --- reboots and verification ----------------------------------------------------------------

    def _reboot_once(
        self, run_id: str, instance_id: str, waiting: list[tuple[RunItem, Attempt]], options: RunOptions
    ) -> None:
        """Reboot for these KBs unless it was done: intent first, then the call, then its record.

        After a crash between the intent and the record, the server itself says whether the reboot
        happened: a reboot still pending means it did not (or not yet), so it is asked for again.
        """
        phases = {attempt.phase for _, attempt in waiting}
        if phases == {"rebooting"}:
            return  # asked for and counted before a crash: verification follows
        if "reboot-pending" in phases:  # a server still restarting from it answers once it is back
            scan = self._scan(instance_id, options) if self._await_online(instance_id, options) else None
            if scan is not None and not scan.pending_reboot:
                self._record_reboot(run_id, instance_id, waiting, sent=False)
                return
        for item, attempt in waiting:
            self.store.update_attempt(run_id, item.instance_id, item.kb, attempt.attempt, phase="reboot-pending")
        # The server's own clock says whether it restarted: its boot time before, compared with a
        # later scan's (our clock and the server's need not agree). Unknown: one scan learns it.
        scans = self.store.latest_scans([instance_id])
        boot_before = scans[instance_id].boot_time if instance_id in scans else None
        if boot_before is None and (scan := self._scan(instance_id, options)) is not None:
            boot_before = scan.boot_time
        requested = now()
        self.on_event(instance_id, "", "rebooting", "")
        self._ask_reboot(instance_id, options)
        self.store.record_reboot(
            run_id,
            instance_id,
            [(item.kb, attempt.attempt) for item, attempt in waiting],
            requested_at=requested,
            boot_before=boot_before.isoformat() if boot_before else None,
        )

    def _ask_reboot(self, instance_id: str, options: RunOptions) -> None:
        """Ask for the restart, retrying what is transient (throttling, the agent briefly away)."""
        for attempt in range(options.transient_retries + 1):
            try:
                self.fleet.reboot(instance_id)
                return
            except TransientError:
                if attempt == options.transient_retries:
                    raise
                self.sleep(min(options.poll.max_delay, options.poll.first_delay * 2 ** (attempt + 1)))

    def _record_reboot(self, run_id: str, instance_id: str, waiting: list[tuple[RunItem, Attempt]], sent: bool) -> None:
        """The reboot happened (``sent`` now, or by a crashed predecessor): count it once, with the phases."""
        self.store.record_reboot(run_id, instance_id, [(item.kb, attempt.attempt) for item, attempt in waiting])
        if not sent:
            self.on_event(instance_id, "", "rebooted", "before a restart of the engine")

    def _await_online(self, instance_id: str, options: RunOptions) -> bool:
        deadline = self.clock() + options.reboot_timeout
        delays = options.poll.delays()
        while self.clock() < deadline:
            try:
                if self.fleet.is_online(instance_id):
                    return True
                hint = self.fleet.expected_online(instance_id)
            except TransientError:
                hint = None
            delay = hint if hint else next(delays, options.poll.max_delay)
            self.sleep(max(0.0, min(delay, deadline - self.clock())))
        return self.fleet.is_online(instance_id)

    def _verify(self, run_id: str, items: list[RunItem], options: RunOptions) -> bool:
        """After a reboot: a scan from after it (newer boot time), and each KB present by hotfix list or build.

        Being online proves nothing: SSM reports a server Online for minutes after a restart was
        asked for, and a scan in that window reads the old state, or is cut off by the shutdown.
        """
        instance_id = items[0].instance_id
        scan = self._scan_after_reboot(run_id, instance_id, options)
        if scan is None:
            for item in items:
                self._move(item, KbState.FAILED, f"no scan from after the reboot within {options.reboot_timeout:.0f} s")
            return False
        ok = True
        for item in items:
            present = scan is not None and (
                item.kb in scan.installed_kbs
                or (item.fixed_build is not None and _same_branch_reached(scan.build, item.fixed_build))
            )
            if present:
                self._move(item, KbState.SUCCESS, "installed and verified after reboot", reboot_required=True)
            else:
                self._move(item, KbState.FAILED, "not present after the reboot (hotfix list and build checked)")
                ok = False
        return ok

    def _scan_after_reboot(self, run_id: str, instance_id: str, options: RunOptions) -> ScanReport | None:
        """Scan until a report shows a boot after the reboot was asked for (bounded by the reboot timeout)."""
        baseline = _boot_baseline(self.store.run_server(run_id, instance_id))
        deadline = self.clock() + options.reboot_timeout
        delays = options.poll.delays()
        while self.clock() < deadline:
            if self._await_online(instance_id, options):
                scan = self._scan(instance_id, options)
                if scan is not None and (baseline is None or scan.boot_time is None or scan.boot_time > baseline):
                    return scan
                if scan is not None:
                    self.on_event(instance_id, "", "not rebooted yet", f"boot time {scan.boot_time}")
            self.sleep(max(0.0, min(next(delays, options.poll.max_delay), deadline - self.clock())))
        return None

    def _reboot_at_end(self, run_id: str, instance_id: str, options: RunOptions) -> bool:
        latest = {attempt.kb: attempt for attempt in self.store.attempts(run_id, instance_id)}  # ordered by attempt
        waiting = [
            (item, latest[item.kb])
            for item in self.store.run_items(run_id, instance_id)
            if item.state is KbState.IN_PROGRESS
            and item.kb in latest
            and latest[item.kb].phase in ("awaiting-reboot", "reboot-pending", "rebooting")
        ]
        if not waiting:
            return False
        self._reboot_once(run_id, instance_id, waiting, options)
        return not self._verify(run_id, [item for item, _ in waiting], options)

    def _scan(self, instance_id: str, options: RunOptions) -> ScanReport | None:
        try:
            command_id = self.fleet.send_scan(instance_id)
        except AutoPatchError:
            return None
        invocation = self._wait(instance_id, command_id, options.poll, options.install_timeout)
        if invocation is None or invocation.status is not CommandStatus.SUCCESS:
            return None
        try:
            report = parse_scan_output(instance_id, invocation.output, datetime.now(UTC))
        except AutoPatchError:
            return None
        self.store.save_scans([report])
        return report

    def _current_build(self, instance_id: str) -> str | None:
        scans = self.store.latest_scans([instance_id])
        return scans[instance_id].build if instance_id in scans else None

    def _move(self, item: RunItem, state: KbState, reason: str, reboot_required: bool | None = None) -> None:
        self.store.transition_item(item.run_id, item.instance_id, item.kb, state, reason, reboot_required)
        self.on_event(item.instance_id, item.kb, str(state), reason)


@dataclass(slots=True)
class _RunState:
    """Shared by the worker threads of one run: how many servers failed, whether to stop."""

    failed: int
    max_errors: int | None
    lease: RunLease
    stopped: bool = False
    store_error: StoreError | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def may_start(self) -> bool:
        with self.lock:
            if self.max_errors is not None and self.failed >= self.max_errors:
                self.stopped = True
            return not self.stopped

    def record_failure(self) -> None:
        with self.lock:
            self.failed += 1


def _stored_verdict(attempt: Attempt) -> InstallVerdict:
    return InstallVerdict(
        attempt.status or "failure", bool(attempt.reboot_required), attempt.output_tail.split("\n", 1)[0]
    )


def _boot_baseline(server: RunServer) -> datetime | None:
    """What a scan's boot time must be newer than: the server's boot time before the reboot, if known."""
    return datetime.fromisoformat(server.boot_before) if server.boot_before else None


def _reasons(servers: list[RunServer]) -> str:
    counted: dict[str, int] = {}
    for server in servers:
        reason = server.reason.split(":", 1)[-1].strip() if server.reason.startswith("not scanned") else server.reason
        counted[reason[:60]] = counted.get(reason[:60], 0) + 1
    return ", ".join(f"{count} {reason}" for reason, count in counted.items())


def _same_branch_reached(build: str, fixed_build: str) -> bool:
    current, fixed = parse_build(build), parse_build(fixed_build)
    return current[:3] == fixed[:3] and current >= fixed

"""The local driver of a patch run: one KB at a time per server, many servers at once, on threads.

Every decision is one of the steps in ``engine/steps.py`` (the Step Functions workflow calls the
same ones); this module only adds what a local process does between them: threads per server,
polling a command until it ends, waiting for a server to come back, looking again for a send
whose fate is unknown. Crash safety is the steps' order of writes, so ``resume`` (or a retried
Lambda task) continues from the stored states.

Only the run's lease holder drives it (``engine/ownership.py``); a store failure leaves every
state as it was (the run stays unfinished, for ``resume``), never turns an install into Failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from autopatch.domain.fleet import CommandInvocation, CommandStatus, ScanReport
from autopatch.domain.patching import RebootPolicy, RunStatus
from autopatch.domain.polling import PollPolicy
from autopatch.domain.runs import Attempt, RunItem
from autopatch.engine.options import EventCallback, RunOptions
from autopatch.engine.ownership import RunLease
from autopatch.engine.ring_runner import LocalRings
from autopatch.engine.rings import plan_rings
from autopatch.engine.run_exposure import record_exposure_after
from autopatch.engine.snapshots import snapshot_before_patching
from autopatch.engine.steps import (
    Settled,
    fail_kb,
    fail_server,
    finish_run,
    finish_server,
    installed_without_reboot,
    is_after_reboot,
    latest_attempt,
    look_for_send,
    mark_reboot_intended,
    mark_running,
    next_kb,
    record_command,
    record_reboot,
    resend_delay,
    run_cancelled,
    send_install,
    server_may_start,
    settle_install,
    verify_kbs,
    waiting_for_reboot,
)
from autopatch.engine.windows import pause_if_window_closed, window_holds_server
from autopatch.errors import (
    AutoPatchError,
    ConflictError,
    ExecutionError,
    StoreError,
    TransientError,
)
from autopatch.fleet.base import FleetAdapter
from autopatch.fleet.reports import parse_scan_output
from autopatch.scan_history import store_scans
from autopatch.store.base import Store, now

log = logging.getLogger(__name__)

# How often, and how far apart, a send whose fate is unknown is looked for before it counts as
# never sent: ListCommands shows a new command only after a moment.
_LOOKUPS = 3
_LOOKUP_DELAY = 2.0


class Engine:
    """Runs stored plans against a fleet adapter; every decision is written before it is acted on."""

    def __init__(
        self,
        store: Store,
        fleet: FleetAdapter,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_event: EventCallback | None = None,
        wall_clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.sleep = sleep
        self.clock = clock
        self.wall_clock = wall_clock or (lambda: datetime.now(UTC))  # what a maintenance window is read against
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
        mark_running(self.store, run_id)
        if plan_rings(self.store, run_id, options):  # --rings: ring by ring, a health gate after each
            ended = LocalRings(self, run_id, options, lease).drive()
            if ended is not None:
                return ended  # a gate halted the run, or another process drives it now
        else:
            self.patch_servers(run_id, options, lease)
        if lease.lost.is_set():
            return self.store.get_run(run_id).status
        if pause_if_window_closed(self.store, run_id, self.wall_clock()):  # the rest waits for the next window
            return RunStatus.PAUSED
        self._measure_after(run_id, options)
        return finish_run(self.store, run_id, options.max_errors)

    def patch_servers(
        self, run_id: str, options: RunOptions, lease: RunLease, only: Collection[str] | None = None
    ) -> None:
        """Patch the run's unfinished servers (those in ``only``, when given: one ring) on a pool of threads."""
        servers = [
            s
            for s in self.store.run_servers(run_id)
            if s.status in ("Pending", "Running") and (only is None or s.instance_id in only)
        ]
        # Servers already started before a crash go first: they hold in-flight commands.
        servers.sort(key=lambda s: s.status != "Running")
        store_errors: list[StoreError] = []
        with ThreadPoolExecutor(max_workers=max(1, options.concurrency), thread_name_prefix="patch") as pool:
            futures = [
                pool.submit(self._server_worker, run_id, server.instance_id, options, lease, store_errors)
                for server in servers
            ]
            for future in futures:
                future.result()
        if store_errors:
            raise ExecutionError(
                f"the store failed ({store_errors[0]}); run {run_id} is left unfinished: `autopatch resume` it"
            )

    def _measure_after(self, run_id: str, options: RunOptions) -> None:
        """The final scan and the run's "after" exposure, stored before the run turns terminal (so readers see both)."""
        try:
            record_exposure_after(self.store, self.fleet, run_id, options.poll, self.sleep)
        except AutoPatchError as exc:  # a measurement: it never decides how the run ended
            log.warning("run %s: the exposure after the run was not measured: %s", run_id, exc)

    def cancelled(self, run_id: str) -> bool:
        return run_cancelled(self.store, run_id)

    def _server_worker(
        self, run_id: str, instance_id: str, options: RunOptions, lease: RunLease, store_errors: list[StoreError]
    ) -> None:
        try:
            if not server_may_start(self.store, run_id, instance_id, options.max_errors):
                return  # --max-errors reached: this server's KBs stay Pending
            self.patch_server(run_id, instance_id, options, lease)
        except StoreError as exc:  # nothing can be recorded: leave every state as it is, for resume
            store_errors.append(exc)
            self.on_event(instance_id, "", "store error", str(exc)[:100])
        except AutoPatchError as exc:  # an unexpected failure of one server never stops the others
            fail_server(self.store, run_id, instance_id, f"{type(exc).__name__}: {exc}", self.on_event)

    # --- server level --------------------------------------------------------------------------

    def patch_server(self, run_id: str, instance_id: str, options: RunOptions, lease: RunLease) -> None:
        """Install the server's KBs in order, then finish it (unless the lease was lost or its window closed)."""
        snapshot = (self.store, self.fleet, run_id, instance_id, options)
        if not snapshot_before_patching(*snapshot, self.sleep, lease.lost.is_set, self.on_event):
            return  # skipped (its snapshot failed: nothing installed), or another process drives the run now
        held = False
        while not lease.lost.is_set():
            if window_holds_server(self.store, run_id, instance_id, options.reboot, self.wall_clock()):
                held = True  # the window accepts no new KB: the rest waits for the next one
                break
            item = next_kb(self.store, run_id, instance_id, options.reboot, self.on_event)
            if item is None:
                break
            self._complete_item(run_id, item, options)
        if lease.lost.is_set():
            return  # another process drives the run now: it continues from the stored states
        if options.reboot is RebootPolicy.ALWAYS_AT_END:
            self._reboot_at_end(run_id, instance_id, options)
        if not held:
            finish_server(self.store, run_id, instance_id)

    def _complete_item(self, run_id: str, item: RunItem, options: RunOptions) -> None:
        try:
            attempt = self._install(item, options)
        except StoreError:
            raise  # the store's failure, not the install's: the KB keeps its state
        except ExecutionError as exc:
            fail_kb(self.store, item, str(exc), self.on_event)
            return
        if attempt is None:
            return  # the KB's sends never ran, too often: failed by ``resend_delay``
        if settle_install(self.store, item, attempt, options.reboot, self.on_event) is not Settled.REBOOT:
            return
        try:
            self._reboot_once(run_id, item.instance_id, [(item, attempt)], options)
        except StoreError:
            raise
        except AutoPatchError as exc:
            installed_without_reboot(self.store, item, str(exc), self.on_event)
            return
        self._verify(run_id, [item], options)

    # --- one install, resumable ----------------------------------------------------------------

    def _install(self, item: RunItem, options: RunOptions) -> Attempt | None:
        """Drive the KB's latest attempt forward from whatever phase it is in, until its verdict is stored.

        None when the KB failed without a verdict (its sends never ran, too often).
        """
        while True:
            last = latest_attempt(self.store, item)
            if last is None or last.phase == "transient":
                delay = resend_delay(self.store, item, options, self.on_event)
                if delay is None:
                    return None  # failed for good by the step
                self.sleep(delay)
                send_install(self.store, self.fleet, item, self.on_event)
            elif last.phase == "sending":
                looks = _LOOKUPS if last.token else 1  # ListCommands shows a new command only after a moment
                for look in range(looks):
                    if look:
                        self.sleep(_LOOKUP_DELAY)
                    if look_for_send(self.store, self.fleet, item, last, last_look=look == looks - 1):
                        break
            elif last.phase == "sent":
                assert last.command_id is not None
                invocation = self._wait(item.instance_id, last.command_id, options.poll, options.install_timeout)
                record_command(self.store, item, last, invocation, options.install_timeout)
            else:  # done, reboot-pending, rebooting, awaiting-reboot: the verdict is stored
                return last

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
                record_reboot(self.store, run_id, instance_id, waiting)
                self.on_event(instance_id, "", "rebooted", "before a restart of the engine")
                return
        mark_reboot_intended(self.store, waiting)
        # The server's own clock says whether it restarted: its boot time before, compared with a
        # later scan's (our clock and the server's need not agree). Unknown: one scan learns it.
        scans = self.store.latest_scans([instance_id])
        boot_before = scans[instance_id].boot_time if instance_id in scans else None
        if boot_before is None and (scan := self._scan(instance_id, options)) is not None:
            boot_before = scan.boot_time
        requested = now()
        self.on_event(instance_id, "", "rebooting", "")
        self._ask_reboot(instance_id, options)
        record_reboot(self.store, run_id, instance_id, waiting, requested_at=requested, boot_before=boot_before)

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
        """After a reboot: a scan from after it, and each KB present by hotfix list or build."""
        scan = self._scan_after_reboot(run_id, items[0].instance_id, options)
        return verify_kbs(self.store, items, scan, options.reboot_timeout, self.on_event)

    def _scan_after_reboot(self, run_id: str, instance_id: str, options: RunOptions) -> ScanReport | None:
        """Scan until a report shows a boot after the reboot was asked for (bounded by the reboot timeout)."""
        deadline = self.clock() + options.reboot_timeout
        delays = options.poll.delays()
        while self.clock() < deadline:
            if self._await_online(instance_id, options):
                scan = self._scan(instance_id, options)
                if scan is not None and is_after_reboot(self.store, run_id, instance_id, scan):
                    return scan
                if scan is not None:
                    self.on_event(instance_id, "", "not rebooted yet", f"boot time {scan.boot_time}")
            self.sleep(max(0.0, min(next(delays, options.poll.max_delay), deadline - self.clock())))
        return None

    def _reboot_at_end(self, run_id: str, instance_id: str, options: RunOptions) -> None:
        waiting = waiting_for_reboot(self.store, run_id, instance_id)
        if waiting:
            self._reboot_once(run_id, instance_id, waiting, options)
            self._verify(run_id, [item for item, _ in waiting], options)

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
        store_scans(self.store, [report])  # and the exposure history it adds
        return report

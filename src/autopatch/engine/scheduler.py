"""The scheduler: a run for each maintenance window's occurrence, and paused runs continued in the next one.

One pass (``schedule_pass``) looks at every window at one moment, and decides from the store only:

- a run of a window that nobody drives any more (its process was killed) is taken over, whatever
  the time: it continues, and pauses at once when its window has closed (a KB in flight first
  finishes);
- a window open for new KBs (started, cutoff not reached): its occurrence is claimed (one
  conditional write: of two schedulers on one store, one wins); its paused runs are reopened with
  this occurrence's times, each under its lease; and when the claim was ours and the window has
  no unfinished run, a new run starts for the servers of its group (those another run holds are
  left out, and said so).

What a pass decides is the same for both drivers. What happens to a run it hands out is the
``RunLauncher``'s business: ``LocalScheduler`` drives it on a thread of this process (``autopatch
scheduler`` and ``serve``); on AWS a launcher hands the lease to a Step Functions execution.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from autopatch.domain.patching import RunStatus
from autopatch.domain.polling import PollPolicy
from autopatch.domain.runs import RunRecord
from autopatch.domain.windows import MaintenanceWindow, Occurrence, window_of_run, window_run_options
from autopatch.engine.driving import begin_patch, drive_run, plan_if_unplanned
from autopatch.engine.options import RunOptions
from autopatch.engine.ownership import RunLease, new_owner_id, owner_is_dead
from autopatch.engine.policy import find_baseline
from autopatch.engine.windows import reopen_for_occurrence
from autopatch.errors import AutoPatchError, InputError, StoreError
from autopatch.fleet.base import FleetAdapter
from autopatch.notify.base import Notifier
from autopatch.operations import prepare_patch
from autopatch.store.base import Store

log = logging.getLogger(__name__)

RunLauncher = Callable[[RunLease, str], None]  # takes the (unstarted) lease: drives the run and releases it
SCHEDULER_INTERVAL_SECONDS = 30.0


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ScheduledAction:
    """One thing a pass did: a run ``started``, ``resumed`` or ``taken over``, or an occurrence ``skipped``."""

    window: str
    action: str
    run_id: str | None = None
    starts_at: str | None = None
    detail: str = ""

    def as_row(self) -> dict[str, object]:
        return {
            "window": self.window,
            "action": self.action,
            "run_id": self.run_id,
            "starts_at": self.starts_at,
            "detail": self.detail,
        }


def schedule_pass(
    store: Store, fleet: FleetAdapter, at: datetime, launch: RunLauncher, owner: str | None = None
) -> list[ScheduledAction]:
    """Start, continue and take over the windows' runs due at ``at``; what was done, window by window."""
    owner = owner or new_owner_id()
    by_window: dict[str, list[RunRecord]] = {}
    for run in store.unfinished_runs():
        name = window_of_run(run.options)
        if name is not None:
            by_window.setdefault(name, []).append(run)
    actions: list[ScheduledAction] = []
    for window in store.list_windows():
        runs = by_window.get(window.name, [])
        actions.extend(_take_over_orphans(store, window, runs, launch))
        occurrence = window.open_for_new_kbs(at)
        if occurrence is not None:
            actions.extend(_open_occurrence(store, fleet, window, occurrence, runs, owner, at, launch))
    return actions


def _take_over_orphans(
    store: Store, window: MaintenanceWindow, runs: list[RunRecord], launch: RunLauncher
) -> list[ScheduledAction]:
    """Runs of the window (not Paused) whose driver is gone: claimed and driven again."""
    actions = []
    for run in runs:
        if run.status is RunStatus.PAUSED:
            continue
        lease = RunLease.claim(store, run.run_id)
        if lease is None:
            continue  # a live process drives it
        launch(lease, "taken over")
        actions.append(ScheduledAction(window.name, "taken over", run.run_id, detail="its driver had stopped"))
    return actions


def _open_occurrence(
    store: Store,
    fleet: FleetAdapter,
    window: MaintenanceWindow,
    occurrence: Occurrence,
    runs: list[RunRecord],
    owner: str,
    at: datetime,
    launch: RunLauncher,
) -> list[ScheduledAction]:
    starts = occurrence.starts_at.isoformat()
    claimed = _claim(store, window.name, starts, owner, at)
    actions = []
    paused = [run for run in runs if run.status is RunStatus.PAUSED]
    for run in paused:
        lease = RunLease.claim(store, run.run_id)
        if lease is None:
            continue  # another scheduler is reopening it
        if not reopen_for_occurrence(store, store, run.run_id, window, occurrence):
            lease.release()
            continue
        launch(lease, "resumed")
        actions.append(ScheduledAction(window.name, "resumed", run.run_id, starts, "continues where its window closed"))
    if not claimed:
        return actions
    if paused or any(run.status is not RunStatus.PAUSED for run in runs):
        store.record_occurrence(window.name, starts, paused[0].run_id if paused else runs[0].run_id, "continued")
        return actions
    action = _start_run(store, fleet, window, occurrence, launch)
    store.record_occurrence(window.name, starts, action.run_id, action.detail if action.run_id is None else "")
    actions.append(action)
    return actions


def _claim(store: Store, window: str, starts: str, owner: str, at: datetime) -> bool:
    """Claim the occurrence; or take over the claim of a scheduler that died before it decided anything."""
    stamp = at.isoformat()
    if store.claim_occurrence(window, starts, owner, stamp):
        return True
    record = next((r for r in store.window_occurrences(window, 50) if r.starts_at == starts), None)
    if record is None or record.run_id is not None or record.note or not owner_is_dead(record.claimed_by):
        return False
    return store.claim_occurrence(window, starts, owner, stamp, stale_owner=record.claimed_by)


def _start_run(
    store: Store, fleet: FleetAdapter, window: MaintenanceWindow, occurrence: Occurrence, launch: RunLauncher
) -> ScheduledAction:
    """A new run for the window's group, created unplanned (the launcher scans and plans it)."""
    starts = occurrence.starts_at.isoformat()
    try:
        if window.baseline is not None:
            find_baseline(store, window.baseline)  # deleted since the window was made: say so, start nothing
        request = prepare_patch(
            fleet,
            store,
            all_servers=False,
            instance_ids=(),
            tag=window.group,
            kbs=(),
            severity=None,
            options=RunOptions(),
            targets_rule="a window patches the servers of its group",
        )
        free = [target for target in request.targets if store.run_holding(target.instance_id) is None]
        held = len(request.targets) - len(free)
        if not free:
            return ScheduledAction(
                window.name, "skipped", None, starts, f"every server of {window.group} is held by a run"
            )
        request = replace(request, targets=free, options=request.options | window_run_options(window, occurrence))
        run, lease = begin_patch(store, request)
    except InputError as exc:  # no server in the group, or one claimed by a run meanwhile
        return ScheduledAction(window.name, "skipped", None, starts, str(exc)[:300])
    launch(lease, "started")
    detail = f"{len(free)} server(s) of {window.group}" + (f"; {held} held by other runs left out" if held else "")
    return ScheduledAction(window.name, "started", run.run_id, starts, detail)


class LocalScheduler:
    """``autopatch scheduler`` and ``serve``: passes every ``interval`` seconds, runs driven on threads here.

    Each run it drives has a store of its own and holds its lease; ``shutdown`` stops them between
    KBs (an install in flight finishes) and gives the leases back, as the server's run worker does.
    """

    def __init__(
        self,
        open_store: Callable[[], Store],
        fleet_for: Callable[[Store], FleetAdapter],
        notifiers_for: Callable[[Store], list[Notifier]],
        *,
        clock: Callable[[], datetime] = utc_now,
        poll: PollPolicy | None = None,
        max_runs: int = 16,
        interval: float = SCHEDULER_INTERVAL_SECONDS,
    ) -> None:
        self._open_store = open_store
        self._fleet_for = fleet_for
        self._notifiers_for = notifiers_for
        self.clock = clock
        self._poll = poll
        self._interval = interval
        self._owner = new_owner_id()
        self._pool = ThreadPoolExecutor(max_workers=max_runs, thread_name_prefix="window-run")
        self._lock = threading.Lock()
        self._active: dict[str, RunLease] = {}
        self._futures: list[Future[None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_action: Callable[[ScheduledAction], None] = lambda action: None

    def run_pass(self) -> list[ScheduledAction]:
        """One pass now; the runs it hands out are driven on this scheduler's threads."""
        store = self._open_store()
        try:
            actions = schedule_pass(store, self._fleet_for(store), self.clock(), self._launch, self._owner)
        finally:
            store.close()
        for action in actions:
            log.info("window %s: %s %s %s", action.window, action.action, action.run_id or "", action.detail)
            self.on_action(action)
        return actions

    def wait(self) -> None:
        """Until every run handed out so far has stopped (finished, or paused by its window)."""
        while True:
            with self._lock:
                pending = [future for future in self._futures if not future.done()]
            if not pending:
                return
            for future in pending:
                future.result()

    def start(self) -> None:
        """Passes in a background thread (``serve``), the first one at once."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.loop, name="scheduler", daemon=True)
            self._thread.start()

    def loop(self) -> None:
        """Pass, then wait ``interval`` seconds, until ``shutdown``; a failing pass is logged and tried again."""
        while not self._stop.is_set():
            try:
                self.run_pass()
            except AutoPatchError as exc:
                log.warning("scheduler pass failed: %s", exc)
            self._stop.wait(self._interval)

    def shutdown(self) -> None:
        """No more passes; each run stops between KBs (installs in flight finish) and gives its lease back."""
        self._stop.set()
        with self._lock:
            for lease in self._active.values():
                lease.lost.set()  # the engine starts no further KB; the stored states say where it stopped
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _launch(self, lease: RunLease, why: str) -> None:
        with self._lock:
            self._futures = [future for future in self._futures if not future.done()]
            self._futures.append(self._pool.submit(self._drive, lease.run_id, lease.owner, why))

    def _drive(self, run_id: str, owner: str, why: str) -> None:
        """Plan the run if it is new, then drive it until it ends or its window pauses it."""
        store = self._open_store()
        # The pass's claim, renewed on this run's own store; gone if the run waited for a thread past
        # its lease and another driver took it meanwhile.
        claimed = None if self._stop.is_set() else RunLease.claim(store, run_id, owner=owner)
        if claimed is None:
            store.close()
            return
        lease = claimed.start()
        with self._lock:
            self._active[run_id] = lease
        try:
            fleet = self._fleet_for(store)
            plan_if_unplanned(store, fleet, store.get_run(run_id))
            status, results = drive_run(
                store, fleet, run_id, lease, self._notifiers_for(store), self._poll, wall_clock=self.clock
            )
            log.info("window run %s (%s) left %s", run_id, why, status)
            for result in results:
                if not result.ok:
                    log.warning("run %s: notifier %s failed: %s", run_id, result.notifier, result.error)
        except Exception:  # left unfinished: a later pass (or `autopatch resume`) takes it over
            log.exception("window run %s stopped unfinished", run_id)
        finally:
            with self._lock:
                self._active.pop(run_id, None)
            lease.release()
            if self._stop.is_set():  # marked lost to stop it: give the run back all the same
                with contextlib.suppress(StoreError):
                    store.release_run(run_id, owner)
            store.close()

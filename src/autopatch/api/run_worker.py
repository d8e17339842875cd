"""Patch runs driven inside ``autopatch serve``: a thread pool, each run holding its lease.

A request that starts a run only claims its servers (so a collision is a 409 at once) and answers;
scanning, planning and installing continue here, on the same shared steps as ``autopatch patch``
(``engine/driving.py``). Each run owns its own store connection for its whole life: its lease is
renewed through it, and the engine's threads share it as they do in the CLI. At start the worker
takes over every unfinished run nobody drives (lease run out, or a dead local owner), like
``autopatch resume``; at shutdown it stops between KBs and gives the leases back, so the next
``serve`` or ``resume`` continues from the stored states.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from autopatch.admin_settings import effective_settings
from autopatch.api.deps import FleetProvider
from autopatch.domain.patching import RunStatus
from autopatch.engine.driving import begin_patch, drive_run, plan_if_unplanned, plan_patch, prepare_retry
from autopatch.engine.ownership import RunLease
from autopatch.errors import StoreError
from autopatch.notify.factory import notifiers_from_settings
from autopatch.operations import PatchRequest
from autopatch.settings import Settings
from autopatch.store.base import Store
from autopatch.wiring import fleet_poll, open_store

log = logging.getLogger(__name__)


class RunDriver(Protocol):
    """Who drives the runs the API starts: this process (``RunWorker``) or Step Functions (``StepFunctionsRuns``)."""

    def start(self) -> None: ...

    def shutdown(self) -> None: ...

    def submit_patch(self, request: PatchRequest, actor: str) -> str:
        """Claim the servers for a new run (``ConflictError`` naming a live run); its id, once it is on its way."""

    def submit_retry(self, instance_id: str, kb: str, actor: str) -> str: ...


class RunWorker:
    """Drives patch runs inside the server process on a thread pool, each holding its run lease."""

    def __init__(self, settings: Settings, max_runs: int = 4, fleet: FleetProvider | None = None) -> None:
        self._settings = settings
        self._fleet = fleet if fleet is not None else FleetProvider(settings)
        self._own_fleet = fleet is None
        self._pool = ThreadPoolExecutor(max_workers=max_runs, thread_name_prefix="run")
        self._lock = threading.Lock()
        self._active: dict[str, tuple[RunLease, Store]] = {}
        self._closed = False

    def _open(self) -> Store:
        return open_store(self._settings)

    def start(self) -> None:
        """Take over every unfinished run whose lease expired (or whose local owner died), like ``resume``."""
        store = self._open()
        try:
            # A Paused run waits for its maintenance window: the scheduler continues it then.
            unfinished = [run.run_id for run in store.unfinished_runs() if run.status is not RunStatus.PAUSED]
        finally:
            store.close()
        for run_id in unfinished:
            run_store = self._open()
            lease = RunLease.claim(run_store, run_id)
            if lease is None:  # a live process (the CLI, another server) drives it
                run_store.close()
                continue
            log.info("resuming run %s", run_id)
            self._submit(lease.start(), run_store, None)

    def submit_patch(self, request: PatchRequest, actor: str) -> str:
        """Claim the request's servers for a new run (``ConflictError`` naming a live run) and drive it here."""
        store = self._open()
        try:
            self._refuse_when_closed()
            run, lease = begin_patch(store, request)
        except BaseException:
            store.close()
            raise
        log.info("run %s started by %s", run.run_id, actor)
        self._submit(lease.start(), store, request)
        return run.run_id

    def submit_retry(self, instance_id: str, kb: str, actor: str) -> str:
        """Check and store a one-KB retry run as ``autopatch retry`` does, and drive it here."""
        store = self._open()
        try:
            self._refuse_when_closed()
            plan, lease = prepare_retry(store, self._fleet.get(store), instance_id, kb)
        except BaseException:
            store.close()
            raise
        log.info("retry run %s started by %s", plan.run.run_id, actor)
        self._submit(lease.start(), store, None)
        return plan.run.run_id

    def shutdown(self) -> None:
        """Stop taking work, stop each run between KBs (installs in flight finish) and give the leases back."""
        with self._lock:
            self._closed = True
            for lease, _ in self._active.values():
                lease.lost.set()  # the engine starts no further KB; the stored states say where it stopped
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            never_started = list(self._active.values())
            self._active.clear()
        for lease, store in never_started:
            self._give_back(lease, store)
        if self._own_fleet:
            self._fleet.close()

    def _refuse_when_closed(self) -> None:
        if self._closed:
            raise StoreError("the server is shutting down: no new run is started")

    def _submit(self, lease: RunLease, store: Store, request: PatchRequest | None) -> None:
        with self._lock:
            self._active[lease.run_id] = (lease, store)
        self._pool.submit(self._drive, lease, store, request)

    def _drive(self, lease: RunLease, store: Store, request: PatchRequest | None) -> None:
        run_id = lease.run_id
        try:
            if self._closed:  # queued when shutdown began: left for the next start
                return
            fleet = self._fleet.get(store)
            run = store.get_run(run_id)
            if request is not None and not run.planned:
                plan_patch(store, fleet, run, request)
            else:
                plan_if_unplanned(store, fleet, run)
            notifiers = notifiers_from_settings(effective_settings(self._settings, store).notify)
            status, results = drive_run(store, fleet, run_id, lease, notifiers, fleet_poll(self._settings))
            log.info("run %s left %s", run_id, status)
            for result in results:
                if not result.ok:
                    log.warning("run %s: notifier %s failed: %s", run_id, result.notifier, result.error)
        except Exception:  # left unfinished: the next start (or `autopatch resume`) continues it
            log.exception("run %s stopped unfinished", run_id)
        finally:
            with self._lock:
                self._active.pop(run_id, None)
            self._give_back(lease, store)

    def _give_back(self, lease: RunLease, store: Store) -> None:
        """Release the lease (also when shutdown marked it lost to stop the engine) and close the run's store."""
        lease.release()
        if self._closed:
            with contextlib.suppress(StoreError):
                store.release_run(lease.run_id, lease.owner)
        store.close()

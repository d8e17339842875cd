"""The snapshot step: EBS snapshots of a server before its first KB, recorded so they are taken once.

With ``--snapshot`` (``RunOptions.snapshot``), a server is patched only once EC2 lists every
snapshot of its volumes as started (pending or completed: the point in time is fixed, the copy
goes on in the background). A snapshot that fails, or an ask that keeps failing, skips the server
(``Skipped``, "snapshot failed: …"): nothing is installed on a server that could not be rolled back.

The step (``advance_snapshot``) reads the run server's record, does one thing and stores the next
phase (``domain.snapshots.SnapshotPhase``), as the other engine steps do; the local driver calls
it in a loop (``snapshot_before_patching``), the Step Functions driver would call it from a task
and wait between calls. Crash safety is the order of writes, as with installs:

1. ``begin_snapshot`` stores the record (phase asking, with a token) BEFORE CreateSnapshots is
   called, once per run server; a second driver gets that record back, never a new one;
2. the call carries the token as a tag; its answer (the snapshot ids) is stored at once;
3. a record found in "asking" (a crash between 1 and 2, or an answer lost on the way) is resolved
   by listing the snapshots tagged with its token, for ``LOOKUP_WINDOW_SECONDS`` after the ask
   (EC2 lists new snapshots after a moment): found, they are the run's; still absent after that,
   nothing was created and it is asked again. So a resumed run never snapshots a server twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from autopatch.domain.patching import KbState
from autopatch.domain.snapshots import (
    TAG_TOKEN,
    RunSnapshot,
    SnapshotPhase,
    SnapshotState,
    SnapshotVolume,
    VolumeSnapshot,
    rollback_hints,
    snapshot_failure,
    snapshot_tags,
    volumes_as_data,
)
from autopatch.engine.options import EventCallback, RunOptions, no_events
from autopatch.engine.steps import run_cancelled
from autopatch.errors import AutoPatchError, DeliveryUncertainError, StoreError, TransientError
from autopatch.fleet.base import FleetAdapter
from autopatch.store.base import RunStore, now

# How long an unanswered ask is looked for by its token before it counts as never made.
LOOKUP_WINDOW_SECONDS = 10.0
LOOKUP_DELAY_SECONDS = 2.0
SKIP_PREFIX = "snapshot failed: "
_HELD = ("Pending", "Running")


@dataclass(frozen=True, slots=True)
class SnapshotProgress:
    """What one call of the step left: the record, and when the step wants to be called again.

    ``retry_after`` None means "at the driver's own polling pace" (waiting for EC2 to list the
    snapshots as started); a number is the step's own wait (a backoff, a lookup window).
    """

    record: RunSnapshot
    retry_after: float | None = None

    @property
    def done(self) -> bool:
        return self.record.phase.is_final

    @property
    def may_patch(self) -> bool:
        return self.record.phase is SnapshotPhase.STARTED


def advance_snapshot(
    store: RunStore,
    fleet: FleetAdapter,
    run_id: str,
    instance_id: str,
    options: RunOptions,
    on_event: EventCallback = no_events,
) -> SnapshotProgress:
    """One step of the server's snapshot: ask, look up an unanswered ask, or read the states; then store it."""
    record = store.run_snapshot(run_id, instance_id)
    if record is None:
        token = uuid.uuid4().hex
        record = store.begin_snapshot(run_id, instance_id, token, now())
        if record.token == token:  # ours: nobody can have asked with it yet
            return _ask(store, fleet, record, options, on_event, fresh=True)
    if record.phase is SnapshotPhase.FAILED:
        skip_server(store, record, on_event)  # again, in case the driver died between the two writes
        return SnapshotProgress(record)
    if record.phase is SnapshotPhase.STARTED:
        return SnapshotProgress(record)
    if _seconds_since(record.requested_at) > options.snapshot_timeout:
        what = "did not start" if record.phase is SnapshotPhase.REQUESTED else "could not be asked for"
        ids = f" ({', '.join(record.snapshot_ids)})" if record.snapshot_ids else ""
        return _fail(store, record, f"the snapshots{ids} {what} within {options.snapshot_timeout:.0f} s", on_event)
    if record.phase is SnapshotPhase.ASKING:
        return _look_up(store, fleet, record, on_event)
    if record.phase is SnapshotPhase.RETRY:
        if record.tries > options.transient_retries:
            return _fail(store, record, f"gave up after {record.tries} tries: {record.reason}", on_event)
        return _ask(store, fleet, record, options, on_event)
    return _check_started(store, fleet, record, on_event)


def snapshot_needed(store: RunStore, run_id: str, instance_id: str, options: RunOptions) -> bool:
    """Whether the step has work on this server: the run asked for snapshots, and the server has a KB to
    install (a server with nothing to do is not snapshotted) or a snapshot record already (a resumed run)."""
    if not options.snapshot:
        return False
    if store.run_snapshot(run_id, instance_id) is not None:
        return True
    return any(item.state is KbState.PENDING for item in store.run_items(run_id, instance_id))


def snapshot_before_patching(
    store: RunStore,
    fleet: FleetAdapter,
    run_id: str,
    instance_id: str,
    options: RunOptions,
    sleep: Callable[[float], None],
    stopped: Callable[[], bool],
    on_event: EventCallback = no_events,
) -> bool:
    """The local driver's hook at the start of a server: whether its KBs may be installed now.

    True without ``--snapshot``, or once the snapshots have started (or the run was cancelled
    meanwhile: its KBs are then cancelled, none installed). False when the server was skipped
    (a failed snapshot), or when ``stopped`` says this driver no longer drives the run.
    """
    if not snapshot_needed(store, run_id, instance_id, options):
        return True
    delays = options.poll.delays()
    while True:
        progress = advance_snapshot(store, fleet, run_id, instance_id, options, on_event)
        if progress.done:
            return progress.may_patch
        if stopped():
            return False
        if run_cancelled(store, run_id):
            return True
        sleep(progress.retry_after if progress.retry_after is not None else next(delays, options.poll.max_delay))


def skip_server(store: RunStore, record: RunSnapshot, on_event: EventCallback = no_events) -> None:
    """A failed snapshot skips its server, which has no KB started yet (idempotent: a finished one stays)."""
    if store.run_server(record.run_id, record.instance_id).status not in _HELD:
        return
    reason = f"{SKIP_PREFIX}{record.reason}"[:500]
    store.update_server(record.run_id, record.instance_id, status="Skipped", reason=reason, finished_at=now())
    on_event(record.instance_id, "", "skipped", reason[:100])


def _ask(
    store: RunStore,
    fleet: FleetAdapter,
    record: RunSnapshot,
    options: RunOptions,
    on_event: EventCallback,
    fresh: bool = False,
) -> SnapshotProgress:
    """Call CreateSnapshots, the intent stored first (``fresh``: just stored by ``begin_snapshot``)."""
    key = (record.run_id, record.instance_id)
    if not fresh:
        store.update_snapshot(*key, phase=SnapshotPhase.ASKING, asked_at=now())
    on_event(record.instance_id, "", "snapshot", "asking for EBS snapshots")
    tags = snapshot_tags(record.run_id, record.instance_id, record.token)
    try:
        taken = fleet.create_snapshots(record.instance_id, tags)
    except DeliveryUncertainError as exc:  # they may exist: looked up by token, never asked blindly again
        store.update_snapshot(*key, reason=str(exc)[:500])
        return SnapshotProgress(_reread(store, record), LOOKUP_DELAY_SECONDS)
    except TransientError as exc:  # throttled: surely nothing was created
        store.update_snapshot(*key, phase=SnapshotPhase.RETRY, tries=record.tries + 1, reason=str(exc)[:500])
        delay = min(options.poll.max_delay, options.poll.first_delay * 2 ** (record.tries + 1))
        return SnapshotProgress(_reread(store, record), delay)
    except StoreError:
        raise  # the simulator's state file, or our store: leave the record as it is, for resume
    except AutoPatchError as exc:  # not an EC2 instance, no permission, unknown instance…
        return _fail(store, record, str(exc), on_event)
    if not taken:
        return _fail(store, record, "the instance has no EBS volume to snapshot", on_event)
    return _requested(store, record, [_volume(snapshot) for snapshot in taken], on_event)


def _look_up(store: RunStore, fleet: FleetAdapter, record: RunSnapshot, on_event: EventCallback) -> SnapshotProgress:
    """An ask whose answer was never stored: find its snapshots by token, or count it as never made."""
    try:
        found = fleet.list_snapshots({TAG_TOKEN: record.token}).snapshots
    except TransientError:
        return SnapshotProgress(record, LOOKUP_DELAY_SECONDS)
    if found:
        on_event(record.instance_id, "", "snapshot", "found the snapshots of an earlier ask")
        return _requested(store, record, [_volume(snapshot) for snapshot in found], on_event)
    waited = _seconds_since(record.asked_at)
    if waited < LOOKUP_WINDOW_SECONDS:
        return SnapshotProgress(record, min(LOOKUP_DELAY_SECONDS, LOOKUP_WINDOW_SECONDS - waited))
    reason = record.reason or "the ask was never answered and no snapshot carries its token"
    key = (record.run_id, record.instance_id)
    store.update_snapshot(*key, phase=SnapshotPhase.RETRY, tries=record.tries + 1, reason=reason[:500])
    return SnapshotProgress(_reread(store, record), 0.0)


def _check_started(
    store: RunStore, fleet: FleetAdapter, record: RunSnapshot, on_event: EventCallback
) -> SnapshotProgress:
    try:
        states = fleet.snapshot_states(record.snapshot_ids)
    except TransientError:
        return SnapshotProgress(record)  # a throttled read is not the snapshot's failure
    # An id EC2 does not list yet is not started; listed in error, the set has failed.
    current = [(volume, states.get(volume.snapshot_id, SnapshotState.REQUESTED)) for volume in record.volumes]
    failure = snapshot_failure(current)
    if failure is not None:
        return _fail(store, record, failure, on_event)
    if all(state.started for _, state in current):
        store.update_snapshot(record.run_id, record.instance_id, phase=SnapshotPhase.STARTED, started_at=now())
        on_event(record.instance_id, "", "snapshot", f"started: {', '.join(record.snapshot_ids)}")
        return SnapshotProgress(_reread(store, record))
    return SnapshotProgress(record)


def _requested(
    store: RunStore, record: RunSnapshot, volumes: list[SnapshotVolume], on_event: EventCallback
) -> SnapshotProgress:
    store.update_snapshot(record.run_id, record.instance_id, phase=SnapshotPhase.REQUESTED, volumes=volumes)
    on_event(record.instance_id, "", "snapshot", f"requested: {', '.join(v.snapshot_id for v in volumes)}")
    return SnapshotProgress(_reread(store, record), 0.0)


def _fail(store: RunStore, record: RunSnapshot, reason: str, on_event: EventCallback) -> SnapshotProgress:
    store.update_snapshot(record.run_id, record.instance_id, phase=SnapshotPhase.FAILED, reason=reason[:500])
    failed = _reread(store, record)
    skip_server(store, failed, on_event)
    return SnapshotProgress(failed)


def _volume(snapshot: VolumeSnapshot) -> SnapshotVolume:
    return SnapshotVolume(snapshot.snapshot_id, snapshot.volume_id, snapshot.device, snapshot.root)


def _reread(store: RunStore, record: RunSnapshot) -> RunSnapshot:
    stored = store.run_snapshot(record.run_id, record.instance_id)
    assert stored is not None  # written before, never deleted
    return stored


def _seconds_since(stamp: str) -> float:
    return (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()


def snapshot_view(record: RunSnapshot | None) -> dict[str, object] | None:
    """A run server's snapshots as ``run show`` and ``GET /runs/{id}`` give them (None: none was asked for).

    ``rollback`` holds a command per volume while there is something to roll back to (the
    snapshots started and were not pruned since).
    """
    if record is None:
        return None
    usable = record.phase is SnapshotPhase.STARTED and record.pruned_at is None
    return {
        "phase": str(record.phase),
        "snapshot_ids": record.snapshot_ids,
        "volumes": volumes_as_data(record.volumes),
        "requested_at": record.requested_at,
        "started_at": record.started_at,
        "reason": record.reason if record.phase is not SnapshotPhase.STARTED else "",
        "pruned_at": record.pruned_at,
        "rollback": rollback_hints(record.instance_id, record.volumes) if usable else [],
    }

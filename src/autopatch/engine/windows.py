"""Maintenance windows inside a run: the steps both drivers call to honour a window.

A run started for a window carries its occurrence's cutoff in its options
(``domain.windows.window_run_options``). Three steps, each reading the stored state:

- ``window_holds_server`` — before a server's next KB: is that KB a new one (still Pending) while
  the window no longer accepts new KBs? Then the server stops there, its KBs left Pending. A KB
  in flight is never held: it finishes, reboot and verification included.
- ``pause_if_window_closed`` — once every server stopped: work left behind by the window makes
  the run ``Paused`` ("Paused: window closed") instead of ending it; the driver then gives the
  lease back. Nothing else changes, so the run continues exactly where it stopped.
- ``reopen_for_occurrence`` — at the next occurrence, the scheduler (holding the run's lease)
  moves the run back to Running with that occurrence's times; the driver drives it again, and
  every KB already Success stays so (nothing is installed twice).

No step reads a clock: the driver passes the moment (the local engine its injected wall clock,
a Lambda task the time it runs at).
"""

from __future__ import annotations

from datetime import datetime

from autopatch.domain.patching import KbState, RebootPolicy, RunStatus
from autopatch.domain.runs import RunItem
from autopatch.domain.windows import (
    PAUSED_REASON,
    MaintenanceWindow,
    Occurrence,
    new_kb_may_start,
    window_run_options,
)
from autopatch.engine.options import RunOptions
from autopatch.engine.steps import REBOOT_PHASES, errors_reached, latest_attempt
from autopatch.store.base import RunStore, WindowStore

_LEFT_WITH_WORK = ("Pending", "Running")


def window_holds_server(store: RunStore, run_id: str, instance_id: str, reboot: RebootPolicy, at: datetime) -> bool:
    """True when the server's next KB would start now although the run's window accepts no new KB.

    Mirrors ``steps.next_kb``'s choice: the first KB in install order that is Pending (a new
    start: held) or InProgress (in flight: never held; under ``always-at-end`` a KB only waiting
    for the final reboot is passed over, as ``next_kb`` does). A cancelled run is never held: its
    Pending KBs must still move to Cancelled.
    """
    run = store.get_run(run_id)
    if new_kb_may_start(run.options, at) or run.status in (RunStatus.CANCELLING, RunStatus.CANCELLED):
        return False
    for item in store.run_items(run_id, instance_id):
        if item.state is KbState.PENDING:
            return True
        if item.state is KbState.IN_PROGRESS and not _waits_for_final_reboot(store, item, reboot):
            return False
    return False


def _waits_for_final_reboot(store: RunStore, item: RunItem, reboot: RebootPolicy) -> bool:
    if reboot is not RebootPolicy.ALWAYS_AT_END:
        return False
    last = latest_attempt(store, item)
    return last is not None and last.phase in REBOOT_PHASES


def pause_if_window_closed(store: RunStore, run_id: str, at: datetime) -> bool:
    """After every server stopped: Paused when the window left KBs Pending on servers still to finish.

    A run whose ``--max-errors`` stopped it, or that was cancelled meanwhile, is not paused: it
    ends as ``steps.finish_run`` decides. A run driven while still Paused (not reopened by the
    scheduler) stays Paused: its window's cutoff has passed, so no KB started.
    """
    run = store.get_run(run_id)
    if run.status not in (RunStatus.RUNNING, RunStatus.PAUSED) or new_kb_may_start(run.options, at):
        return False
    if errors_reached(store, run_id, RunOptions.from_dict(run.options).max_errors):
        return False
    waiting = {s.instance_id for s in store.run_servers(run_id) if s.status in _LEFT_WITH_WORK}
    if not any(item.state is KbState.PENDING and item.instance_id in waiting for item in store.run_items(run_id)):
        return False
    if run.status is RunStatus.RUNNING:
        store.set_run_status(run_id, RunStatus.PAUSED, PAUSED_REASON)
    return True


def reopen_for_occurrence(
    store: RunStore, windows: WindowStore, run_id: str, window: MaintenanceWindow, occurrence: Occurrence
) -> bool:
    """The paused run continues in ``occurrence``: Running again, with its times; False if it is no longer Paused.

    Call it holding the run's lease (``RunLease.claim``), then drive the run.
    """
    options = dict(store.get_run(run_id).options) | window_run_options(window, occurrence)
    return windows.reopen_paused_run(run_id, options)

"""Snapshots before patching as a Step Functions task: ``snapshots.snapshot_before_patching``, one call per task.

With ``--snapshot``, the local driver calls ``advance_snapshot`` in a loop at the start of each
server, sleeping between calls, until the snapshots have started (the KBs may be installed) or
failed (the server is skipped, with the reason). Here Gate says whether the server needs one
(``snapshot_needed``), and Snapshot calls the step: what the step wants at once (a fresh ask's
states read right after it) is done in the same task, what needs waiting is a Wait state
(``snapshot``, with the delay), and the answer is ``done`` (its KBs may start: NextKb) or
``skipped`` (the iteration ends; ``skip_server`` recorded why). The step's own order of writes
makes a retried or restarted task safe: the intent is stored before CreateSnapshots, so a
server is never snapshotted twice.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from autopatch.aws.install_tasks import run_options
from autopatch.aws.lease import keep_driving
from autopatch.aws.run_models import Phase, ServerTask, Step
from autopatch.aws.wiring import Runtime
from autopatch.domain.snapshots import RunSnapshot
from autopatch.engine.snapshots import SnapshotProgress, advance_snapshot
from autopatch.engine.steps import run_cancelled

# Calls of the step one task makes while the step asks to be called again at once (retry_after 0).
_CALLS_PER_TASK = 5


def snapshot(runtime: Runtime, task: ServerTask) -> Step:
    """One turn of the server's snapshot: ``done`` (started, or the run was cancelled), ``skipped``, or look again.

    As the local driver: a run cancelled meanwhile lets the server go on (NextKb cancels its KBs,
    none is installed); a lost lease ends the execution's work (``RunTakenOverError``).
    """
    keep_driving(runtime, task.run_id)
    options = run_options(runtime, task.run_id)
    progress: SnapshotProgress | None = None
    for _ in range(_CALLS_PER_TASK):
        progress = advance_snapshot(runtime.store, runtime.fleet, task.run_id, task.instance_id, options)
        if progress.done:
            return Step(phase=Phase.DONE if progress.may_patch else Phase.SKIPPED)
        if run_cancelled(runtime.store, task.run_id):
            return Step(phase=Phase.DONE)
        if progress.retry_after != 0:
            break
    assert progress is not None
    delay = progress.retry_after if progress.retry_after is not None else look_again_after(runtime, progress.record)
    return Step(phase=Phase.SNAPSHOT, delay=max(1, math.ceil(delay)))


def look_again_after(runtime: Runtime, record: RunSnapshot) -> float:
    """Seconds before the next look at snapshots not started yet: as long again as they have taken so far.

    The local driver's growing delays without a count to carry between tasks: waiting as long as
    the snapshots have already taken doubles the time between looks, within the poll's bounds.
    """
    policy = runtime.timing.snapshot_poll
    waited = (datetime.now(UTC) - datetime.fromisoformat(record.requested_at)).total_seconds()
    return min(policy.max_delay, max(policy.first_delay, waited))

"""One driver per run on AWS too: the execution holds the run's lease while it drives it.

The API hands a run to its workflow (``run_starter.hand_over``: owner ``sfn:<run id>``, for longer
than any single wait of the workflow). The tasks that come back from a wait renew it, so
``autopatch resume`` takes the run over only from an execution silent for that long; and a task
that finds another owner stops this execution's work on the run (``RunTakenOverError``, caught by
the definitions into a quiet end), instead of driving it alongside the new owner. An execution
started without a hand-over takes the run when nobody holds it.
"""

from __future__ import annotations

from autopatch.aws.run_starter import WORKFLOW_LEASE_SECONDS, workflow_owner
from autopatch.aws.wiring import Runtime
from autopatch.errors import RunTakenOverError


def keep_driving(runtime: Runtime, run_id: str) -> None:
    """Renew this workflow's lease on the run (or take it if free); ``RunTakenOverError`` if another has it."""
    now = runtime.clock()
    if runtime.store.claim_run(run_id, workflow_owner(run_id), now + WORKFLOW_LEASE_SECONDS, now):
        return
    owner = runtime.store.get_run(run_id).owner
    raise RunTakenOverError(f"run: {run_id} is driven by {owner} now; this execution leaves it alone")


def let_go(runtime: Runtime, run_id: str) -> None:
    """The run is over: give the lease up (a finished run is never taken over anyway; this keeps it tidy)."""
    runtime.store.release_run(run_id, workflow_owner(run_id))

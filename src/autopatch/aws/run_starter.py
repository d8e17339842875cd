"""Runs started through the API and driven by Step Functions: the AWS deployment's ``RunDriver``.

The request is checked and the run created exactly as ``autopatch serve`` does (``begin_patch``,
``prepare_retry``: a server held by a live run is a 409 at once); then the run's lease is handed
to the workflow (owner ``sfn:<run id>``, for longer than any single wait of the workflow) and one
execution is started, named after the run, so a repeated start of the same run is refused by
Step Functions itself. The workflow's tasks renew that lease as they go (``aws/lease.keep_driving``),
so ``autopatch resume`` takes a run over only once its execution has been silent that long.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from autopatch.domain.patching import RunStatus
from autopatch.engine.driving import begin_patch, prepare_retry
from autopatch.engine.ownership import RunLease
from autopatch.errors import ExecutionError, StoreError
from autopatch.fleet.base import FleetAdapter
from autopatch.operations import PatchRequest
from autopatch.store.base import RunLeaseStore, Store

WORKFLOW_LEASE_SECONDS = 3 * 3600.0  # longer than the longest wait of a workflow task (install timeout 2 h)


def workflow_owner(run_id: str) -> str:
    return f"sfn:{run_id}"


def hand_over(store: RunLeaseStore, lease: RunLease, clock: Callable[[], float] = time.time) -> str:
    """Give the run this process created to its workflow; the new owner, or ``ExecutionError`` if it was lost."""
    owner = workflow_owner(lease.run_id)
    now = clock()
    if not store.claim_run(lease.run_id, owner, now + WORKFLOW_LEASE_SECONDS, now, dead_owner=lease.owner):
        raise ExecutionError(f"run {lease.run_id} was taken over before its workflow started")
    return owner


class StepFunctionsRuns:
    """Starts one workflow execution per run; the workflow drives it, this process keeps nothing."""

    def __init__(
        self,
        open_store: Callable[[], Store],
        fleet: Callable[[Store], FleetAdapter],
        patch_machine_arn: str,
        retry_machine_arn: str | None,
        client: Any,
    ) -> None:
        self._open_store = open_store
        self._fleet = fleet
        self._patch_arn = patch_machine_arn
        self._retry_arn = retry_machine_arn or patch_machine_arn
        self._client = client

    def start(self) -> None:
        """Nothing to resume here: an unfinished execution goes on by itself."""

    def shutdown(self) -> None:
        """Nothing runs in this process."""

    def submit_patch(self, request: PatchRequest, actor: str) -> str:
        store = self._open_store()
        try:
            run, lease = begin_patch(store, request)
            self._start(store, lease, self._patch_arn, actor)
            return run.run_id
        finally:
            store.close()

    def submit_retry(self, instance_id: str, kb: str, actor: str) -> str:
        store = self._open_store()
        try:
            plan, lease = prepare_retry(store, self._fleet(store), instance_id, kb)
            self._start(store, lease, self._retry_arn, actor)
            return plan.run.run_id
        finally:
            store.close()

    def _start(self, store: Store, lease: RunLease, machine_arn: str, actor: str) -> None:
        start_workflow(store, self._client, machine_arn, lease, actor)


def start_workflow(
    store: Store, client: Any, machine_arn: str, lease: RunLease, actor: str, execution_name: str | None = None
) -> str:
    """Hand the run to its workflow and start one execution (named after the run unless told otherwise).

    A run continued in a later maintenance window gets an execution of its own, with another name:
    Step Functions keeps the names of ended executions for 90 days. A workflow that cannot start
    fails the run and frees its servers, rather than leaving it waiting for nobody.
    """
    owner = hand_over(store, lease)
    payload = {"run_id": lease.run_id, "owner": owner, "started_by": actor}
    name = execution_name or lease.run_id
    try:
        client.start_execution(stateMachineArn=machine_arn, name=name, input=json.dumps(payload))
    except Exception as exc:  # botocore's errors: the run must not wait for a workflow that never started
        reason = f"the workflow could not be started: {type(exc).__name__}: {exc}"[:500]
        try:
            store.set_run_status(lease.run_id, RunStatus.FAILED, reason)
            store.release_run(lease.run_id, owner)
        except StoreError:
            pass
        raise ExecutionError(reason) from exc
    return name

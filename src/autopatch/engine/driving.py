"""The steps of driving a run, shared by ``autopatch patch|retry|resume`` and the server's run worker.

Each entry point only decides how to show progress (a terminal's bars, or nothing while the API's
events stream reads the store); which servers are claimed, how a retry is checked and planned,
and what happens once a run is over are held here once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from autopatch.assessment import load_product_catalog, server_facts
from autopatch.domain.exposure import KbStatus, classify_kb
from autopatch.domain.patching import RunStatus
from autopatch.domain.polling import PollPolicy
from autopatch.domain.runs import RunRecord
from autopatch.engine.options import EventCallback, RunOptions
from autopatch.engine.ownership import RunLease, new_owner_id
from autopatch.engine.planning import (
    RunPlan,
    check_kbs_known,
    plan_retry,
    plan_run,
    plan_started_run,
    start_run,
    store_plan,
)
from autopatch.engine.report import send_summary
from autopatch.engine.runner import Engine
from autopatch.errors import ConflictError
from autopatch.fleet.base import FleetAdapter
from autopatch.notify.base import DeliveryResult, Notifier
from autopatch.scanning import ProgressCallback, identify, scan_instances, select_targets
from autopatch.store.base import Store

if TYPE_CHECKING:
    from autopatch.operations import PatchRequest


def begin_patch(store: Store, request: PatchRequest) -> tuple[RunRecord, RunLease]:
    """Store the fleet as listed and claim the targets for a new run (``ConflictError`` naming a live run)."""
    store.save_instances(request.instances, datetime.now(UTC))
    return start_run(store, "patch", request.targets, request.options)


def plan_patch(
    store: Store,
    fleet: FleetAdapter,
    run: RunRecord,
    request: PatchRequest,
    on_progress: ProgressCallback | None = None,
) -> RunPlan:
    """Scan and plan a run started by ``begin_patch``, and store the plan."""
    plan = plan_run(
        store, fleet, request.targets, request.kbs, request.minimum_severity, request.options, on_progress, run=run
    )
    store_plan(store, plan)
    return plan


def plan_if_unplanned(
    store: Store, fleet: FleetAdapter, run: RunRecord, on_progress: ProgressCallback | None = None
) -> RunPlan | None:
    """Resuming: a run whose driver died between claiming its servers and storing its plan is planned now."""
    return None if run.planned else plan_started_run(store, fleet, run.run_id, on_progress)


def prepare_retry(store: Store, fleet: FleetAdapter, instance_id: str, kb: str) -> tuple[RunPlan, RunLease]:
    """Check, plan and store a one-KB retry run; its lease is returned unstarted.

    The server is scanned first: a KB it already has is refused (``ConflictError``), since a
    retry of it would only report "not applicable".
    """
    [kb_id] = check_kbs_known(store, [kb])
    instances = fleet.list_instances()
    [instance] = select_targets(instances, [instance_id])
    outcome = scan_instances(fleet, store, [instance], save=False)
    scan = outcome.reports.get(instance_id)
    identity = identify(instance, scan)
    if scan is not None and identity.product is not None:
        catalog = load_product_catalog(store, identity.product)
        facts = server_facts(scan.build, scan.installed_kbs, scan.offered_kbs)
        if classify_kb(catalog, int(kb_id[2:]), facts) is KbStatus.ALREADY_INSTALLED:
            raise ConflictError(
                f"kb: {kb_id} is already installed on {instance_id} (build {scan.build}): nothing to retry"
            )
    owner = new_owner_id()
    plan = plan_retry(store, instance, kb_id, identity.product, scan.build if scan else None, owner=owner)
    plan.scans = outcome.reports
    store.save_instances(instances, datetime.now(UTC))
    run_id = store_plan(store, plan)
    return plan, RunLease(store, run_id, owner)


def drive_run(
    store: Store,
    fleet: FleetAdapter,
    run_id: str,
    lease: RunLease,
    notifiers: list[Notifier],
    poll: PollPolicy | None = None,
    on_event: EventCallback | None = None,
    wall_clock: Callable[[], datetime] | None = None,
) -> tuple[RunStatus, list[DeliveryResult]]:
    """Drive the run as its lease holder, then notify once it is over (the summary is stored states).

    A status that is not terminal means the lease was lost to another process, which finishes
    the run and notifies, or that the run's maintenance window closed (Paused: its next window
    continues it): nothing is sent from here then. ``wall_clock`` is what the window is read against.
    """
    options = RunOptions.from_dict(store.get_run(run_id).options)
    if poll is not None:
        options = replace(options, poll=poll)
    status = Engine(store, fleet, on_event=on_event, wall_clock=wall_clock).execute(run_id, options, lease)
    if not status.is_terminal:
        return status, []
    return status, send_summary(store, run_id, notifiers)

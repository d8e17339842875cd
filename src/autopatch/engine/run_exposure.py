"""A run's exposure before and after: the open CVE counts of its servers, stored as facts of the run.

"Before" is taken from the scans the plan was made from; "after" from a scan of every server once
all of them are done and before the run turns terminal (so whoever sees the end sees both): a KB
that needed no reboot was never rescanned by the engine. Both drivers
(the local engine and the Step Functions workflow) call these two steps, and the dashboard's
before/after chart and ``run show`` read what they stored, so a reload or another browser sees it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from autopatch.assessment import fleet_exposure, fleet_totals
from autopatch.domain.polling import PollPolicy
from autopatch.fleet.base import FleetAdapter
from autopatch.scanning import scan_instances
from autopatch.store.base import Store

BEFORE, AFTER = "before", "after"


def exposure_of_run(store: Store, run_id: str) -> dict[str, Any]:
    """The totals over the run's servers from their latest scans (servers not assessed counted apart)."""
    servers = [server.instance_id for server in store.run_servers(run_id)]
    return fleet_totals(fleet_exposure(store, servers)) if servers else fleet_totals([])


def record_exposure_before(store: Store, run_id: str) -> None:
    """After the plan and its scans are stored: what the run set out to close."""
    store.save_run_exposure(run_id, BEFORE, exposure_of_run(store, run_id))


def record_exposure_after(
    store: Store,
    fleet: FleetAdapter,
    run_id: str,
    policy: PollPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Once every server is done: scan them again (offline ones keep their last scan) and store the totals."""
    servers = {server.instance_id for server in store.run_servers(run_id)}
    instances = [instance for instance in fleet.list_instances() if instance.instance_id in servers]
    scan_instances(fleet, store, instances, policy=policy, sleep=sleep)
    store.save_run_exposure(run_id, AFTER, exposure_of_run(store, run_id))

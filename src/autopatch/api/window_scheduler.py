"""The maintenance-window scheduler inside ``autopatch serve``: the passes of ``autopatch scheduler`` on a thread.

It shares the app's fleet adapter; each run it starts or continues has a store of its own, as the
run worker's do. Two servers on one database both run it: a window's occurrence is claimed by one
conditional write, so it starts once. With a Step Functions workflow configured (the AWS
deployment), runs are not driven in this process, and neither is the scheduler.
"""

from __future__ import annotations

from autopatch.admin_settings import effective_settings
from autopatch.api.deps import FleetProvider
from autopatch.engine.scheduler import LocalScheduler
from autopatch.notify.factory import notifiers_from_settings
from autopatch.settings import Settings
from autopatch.wiring import fleet_poll, open_store


def serve_scheduler(settings: Settings, fleet: FleetProvider) -> LocalScheduler | None:
    """The scheduler ``serve`` starts (None when runs are driven by Step Functions)."""
    if settings.state_machine_arn is not None:
        return None
    return LocalScheduler(
        lambda: open_store(settings),
        fleet.get,
        lambda store: notifiers_from_settings(effective_settings(settings, store).notify),
        poll=fleet_poll(settings),
    )

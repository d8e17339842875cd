"""Lambda entry points for the fleet, the catalog and the windows: discovery, catalog update, scan, reboot, schedule.

The same operations as ``autopatch fleet list``, ``catalog update``, ``fleet scan``, ``reboot`` and
``scheduler --once``, through the same functions (``scanning``, ``catalog.update``, ``operations``,
``engine.scheduler``): a schedule or the API invokes them, each parses its input and calls one of them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from autopatch.api.jobs import catalog_update_work, run_job
from autopatch.aws.run_models import InstanceId
from autopatch.aws.run_starter import start_workflow
from autopatch.aws.wiring import runtime
from autopatch.catalog.update import refresh_catalog
from autopatch.engine.ownership import RunLease
from autopatch.engine.scheduler import schedule_pass
from autopatch.operations import reboot_instance, scan_fleet
from autopatch.scanning import discover_instances

logger = Logger(service="autopatch")

Event = dict[str, Any]


class ScanRequest(BaseModel):
    """Servers to scan; none named means every known server (as ``autopatch fleet scan``)."""

    model_config = ConfigDict(extra="ignore")

    instance_ids: list[InstanceId] = Field(default_factory=list, max_length=1000)


class RebootRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    instance_id: InstanceId


@logger.inject_lambda_context(clear_state=True)
def discover(event: Event, context: LambdaContext) -> Event:
    """List the fleet (SSM and EC2) and remember it (a schedule keeps ``offline since`` current)."""
    instances = discover_instances(runtime().fleet, runtime().store)
    return {"instances": len(instances), "online": sum(1 for instance in instances if instance.online)}


class CatalogUpdateRequest(BaseModel):
    """A schedule sends nothing of use; the API sends the stored job to write progress to."""

    model_config = ConfigDict(extra="ignore")

    job_id: str | None = Field(default=None, pattern=r"^j-[0-9a-f]{12}$")


@logger.inject_lambda_context(clear_state=True)
def catalog_update(event: Event, context: LambdaContext) -> Event:
    """The last three months from MSRC (monthly schedule after Patch Tuesday), or the API's job (on demand)."""
    current = runtime()
    request = parse(event=event, model=CatalogUpdateRequest)
    if request.job_id is not None:  # the API created the job; its progress and end go to the store
        run_job(current.store, request.job_id, catalog_update_work(current.settings, current.store), _one_line)
        return {"job_id": request.job_id}
    return refresh_catalog(current.store, current.settings, datetime.now(UTC).date()).as_dict()


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:500]


@logger.inject_lambda_context(clear_state=True)
def scan(event: Event, context: LambdaContext) -> Event:
    """Scan the named servers (all known ones when none is named); one row per server."""
    request = parse(event=event, model=ScanRequest)
    return {"servers": scan_fleet(runtime().fleet, runtime().store, request.instance_ids)}


@logger.inject_lambda_context(clear_state=True)
def reboot(event: Event, context: LambdaContext) -> Event:
    """Reboot one server now, refused (``ConflictError``) while it is offline or a run holds it."""
    request = parse(event=event, model=RebootRequest)
    reboot_instance(runtime().fleet, runtime().store, request.instance_id)
    return {"rebooted": request.instance_id}


@logger.inject_lambda_context(clear_state=True)
def schedule(event: Event, context: LambdaContext) -> Event:
    """One pass of the maintenance-window scheduler (an EventBridge schedule, every minute by default).

    The pass is ``autopatch scheduler --once``'s: it starts the runs of windows that opened,
    continues the paused runs of a window that opened again, and takes over window runs whose
    driver went silent. Each run it launches is handed to the fleet-run workflow; a continued run
    gets an execution named after the run and the moment it continues.
    """
    current = runtime()
    machine = current.settings.state_machine_arn
    if machine is None:
        raise ValueError("AUTOPATCH_STATE_MACHINE_ARN: the scheduler's runs need the fleet-run workflow")

    def launch(lease: RunLease, why: str) -> None:
        name = None if why == "started" else f"{lease.run_id}-{int(current.clock())}"
        start_workflow(current.store, current.states, machine, lease, f"scheduler ({why})", name)

    at = datetime.fromtimestamp(current.clock(), UTC)
    actions = schedule_pass(current.store, current.fleet, at, launch)
    return {"actions": [action.as_row() for action in actions]}

"""Fleet steps: discover the servers, scan them (many at once), identify what they run.

Scans are sent to every target first and then polled together with backoff, so a fleet scan
takes as long as the slowest server, not the sum of all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from autopatch.domain.fleet import CommandStatus, Instance, ScanReport
from autopatch.domain.os_identity import OsIdentity, identify_product
from autopatch.domain.polling import PollPolicy
from autopatch.errors import AutoPatchError, NotFoundError, ValidationError
from autopatch.fleet.base import FleetAdapter
from autopatch.fleet.reports import parse_scan_output
from autopatch.store.base import FleetStore

if TYPE_CHECKING:
    from autopatch.scan_history import HistoryRecordingStore

ProgressCallback = Callable[[int, int, str], None]


@dataclass(slots=True)
class ScanOutcome:
    reports: dict[str, ScanReport] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # instance id → why the scan failed


def discover_instances(fleet: FleetAdapter, store: FleetStore) -> list[Instance]:
    """List the fleet and remember it (the store keeps instances no longer listed)."""
    instances = fleet.list_instances()
    store.save_instances(instances, datetime.now(UTC))
    return instances


def resolve_targets(store: FleetStore, instance_ids: Collection[str]) -> list[Instance]:
    """The stored instances named (all when none named); an unknown id is an input error."""
    return select_targets(store.list_instances(), instance_ids)


def unknown_instance(instance_id: str) -> NotFoundError:
    """The input error for an instance id the store does not know."""
    return NotFoundError(f"instance_id: {instance_id!r} is not a known instance (run `autopatch fleet list`)")


def select_targets(
    instances: Collection[Instance], instance_ids: Collection[str] = (), tag: tuple[str, str] | None = None
) -> list[Instance]:
    """The instances named (all when none named), narrowed to a tag; unknown ids and empty tags are input errors."""
    known = {instance.instance_id: instance for instance in instances}
    missing = [instance_id for instance_id in instance_ids if instance_id not in known]
    if missing:
        raise unknown_instance(missing[0])
    chosen = (
        [known[instance_id] for instance_id in dict.fromkeys(instance_ids)] if instance_ids else list(known.values())
    )
    if tag is None:
        return chosen
    key, value = tag
    matching = [instance for instance in chosen if instance.tags.get(key) == value]
    if not matching:
        seen = sorted({f"{k}={v}" for instance in chosen for k, v in instance.tags.items() if k == key})
        hint = f"values of {key} in the fleet: {', '.join(seen[:8])}" if seen else f"no server has a tag {key!r}"
        raise ValidationError("tag", f"{key}={value}", f"matches no server ({hint})")
    return matching


def scan_instances(
    fleet: FleetAdapter,
    store: HistoryRecordingStore,
    instances: Collection[Instance],
    policy: PollPolicy = PollPolicy(first_delay=0.5, max_delay=10.0, timeout=900.0),
    on_progress: ProgressCallback | None = None,
    sleep: Callable[[float], None] = time.sleep,
    save: bool = True,
) -> ScanOutcome:
    """Scan every instance; offline ones and failed scans are reported, never raised.

    ``save=False`` leaves storing the reports to the caller (a plan stores them with itself; a
    dry run stores nothing).
    """
    outcome = ScanOutcome()
    pending: dict[str, str] = {}
    for instance in instances:
        if not instance.online:
            outcome.failures[instance.instance_id] = "offline"
            continue
        try:
            pending[instance.instance_id] = fleet.send_scan(instance.instance_id)
        except AutoPatchError as exc:
            outcome.failures[instance.instance_id] = str(exc)
    total = len(instances)
    delays = policy.delays()
    while pending:
        for instance_id, command_id in list(pending.items()):
            invocation = fleet.get_command(instance_id, command_id)
            if not invocation.status.is_terminal:
                continue
            del pending[instance_id]
            if invocation.status is CommandStatus.SUCCESS:
                try:
                    outcome.reports[instance_id] = parse_scan_output(instance_id, invocation.output, datetime.now(UTC))
                except AutoPatchError as exc:
                    outcome.failures[instance_id] = str(exc)
            else:
                outcome.failures[instance_id] = f"scan {invocation.status}: {invocation.error or invocation.output}"[
                    :300
                ]
            if on_progress:
                on_progress(len(outcome.reports) + len(outcome.failures), total, instance_id)
        if pending:
            delay = next(delays, None)
            if delay is None:
                for instance_id in pending:
                    outcome.failures[instance_id] = f"scan timed out after {policy.timeout:.0f} s"
                break
            hints = [fleet.expected_completion(i, c) for i, c in pending.items()]
            if all(hint is not None for hint in hints):  # the adapter knows: no need to guess
                delay = min(delay, max(0.0, min(hint for hint in hints if hint is not None)))
            sleep(delay)
    if save:
        from autopatch.scan_history import store_scans  # here: history assesses, and assessment imports this module

        store_scans(store, outcome.reports.values(), instances)  # and the exposure history they add
    if on_progress:
        on_progress(total, total, "")
    return outcome


def identify(instance: Instance, scan: ScanReport | None) -> OsIdentity:
    """The MSRC product a server runs, from its scan first and discovery facts as fallback."""
    return identify_product(
        instance.platform_name,
        instance.platform_version,
        build=scan.build if scan else None,
        installation_type=scan.installation_type if scan else None,
        ami_name=instance.ami_name,
        os_tag=instance.tags.get("OS"),
    )

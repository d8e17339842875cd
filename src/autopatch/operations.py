"""Operator steps shared by the CLI and the HTTP API: list and scan the fleet, status, reboot, cancel, plan.

Each function holds the rule once (when a reboot is refused, when a run may be cancelled, which
facts a fleet listing shows); ``cli/`` prints what it returns and ``api/`` serialises it, so the two
entry points cannot drift apart. Results are JSON-ready dicts with the keys of the CLI's JSON.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date
from typing import Any

from autopatch.catalog.queries import parse_severities
from autopatch.domain.exposure import severity_rank
from autopatch.domain.fleet import Instance
from autopatch.domain.patching import KbState, RunStatus
from autopatch.engine.exploited_first import EXPLOITED_ONLY
from autopatch.engine.options import RunOptions
from autopatch.engine.planning import RunPlan, check_kbs_known, plan_run
from autopatch.engine.policy import find_baseline, parse_as_of
from autopatch.engine.report import instance_status
from autopatch.engine.rings import cancel_rings
from autopatch.errors import ConflictError, ValidationError
from autopatch.fleet.base import FleetAdapter
from autopatch.scanning import (
    ProgressCallback,
    discover_instances,
    identify,
    resolve_targets,
    scan_instances,
    select_targets,
)
from autopatch.store.base import FleetStore, RunStore, Store


def fleet_rows(fleet: FleetAdapter, store: FleetStore, discover: bool = True) -> list[dict[str, Any]]:
    """``fleet list``: every known server with product, build, online (or offline since), last scan and tags.

    ``discover=False`` answers from the store alone, unless the store knows no server yet: the
    fleet is then discovered once (first use), so the answer is never an empty list by omission.
    """
    if discover or not store.list_instances():
        discover_instances(fleet, store)
    instances = store.list_instances()  # as stored: with "offline since"
    scans = store.latest_scans([i.instance_id for i in instances])
    rows: list[dict[str, Any]] = []
    for instance in instances:
        scan = scans.get(instance.instance_id)
        identity = identify(instance, scan)
        rows.append(
            {
                "instance_id": instance.instance_id,
                "name": instance.name,
                "product": identity.product or f"unidentified ({identity.reason})",
                "build": scan.build if scan else instance.platform_version,
                "online": instance.online,
                "offline_since": instance.offline_since,
                "last_scan": scan.scanned_at.isoformat(timespec="seconds") if scan else None,
                "tags": instance.tags,
            }
        )
    return rows


def scan_fleet(
    fleet: FleetAdapter,
    store: Store,
    instance_ids: Collection[str] = (),
    on_progress: ProgressCallback | None = None,
) -> list[dict[str, Any]]:
    """``fleet scan``: scan the named servers (all when none named); one row per server with the result.

    Named servers are discovered first (a server started a minute ago is scanned, not refused);
    an unknown id is a ``NotFoundError`` before anything is sent.
    """
    if not store.list_instances() or instance_ids:
        discover_instances(fleet, store)
    targets = resolve_targets(store, instance_ids)
    outcome = scan_instances(fleet, store, targets, on_progress=on_progress)
    return [
        {
            "instance_id": target.instance_id,
            "name": target.name,
            "result": "scanned" if target.instance_id in outcome.reports else outcome.failures.get(target.instance_id),
            "build": report.build if (report := outcome.reports.get(target.instance_id)) else None,
            "installed": len(report.installed_kbs) if report else None,
            "offered": sorted(report.offered_kbs) if report else None,
            "pending_reboot": report.pending_reboot if report else None,
        }
        for target in targets
    ]


def require_known_instance(fleet: FleetAdapter, store: FleetStore, instance_id: str) -> None:
    """An instance the store knows, or one the fleet lists now; otherwise ``NotFoundError`` (nothing stored)."""
    if store.get_instance(instance_id) is None:
        select_targets(fleet.list_instances(), [instance_id])


def server_status(fleet: FleetAdapter, store: Store, instance_id: str) -> dict[str, Any]:
    """``status INSTANCE``: KBs done out of those that needed work, and each KB's latest state."""
    require_known_instance(fleet, store, instance_id)
    return instance_status(store, instance_id)


def reboot_instance(fleet: FleetAdapter, store: RunStore, instance_id: str) -> None:
    """Reboot a server now; refused (``ConflictError``) while it is offline or an unfinished run holds it.

    A reboot in the middle of an install would cut it, and the run's own verification would then
    read the boot as its own: the server is left to the run that holds it.
    """
    [instance] = select_targets(fleet.list_instances(), [instance_id])
    if not instance.online:
        raise ConflictError(f"instance_id: {instance_id} is offline: it cannot be asked to reboot now")
    holder = store.run_holding(instance_id)
    if holder is not None:
        raise ConflictError(f"instance_id: {instance_id} is being patched by run {holder}; cancel it or wait")
    fleet.reboot(instance_id)


def cancel_run(store: RunStore, run_id: str) -> RunStatus:
    """Cancel a run: Cancelled at once, or Cancelling while installs in flight finish.

    A finished run is refused with ``ConflictError``: cancelling it would rewrite history.
    """
    run = store.get_run(run_id)
    if run.status.is_terminal:
        raise ConflictError(f"run: {run_id} is already {run.status}; only unfinished runs can be cancelled")
    status = store.cancel_run(run_id, "cancelled by the operator")
    cancel_rings(store, run_id)  # --rings: a ring waiting, checking or soaking ends with the run, not later
    return status


def run_rows(store: RunStore, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """``runs``: the newest runs first (a page of them), with kind, status, times, driver and reason."""
    return [
        {
            "run_id": r.run_id,
            "kind": r.kind,
            "status": str(r.status),
            "created_at": r.created_at,
            "finished_at": r.finished_at,
            "owner": r.owner,
            "reason": r.reason,
        }
        for r in store.list_runs(limit, offset)
    ]


def parse_tag_filter(tag: str) -> tuple[str, str]:
    """``KEY=VALUE`` → (key, value); a tag filter without both halves is a ``ValidationError`` on ``tag``."""
    key, sep, value = tag.partition("=")
    if not sep or not key.strip() or not value:
        raise ValidationError("tag", tag, "a tag filter is KEY=VALUE, e.g. Environment=prod")
    return key.strip(), value


@dataclass(frozen=True, slots=True)
class PatchRequest:
    """A checked ``patch`` request: the fleet as listed now, the servers chosen, the KB filter and the run options."""

    instances: list[Instance]
    targets: list[Instance]
    kbs: list[str]
    minimum_severity: str | None
    options: dict[str, object]


def prepare_patch(
    fleet: FleetAdapter,
    store: Store,
    *,
    all_servers: bool,
    instance_ids: Collection[str],
    tag: str | None,
    kbs: Collection[str],
    severity: str | None,
    options: RunOptions,
    targets_rule: str,
    baseline: str | None = None,
    as_of: str | date | None = None,
    dry_run: bool = False,
    as_of_field: str = "as_of",
    exploited_only: bool = False,
) -> PatchRequest:
    """Check a patch request before anything is scanned or written; ``targets_rule`` names the edge's own choices.

    ``severity`` "Critical,Important" reads as "Important and above": the least severe one named is the floor.
    ``baseline`` names a stored baseline for every server (``NotFoundError`` otherwise); without it each
    server gets the baselines its tags match. ``as_of`` plans as on a past date: a dry run only.
    ``exploited_only`` keeps only the KBs closing CVEs Microsoft marks exploited or CISA lists (KEV).
    """
    as_of_day = parse_as_of(as_of, as_of_field)
    if as_of_day is not None and not dry_run:
        dry = "--dry-run" if as_of_field.startswith("--") else '"dry_run": true'
        raise ValidationError(
            as_of_field, as_of, f"accepted only with {dry}: a plan as on a past date installs nothing"
        )
    baseline_name = find_baseline(store, baseline).name if baseline is not None else None
    if sum((all_servers, bool(instance_ids), tag is not None)) != 1:
        raise ValidationError("targets", None, targets_rule)
    tag_filter = parse_tag_filter(tag) if tag is not None else None
    minimum = max(parse_severities([severity]), key=severity_rank) if severity is not None else None
    known_kbs = check_kbs_known(store, kbs)
    instances = fleet.list_instances()
    targets = select_targets(instances, instance_ids, tag_filter)
    stored_options = options.as_dict() | {"kbs": known_kbs, "severity": minimum}
    stored_options |= ({"baseline": baseline_name} if baseline_name else {}) | (
        {"as_of": as_of_day.isoformat()} if as_of_day else {}
    )
    stored_options |= {EXPLOITED_ONLY: True} if exploited_only else {}
    return PatchRequest(instances, targets, known_kbs, minimum, stored_options)


def plan_dry_run(
    fleet: FleetAdapter, store: Store, request: PatchRequest, on_progress: ProgressCallback | None = None
) -> RunPlan:
    """Scan the targets and classify their KBs: the plan a run would follow. Nothing is stored."""
    return plan_run(store, fleet, request.targets, request.kbs, request.minimum_severity, request.options, on_progress)


def plan_rows(plan: RunPlan) -> list[dict[str, Any]]:
    """A plan per server: build, KBs in install order, expected reboots, and why a server is left out.

    ``baseline`` names the baselines the server was judged by; ``held`` lists each KB they (or a
    known-issue advisory) held back, with the rule that held it (``engine/policy.py``).
    """
    return [
        {
            "instance_id": server.instance_id,
            "name": server.name,
            "product": server.product,
            "build": server.build_before,
            "kbs_in_order": [item.kb for item in plan.pending(server.instance_id)],
            "expected_reboots": plan.expected_reboots(server.instance_id),
            "open_exploited": server.open_exploited,
            "note": server.reason,
            "baseline": plan.policy.label(server.instance_id) if plan.policy else "",
            "held": [
                {"kb": item.kb, "rule": item.reason}
                for item in plan.items
                if item.instance_id == server.instance_id and item.state is KbState.HELD
            ],
        }
        for server in plan.servers
    ]

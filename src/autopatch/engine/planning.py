"""Planning a patch run: scan the targets, classify every relevant KB, store the run.

A KB is relevant when it fixes a catalog CVE of the server's product (at or above the minimum
severity), or when the operator named it. Each is classified Already Installed, Superseded,
Pending (Windows Update offers it) or Not Available, and Pending KBs are ordered servicing stack
first, then the cumulative update, then the rest.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime

from autopatch.assessment import load_product_catalog, server_facts
from autopatch.domain.exposure import KbStatus, ProductCatalog, classify_kb, severity_rank
from autopatch.domain.fleet import Instance
from autopatch.domain.identifiers import parse_kb
from autopatch.domain.patching import KbState, RunStatus, install_order
from autopatch.domain.runs import RunItem, RunRecord, RunServer
from autopatch.fleet.base import FleetAdapter
from autopatch.scanning import ProgressCallback, identify, scan_instances
from autopatch.store.sqlite import SqliteStore

_STATE_OF = {
    KbStatus.ALREADY_INSTALLED: KbState.ALREADY_INSTALLED,
    KbStatus.SUPERSEDED: KbState.SUPERSEDED,
    KbStatus.AVAILABLE: KbState.PENDING,
    KbStatus.NOT_AVAILABLE: KbState.NOT_AVAILABLE,
}


@dataclass(slots=True)
class RunPlan:
    run: RunRecord
    servers: list[RunServer] = field(default_factory=list)
    items: list[RunItem] = field(default_factory=list)

    def pending(self, instance_id: str) -> list[RunItem]:
        return [i for i in self.items if i.instance_id == instance_id and i.state is KbState.PENDING]

    def expected_reboots(self, instance_id: str) -> int:
        return sum(1 for item in self.pending(instance_id) if item.restart_required in ("Yes", "Maybe"))


def new_run_id(kind: str) -> str:
    return f"{kind[0]}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def _relevant_kbs(catalog: ProductCatalog, min_severity: str | None) -> set[int]:
    """KBs fixing the product's CVEs at or above ``min_severity`` (all of them when None)."""
    cves = catalog.cves
    if min_severity is not None:
        cves = tuple(cve for cve in cves if severity_rank(cve.severity) <= severity_rank(min_severity))
    return {kb for cve in cves for kb in cve.kbs}


def plan_run(
    store: SqliteStore,
    fleet: FleetAdapter,
    targets: Collection[Instance],
    kbs: Collection[str] = (),
    min_severity: str | None = None,
    options: dict[str, object] | None = None,
    on_progress: ProgressCallback | None = None,
) -> RunPlan:
    """Scan ``targets`` and classify their KBs into a plan (not stored: see ``store_plan``)."""
    wanted = [parse_kb(kb) for kb in kbs]
    run = RunRecord(new_run_id("patch"), "patch", RunStatus.PENDING, datetime.now(UTC).isoformat(), options or {})
    plan = RunPlan(run)
    scans = scan_instances(fleet, store, targets, on_progress=on_progress)
    catalogs: dict[str, ProductCatalog] = {}
    for instance in targets:
        scan = scans.reports.get(instance.instance_id)
        identity = identify(instance, scan)
        server = RunServer(
            run.run_id, instance.instance_id, instance.name, identity.product, scan.build if scan else None
        )
        if scan is None or identity.product is None:
            reason = scans.failures.get(instance.instance_id) or f"unidentified: {identity.reason}"
            plan.servers.append(_skipped(server, f"not scanned: {reason}" if scan is None else reason))
            continue
        if identity.product not in catalogs:
            catalogs[identity.product] = load_product_catalog(store, identity.product)
        catalog = catalogs[identity.product]
        facts = server_facts(scan.build, scan.installed_kbs, scan.offered_kbs)
        numbers = {int(kb[2:]) for kb in wanted} if wanted else _relevant_kbs(catalog, min_severity)
        ordered = sorted(numbers, key=lambda kb: _order(catalog, kb))
        for position, kb in enumerate(ordered):
            entry = catalog.kbs.get(kb)
            if entry is None:
                state, reason = KbState.NOT_AVAILABLE, f"KB{kb} is not in the catalog for {catalog.product}"
            else:
                state = _STATE_OF[classify_kb(catalog, kb, facts)]
                reason = _reason(catalog, kb, state)
            plan.items.append(
                RunItem(
                    run.run_id,
                    instance.instance_id,
                    f"KB{kb}",
                    position,
                    state,
                    entry.subtype if entry else None,
                    ".".join(map(str, entry.build)) if entry and entry.build else None,
                    entry.restart_required if entry else None,
                    reason=reason,
                )
            )
        plan.servers.append(server)
    return plan


def _order(catalog: ProductCatalog, kb: int) -> tuple[int, tuple[int, ...], int]:
    entry = catalog.kbs.get(kb)
    return install_order(entry.subtype if entry else None, entry.build if entry else None, kb)


def _reason(catalog: ProductCatalog, kb: int, state: KbState) -> str:
    if state is KbState.SUPERSEDED:
        return f"superseded by KB{catalog.successor(kb)}"
    if state is KbState.NOT_AVAILABLE:
        return "not offered by Windows Update"
    return ""


def _skipped(server: RunServer, reason: str) -> RunServer:
    return RunServer(
        server.run_id, server.instance_id, server.name, server.product, server.build_before, "Skipped", reason=reason
    )


def store_plan(store: SqliteStore, plan: RunPlan) -> str:
    store.create_run(plan.run, plan.servers, plan.items)
    return plan.run.run_id


def plan_retry(store: SqliteStore, instance: Instance, kb: str, product: str | None, build: str | None) -> RunPlan:
    """A one-KB run (the original's "retry single KB" workflow), Pending without classification."""
    canonical = parse_kb(kb)
    run = RunRecord(new_run_id("retry"), "retry", RunStatus.PENDING, datetime.now(UTC).isoformat(), {"kb": canonical})
    plan = RunPlan(run, [RunServer(run.run_id, instance.instance_id, instance.name, product, build)])
    entry = None
    if product:
        entry = load_product_catalog(store, product).kbs.get(int(canonical[2:]))
    plan.items.append(
        RunItem(
            run.run_id,
            instance.instance_id,
            canonical,
            0,
            KbState.PENDING,
            entry.subtype if entry else None,
            ".".join(map(str, entry.build)) if entry and entry.build else None,
            entry.restart_required if entry else None,
            reason="retry",
        )
    )
    return plan

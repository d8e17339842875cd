"""Planning a patch run: claim the servers, scan them, classify every relevant KB, store the plan.

A run claims its servers first (``start_run``: one transaction that refuses servers an unfinished
run holds), then scans them: a plan is only ever made from a scan taken while the run held the
servers, so a KB another run just installed shows as Already Installed instead of being sent again.

A KB is relevant when it fixes a catalog CVE of the server's product (at or above the minimum
severity), or when the operator named it. Each is classified Already Installed, Superseded,
Pending (Windows Update offers it) or Not Available, and Pending KBs are ordered servicing stack
first, then the cumulative update, then the rest. The plan's policy (``engine/policy.py``) then
applies the server's baselines, the as-of date and the known-issue advisories: KBs they hold back
are Held, with the rule that held them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache

from autopatch.assessment import load_product_catalog, server_facts
from autopatch.cve_deadlines import load_deadline_rules
from autopatch.domain.exposure import KbStatus, assess, classify_kb, severity_rank
from autopatch.domain.fleet import Instance, ScanReport
from autopatch.domain.identifiers import parse_kb
from autopatch.domain.patching import KbState, RunStatus, install_order
from autopatch.domain.product_catalog import ProductCatalog
from autopatch.domain.runs import RunItem, RunRecord, RunServer, start_order
from autopatch.engine.exploited_first import EXPLOITED_ONLY, narrowed_kbs, only_kbs, open_exploited
from autopatch.engine.ownership import LEASE_SECONDS, RunLease, new_owner_id
from autopatch.engine.policy import PlanPolicy, plan_policy
from autopatch.engine.run_exposure import record_exposure_before
from autopatch.errors import NotFoundError
from autopatch.fleet.base import FleetAdapter
from autopatch.scan_history import store_scans
from autopatch.scanning import ProgressCallback, identify, scan_instances
from autopatch.store.base import CatalogStore, RunStore, Store

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
    scans: dict[str, ScanReport] = field(default_factory=dict)
    policy: PlanPolicy | None = None  # the baselines and as-of date it was planned with (engine/policy.py)

    def pending(self, instance_id: str) -> list[RunItem]:
        return [i for i in self.items if i.instance_id == instance_id and i.state is KbState.PENDING]

    def expected_reboots(self, instance_id: str) -> int:
        return sum(1 for item in self.pending(instance_id) if item.restart_required in ("Yes", "Maybe"))


def new_run_id(kind: str) -> str:
    return f"{kind[0]}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def new_run(kind: str, options: dict[str, object], owner: str | None = None, planned: bool = True) -> RunRecord:
    lease = time.time() + LEASE_SECONDS if owner else None
    created = datetime.now(UTC).isoformat()
    return RunRecord(new_run_id(kind), kind, RunStatus.PENDING, created, options, None, None, "", owner, lease, planned)


def start_run(
    store: RunStore, kind: str, targets: Collection[Instance], options: dict[str, object]
) -> tuple[RunRecord, RunLease]:
    """Create the run holding ``targets``, owned by this process; ``ConflictError`` if one is held."""
    owner = new_owner_id()
    run = new_run(kind, options, owner=owner, planned=False)
    store.create_run(run, [RunServer(run.run_id, t.instance_id, t.name, None, None) for t in targets], [])
    return run, RunLease(store, run.run_id, owner)


def check_kbs_known(store: CatalogStore, kbs: Collection[str]) -> list[str]:
    """The canonical KB ids, each of which must be in the catalog (an unknown one is an input error)."""
    canonical = [parse_kb(kb) for kb in kbs]
    known = {record.fix.kb for record in store.fixes_for_kbs([int(kb[2:]) for kb in canonical])} if canonical else set()
    for kb in canonical:
        if int(kb[2:]) not in known:
            raise NotFoundError(f"kb: {kb} is not in the catalog (no Vendor Fix names it; import its month first)")
    return canonical


def _relevant_kbs(catalog: ProductCatalog, min_severity: str | None) -> set[int]:
    """KBs fixing the product's CVEs at or above ``min_severity`` (all of them when None)."""
    cves = catalog.cves
    if min_severity is not None:
        cves = tuple(cve for cve in cves if severity_rank(cve.severity) <= severity_rank(min_severity))
    return {kb for cve in cves for kb in cve.kbs}


def plan_run(
    store: Store,
    fleet: FleetAdapter,
    targets: Collection[Instance],
    kbs: Collection[str] = (),
    min_severity: str | None = None,
    options: dict[str, object] | None = None,
    on_progress: ProgressCallback | None = None,
    run: RunRecord | None = None,
    policy: PlanPolicy | None = None,
) -> RunPlan:
    """Scan ``targets`` and classify their KBs into a plan (nothing is stored: see ``store_plan``).

    ``policy`` (baselines, an as-of date) defaults to what the run's options ask for.
    """
    wanted = [parse_kb(kb) for kb in kbs]
    run = run or new_run("patch", options or {})
    policy = policy or plan_policy(store, run.options)
    plan = RunPlan(run, policy=policy)
    rules = load_deadline_rules(store, policy.as_of)  # exploited-first: MSRC's flag or KEV by the plan's day
    exploited_only = run.options.get(EXPLOITED_ONLY) is True
    scans = scan_instances(fleet, store, targets, on_progress=on_progress, save=False)
    plan.scans = scans.reports
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
        catalog, facts = policy.view(catalog, facts)
        numbers = {int(kb[2:]) for kb in wanted} if wanted else _relevant_kbs(catalog, min_severity)
        decisions = assess(catalog, facts)
        fixed = {decision.cve for decision in decisions if decision.status == "fixed"}
        exploited = open_exploited(rules, catalog, decisions, min_severity)
        server = replace(server, open_exploited=len(exploited))
        if exploited_only:  # named KBs stay only when they close an exploited CVE
            numbers = narrowed_kbs(catalog, numbers, exploited, named=bool(wanted))
        ordered = sorted(numbers, key=lambda kb: _order(catalog, kb))
        items: list[RunItem] = []
        for position, kb in enumerate(ordered):
            entry = catalog.kbs.get(kb)
            if entry is None:
                state, reason = KbState.NOT_AVAILABLE, f"KB{kb} is not in the catalog for {catalog.product}"
            else:
                state = _STATE_OF[classify_kb(catalog, kb, facts)]
                reason = _reason(catalog, kb, state)
                if state is KbState.NOT_AVAILABLE and _cves_of(catalog).get(kb, set()) <= fixed:
                    # Not offered, and nothing left for it to fix: an out-of-band or standalone update
                    # whose CVEs the installed cumulative updates already fix. Not a skipped KB.
                    state, reason = KbState.SUPERSEDED, "not needed: every CVE it fixes is fixed on this server"
            items.append(
                RunItem(
                    run.run_id,
                    instance.instance_id,
                    f"KB{kb}",
                    position,
                    state,
                    entry.subtype if entry else None,
                    ".".join(map(str, entry.build)) if entry and entry.build and not entry.build_inferred else None,
                    entry.restart_required if entry else None,
                    reason=reason,
                )
            )
        reviewed = policy.review(run.run_id, instance, catalog, facts, items)
        plan.items.extend(only_kbs(reviewed, numbers) if exploited_only else reviewed)
        plan.servers.append(server)
    plan.servers.sort(key=start_order)  # the store lists them so too: both drivers start them in this order
    return plan


@lru_cache(maxsize=64)
def _cves_of(catalog: ProductCatalog) -> dict[int, set[str]]:
    """KB → the CVEs of the product it fixes."""
    found: dict[int, set[str]] = {}
    for cve in catalog.cves:
        for kb in cve.kbs:
            found.setdefault(kb, set()).add(cve.cve)
    return found


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
    return replace(server, status="Skipped", reason=reason)


def store_plan(store: Store, plan: RunPlan) -> str:
    """Store the plan and the scans it was made from: the run's own record when it was started first."""
    if plan.run.planned:
        store.create_run(plan.run, plan.servers, plan.items)
    else:
        store.save_plan(plan.run.run_id, plan.servers, plan.items)
    store_scans(store, plan.scans.values())  # and the exposure history they add
    record_exposure_before(store, plan.run.run_id)
    return plan.run.run_id


def plan_started_run(
    store: Store, fleet: FleetAdapter, run_id: str, on_progress: ProgressCallback | None = None
) -> RunPlan:
    """Scan and plan a run whose servers were claimed but not yet planned (its options say what to plan)."""
    run = store.get_run(run_id)
    known = {instance.instance_id: instance for instance in store.list_instances()}
    targets = [known[s.instance_id] for s in store.run_servers(run_id) if s.instance_id in known]
    listed = run.options.get("kbs")
    kbs = [str(kb) for kb in listed] if isinstance(listed, list) else []
    severity = run.options.get("severity")
    plan = plan_run(store, fleet, targets, kbs, str(severity) if severity else None, run=run, on_progress=on_progress)
    store_plan(store, plan)
    return plan


def plan_retry(
    store: CatalogStore, instance: Instance, kb: str, product: str | None, build: str | None, owner: str | None = None
) -> RunPlan:
    """A one-KB run (the original's "retry single KB" workflow), Pending without classification."""
    canonical = parse_kb(kb)
    run = new_run("retry", {"kb": canonical}, owner=owner)
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
            ".".join(map(str, entry.build)) if entry and entry.build and not entry.build_inferred else None,
            entry.restart_required if entry else None,
            reason="retry",
        )
    )
    return plan

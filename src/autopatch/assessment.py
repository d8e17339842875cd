"""Exposure steps: load a product's catalog view once, then decide CVEs for servers or typed-in facts.

The decision itself is pure (``domain/exposure.py``); this module only feeds it from the store.
The CLI's ``assess`` and ``exposure`` commands, the HTTP API and the patch engine all call these.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any

from autopatch.catalog.queries import document_month, resolve_products
from autopatch.catalog_reads import CatalogReads
from autopatch.cve_deadlines import DeadlineStore, add_decision_fields, catalog_on, load_deadline_rules, overdue_summary
from autopatch.domain.catalog import KbFix, collapse_spaces
from autopatch.domain.deadlines import DEADLINE_COUNTS, DeadlineRules, merged_risk
from autopatch.domain.exposure import (
    FIX_NONE,
    FIX_NOT_OFFERED,
    FIX_OFFERED,
    FIX_UNKNOWN,
    CveDecision,
    ServerFacts,
    assess,
    build_of,
    classify_kb,
    summarise,
)
from autopatch.domain.fleet_view import ScannedServer
from autopatch.domain.identifiers import Month, parse_kb, parse_partial_build
from autopatch.domain.os_identity import OsIdentity
from autopatch.domain.product_catalog import (
    NO_MONTH,
    Build,
    CatalogCve,
    CatalogKb,
    MonthKey,
    ProductCatalog,
    choose_build,
    closure,
    infer_cumulative_builds,
    main_branch,
    newest_successors,
    update_line,
)
from autopatch.errors import NotFoundError, shorten
from autopatch.exposure_rows import (
    LevelColumns,
    collector_paused,
    exposure_rows,
    identity_of,
    scanned_targets,
    unknown_reason,
)
from autopatch.store.base import CatalogStore, Store


@lru_cache(maxsize=4096)  # a few hundred documents, tens of thousands of rows naming them
def _month_sort(document_id: str) -> MonthKey:
    month = document_month(document_id)
    return (month.year, month.month) if month else NO_MONTH


def _home_months(listings: Counter[tuple[int, str]]) -> dict[int, MonthKey]:
    """A KB's month: the document listing it most (monthly documents also list later months' KBs)."""
    home: dict[int, tuple[int, MonthKey]] = {}
    for (kb, document_id), count in listings.items():
        month = _month_sort(document_id)
        if (count, month) > home.get(kb, (0, NO_MONTH)):
            home[kb] = (count, month)
    return {kb: month for kb, (_, month) in home.items()}


def load_product_catalog(store: CatalogStore, product: str, reads: CatalogReads | None = None) -> ProductCatalog:
    """Every CVE, KB and supersedence edge of one product (exact MSRC name), newest data winning.

    ``reads`` shares the chains and other products' KBs between products loaded under one
    catalog revision (``catalog_reads.py``).
    """
    reads = reads if reads is not None else CatalogReads()
    wanted = collapse_spaces(product).casefold()
    products = [p for p in resolve_products(store, product) if p.name.casefold() == wanted]
    if not products:
        raise NotFoundError(f"product: {shorten(repr(product))} is not in the catalog")
    product_ids = [p.product_id for p in products]
    records = sorted(store.affected(product_ids), key=lambda r: _month_sort(r.document_id))
    first_month: dict[str, str] = {}
    latest: dict[str, tuple[str | None, str]] = {}
    risk: dict[str, tuple[date | None, bool, bool]] = {}  # released, exploited, publicly disclosed
    for record in records:
        first_month.setdefault(record.cve, str(document_month(record.document_id) or ""))
        latest[record.cve] = (record.severity, record.title)
        risk[record.cve] = merged_risk(risk.get(record.cve), record)
    kbs_of: dict[str, set[int]] = defaultdict(set)
    builds: dict[int, list[Build]] = defaultdict(list)
    facts: dict[int, KbFix] = {}  # the newest listing of each KB
    listings: Counter[tuple[int, str]] = Counter()
    parsed: dict[str | None, Build | None] = {}  # thousands of rows, a few hundred builds
    for fix_record in sorted(reads.fixes_for_products(store, product_ids), key=lambda r: _month_sort(r.document_id)):
        fix = fix_record.fix
        kbs_of[fix.cve].add(fix.kb)
        listings[(fix.kb, fix_record.document_id)] += 1
        if fix.fixed_build not in parsed:
            parsed[fix.fixed_build] = build_of(fix.fixed_build)
        if (build := parsed[fix.fixed_build]) is not None:
            builds[fix.kb].append(build)
        facts[fix.kb] = fix
    home = _home_months(listings)
    newest = (CatalogKb(kb, builds[kb][-1] if builds[kb] else None, e.subtype, None) for kb, e in facts.items())
    branch = main_branch(newest)
    kbs = infer_cumulative_builds(
        {
            kb: CatalogKb(
                kb,
                choose_build(builds[kb], branch),
                entry.subtype,
                entry.restart_required,
                home.get(kb, NO_MONTH),
                download_url=entry.download_url,
            )
            for kb, entry in facts.items()
        }
    )
    edges = _supersedence_graph(store, kbs, reads)
    superseded_by = closure(edges, kbs)
    others = {kb for newer in superseded_by.values() for kb in newer} - kbs.keys()
    cves = tuple(
        CatalogCve(cve, severity, title, first_month[cve], tuple(sorted(kbs_of.get(cve, ()))), *risk[cve])
        for cve, (severity, title) in sorted(latest.items())
    )
    line = update_line(kbs, branch, superseded_by, _other_kbs(store, others, reads))
    successors = newest_successors(kbs, superseded_by)
    return ProductCatalog(products[0].name, branch, cves, kbs, superseded_by, line, successors)


def prefetch_catalogs(store: CatalogStore, products: Collection[str], reads: CatalogReads) -> None:
    """Read together what loading these products' catalogs one by one would read product by product.

    A product the catalog lacks is left to ``load_product_catalog``, which says so.
    """
    product_ids = []
    for name in products if len(products) > 1 else ():
        wanted = collapse_spaces(name).casefold()
        with suppress(NotFoundError):
            product_ids += [p.product_id for p in resolve_products(store, name) if p.name.casefold() == wanted]
    reads.prefetch_fixes(store, product_ids)


def _supersedence_graph(store: CatalogStore, kbs: Iterable[int], reads: CatalogReads) -> dict[int, set[int]]:
    """Who supersedes whom, from the product's KBs onwards across every product's listings."""
    edges: dict[int, set[int]] = {}
    frontier = set(kbs)
    while frontier:
        found = reads.superseded_by(store, frontier)
        edges.update(found)
        frontier = {kb for newer in found.values() for kb in newer} - edges.keys()
    return edges


def _other_kbs(
    store: CatalogStore, kbs: Collection[int], reads: CatalogReads
) -> dict[int, tuple[str | None, MonthKey]]:
    """(subtype, month) of KBs listed under other products only (for the product's update line)."""
    if not kbs:
        return {}
    listings: Counter[tuple[int, str]] = Counter()
    subtypes: dict[int, str | None] = {}
    for record in sorted(reads.fixes_for_kbs(store, kbs), key=lambda r: _month_sort(r.document_id)):
        listings[(record.fix.kb, record.document_id)] += 1
        subtypes[record.fix.kb] = record.fix.subtype
    return {kb: (subtypes[kb], month) for kb, month in _home_months(listings).items()}


def server_facts(build: str | None, installed: Iterable[str], offered: Iterable[str] | None = ()) -> ServerFacts:
    """Facts from text: ``build`` may lack its revision (systeminfo); ``offered=None`` means not known."""
    branch, revision = parse_partial_build(build) if build is not None else (None, None)
    return ServerFacts(
        build=(*branch, revision) if branch is not None and revision is not None else None,
        installed=frozenset(int(parse_kb(kb, "installed")[2:]) for kb in installed),
        offered=None if offered is None else frozenset(int(parse_kb(kb, "offered")[2:]) for kb in offered),
        branch=branch,
    )


def decision_view(decision: CveDecision) -> dict[str, Any]:
    return {
        "cve": decision.cve,
        "severity": decision.severity,
        "month": decision.month,
        "status": decision.status,
        "reason": decision.reason,
        "fixing_kbs": list(decision.fixing_kbs),
        "offered": decision.offered,
        "fix": decision.fix,
        "title": decision.title,
    }


def assess_facts(
    store: DeadlineStore,
    product: str,
    build: str,
    installed: Collection[str] = (),
    month: Month | None = None,
    severities: Collection[str] | None = None,
    warnings: Collection[str] = (),
    as_of: date | None = None,
) -> dict[str, Any]:
    """``autopatch assess``: the exposure decision for facts typed in by hand (air-gapped servers).

    A build without its revision is accepted: the revision is then taken from the newest
    installed update whose fixed build the catalog knows. Installed KBs the catalog does not know
    are named in a warning, never silently ignored.
    """
    notes = list(warnings)
    facts = server_facts(build, installed, offered=None)
    catalog = load_product_catalog(store, product)
    if as_of is not None:  # CVEs and KBs released later do not exist yet
        catalog = catalog_on(store, catalog, as_of)
    known = _known_kbs(store, facts.installed)
    for kb in sorted(facts.installed - known.keys()):
        notes.append(f"KB{kb} is not in the catalog (no MSRC security fix names it): it was not used")
    if facts.build is None and facts.branch is not None:
        facts, note = _derive_build(facts, known)
        notes.append(note)
    decisions = [
        d
        for d in assess(catalog, facts)
        if (month is None or d.month == str(month)) and (severities is None or d.severity in severities)
    ]
    open_decisions = [d for d in decisions if d.status == "open"]
    by_fix = Counter(d.fix for d in open_decisions)
    views = [decision_view(d) for d in decisions]
    add_decision_fields(load_deadline_rules(store, as_of), catalog, views)
    return {
        "product": catalog.product,
        "build": ".".join(map(str, facts.build)) if facts.build else build,
        "warnings": notes,
        "summary": {
            "open": len(open_decisions),
            "fixed": len(decisions) - len(open_decisions),
            **_fix_counts(by_fix),
            **overdue_summary(views),
        },
        "cves": views,
    }


def _fix_counts(by_fix: Counter[str | None] | dict[str, int]) -> dict[str, int]:
    counts = {
        "open_fix_offered": by_fix.get(FIX_OFFERED, 0),
        "open_fix_not_offered": by_fix.get(FIX_NOT_OFFERED, 0),
        "open_no_fix": by_fix.get(FIX_NONE, 0),
    }
    if by_fix.get(FIX_UNKNOWN, 0):
        counts["open_fix_unknown"] = by_fix.get(FIX_UNKNOWN, 0)
    return counts


def _known_kbs(store: CatalogStore, kbs: Collection[int]) -> dict[int, list[Build]]:
    """The installed KBs the catalog knows, each with the Windows builds it is listed at."""
    known: dict[int, list[Build]] = {}
    for record in store.fixes_for_kbs(kbs) if kbs else ():
        listed = known.setdefault(record.fix.kb, [])
        if (build := build_of(record.fix.fixed_build)) is not None:
            listed.append(build)
    return known


def _derive_build(facts: ServerFacts, known: dict[int, list[Build]]) -> tuple[ServerFacts, str]:
    branch = facts.branch
    assert branch is not None
    text = ".".join(map(str, branch))
    candidates = [(build, kb) for kb, builds in known.items() for build in builds if build[:3] == branch]
    if not candidates:
        return facts, (
            f"build {text} has no revision and no installed KB has a fixed build in the catalog: "
            "decisions rest on the installed KBs and their release months"
        )
    build, kb = max(candidates)
    derived = ServerFacts(build, facts.installed, facts.offered, branch)
    return derived, (
        f"build {text} has no revision: taken as {'.'.join(map(str, build))}, the fixed build of KB{kb}, "
        "the newest installed update the catalog knows"
    )


def kb_statuses(catalog: ProductCatalog, facts: ServerFacts) -> dict[str, str]:
    """Every KB of the product classified for one server (Already Installed, Superseded, …)."""
    return {f"KB{kb}": str(classify_kb(catalog, kb, facts)) for kb in sorted(catalog.kbs)}


UNKNOWN_EXPOSURE = dict.fromkeys(
    (
        "open_critical",
        "open_important",
        "open_total",
        "fixed_total",
        "open_fix_offered",
        "open_fix_not_offered",
        "open_no_fix",
        "closing_kbs",
        "offered_kbs",
        *DEADLINE_COUNTS,
    )
)


@dataclass
class AssessmentMemo:
    """Product catalogs and per-(product, facts) summaries kept across calls while the catalog stays the same.

    Valid for one catalog revision: when the catalog moves, ``FleetExposureCache`` forgets the
    products the writes touched (``summary_maintenance.forget_products``), or everything when
    they logged nothing. ``previous`` holds the summaries of the last full call: those still used
    move over, the rest are dropped with it, so the memo never outgrows the fleet's patch levels.
    """

    catalogs: dict[str, ProductCatalog] = field(default_factory=dict)
    summaries: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict)
    previous: dict[tuple[Any, ...], dict[str, Any] | None] = field(default_factory=dict)
    reads: CatalogReads = field(default_factory=CatalogReads)  # chains and KBs the products share

    def next_call(self) -> AssessmentMemo:
        """The memo for the next call under the same catalog: catalogs kept, summaries offered for reuse."""
        return AssessmentMemo(self.catalogs, previous=dict(self.summaries), reads=self.reads)


def fleet_exposure(
    store: Store,
    instance_ids: Collection[str] = (),
    severities: Collection[str] | None = None,
    with_cves: bool = False,
    memo: AssessmentMemo | None = None,
    as_of: date | None = None,
    rules: DeadlineRules | None = None,
) -> list[dict[str, Any]]:
    """Per server: open Critical/Important CVE counts and the KBs that close them (from the last scan).

    A server never scanned, offline, or unidentified has exposure *unknown*: its counts are
    ``None``, never zeros that read as "nothing open". Servers with the same product and facts
    (build, installed, offered) share one assessment and one summary: a fleet has far fewer
    distinct patch levels than servers.

    Each row also counts its open overdue CVEs per severity and its open exploited/KEV CVEs under
    ``rules`` (the stored SLA policy and KEV entries on ``as_of``, today by default); with
    ``as_of``, CVEs and KBs released after that day do not exist yet.
    """
    memo = memo if memo is not None else AssessmentMemo()
    rules = rules if rules is not None else load_deadline_rules(store, as_of)
    catalogs, summaries = memo.catalogs, memo.summaries
    wanted = frozenset(severities) if severities else None

    def columns(server: ScannedServer, identity: OsIdentity) -> LevelColumns:
        """The product and the exposure columns of one patch level (every server at it shares them)."""
        unknown = unknown_reason(server, identity)
        if unknown is not None or identity.product is None:
            return identity.product, {"status": unknown} | UNKNOWN_EXPOSURE | ({"cves": None} if with_cves else {})
        if identity.product not in catalogs:
            catalogs[identity.product] = load_product_catalog(store, identity.product, memo.reads)
            if as_of is not None:
                catalogs[identity.product] = catalog_on(store, catalogs[identity.product], as_of)
        facts = server_facts(server.build, server.installed_kbs, server.offered_kbs)
        key = (identity.product, facts, wanted, with_cves, rules.key)
        if key not in summaries:
            summaries[key] = memo.previous.pop(key, None) or _summarise(
                catalogs[identity.product], facts, wanted, with_cves, rules
            )
        return identity.product, summaries[key]

    def columns_of_levels(servers: list[ScannedServer]) -> list[LevelColumns]:
        identities = [identity_of(server) for server in servers]
        products = {identity.product for identity in identities if identity.product is not None}
        prefetch_catalogs(store, products - catalogs.keys(), memo.reads)
        return [columns(server, identity) for server, identity in zip(servers, identities, strict=True)]

    with collector_paused():  # 100,000 records and rows that all survive: see ``collector_paused``
        return exposure_rows(scanned_targets(store, instance_ids), columns_of_levels)


def fleet_totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Totals over the servers whose exposure is known; servers not assessed are counted apart, never as zero."""
    assessed = [row for row in rows if row["status"] == "assessed"]
    return {
        "servers": len(rows),
        "servers_assessed": len(assessed),
        "open_critical": sum(row["open_critical"] for row in assessed),
        "open_important": sum(row["open_important"] for row in assessed),
        "open_total": sum(row["open_total"] for row in assessed),
        **{name: sum(row.get(name) or 0 for row in assessed) for name in DEADLINE_COUNTS},
    }


def _summarise(
    catalog: ProductCatalog,
    facts: ServerFacts,
    severities: frozenset[str] | None,
    with_cves: bool,
    rules: DeadlineRules,
) -> dict[str, Any]:
    counts = summarise(catalog, facts, frozenset(severities) if severities else None)
    offered = facts.offered or frozenset()
    summary: dict[str, Any] = {
        "status": "assessed",
        "open_critical": counts.open_by_severity.get("Critical", 0),
        "open_important": counts.open_by_severity.get("Important", 0),
        "open_total": counts.open_total,
        "fixed_total": counts.fixed_total,
        **_fix_counts(dict(counts.open_by_fix)),
        "closing_kbs": [closing_kb_view(catalog, kb, kb in offered) for kb in counts.closing],
        "offered_kbs": [f"KB{kb}" for kb in counts.closing if kb in offered],
        **rules.counts(catalog, facts, frozenset(severities) if severities else None, counts),
    }
    if with_cves:
        decisions = [d for d in assess(catalog, facts) if severities is None or d.severity in severities]
        summary["cves"] = [decision_view(d) for d in decisions]
        add_decision_fields(rules, catalog, summary["cves"])
    return summary


def closing_kb_view(catalog: ProductCatalog, kb: int, offered: bool) -> dict[str, Any]:
    """A KB that would close open CVEs: installed by a patch run when offered, by hand otherwise."""
    entry = catalog.kbs.get(kb)
    manual = not offered or (entry is not None and entry.never_offered)
    return {
        "kb": f"KB{kb}",
        "delivery": "manual" if manual else "windows-update",
        "download_url": entry.download_url if entry else None,
    }

"""Patch policy in a plan: baselines, the ``--as-of`` date and the known-issue advisories.

``plan_run`` hands each server to two hooks. ``view`` gives the catalog and the server's facts as
they stood on the as-of date (``domain/release_dates.catalog_as_of``): later KBs and CVEs do not
exist, and a scan made today says nothing about what Windows Update offered then, so every KB of
the server's branch released by that day counts as offered (hotpatches and Setup Dynamic Updates,
which Windows Update does not offer to every server, excepted). ``review`` takes the server's
classified KBs and applies its baselines (``domain/baselines.decide_all``): a KB to install that a
rule holds back becomes Held with that rule as its reason, a rejected KB is never Pending, a KB
approved by name (or a known-issue KB) joins the plan, and a KB "Superseded" only by held KBs is
planned again — the cumulative update of last month installs while this month's waits out its
approve-after-days. Servicing stack updates stay first; with ``exploited_first``, KBs fixing an
exploited CVE come right after them.

A server's baselines: the one the run names, else every baseline whose groups match its tags
(a KB must then be approved by each), else none — the advisories still hold their KBs back.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Protocol

from autopatch.catalog_facts import CatalogFacts
from autopatch.domain.advisories import KnownIssue, known_issue, known_issues_for
from autopatch.domain.baselines import (
    Baseline,
    KbDecision,
    KbFacts,
    classification_of,
    decide_all,
    matching_baselines,
    parse_baseline_name,
)
from autopatch.domain.catalog import SEVERITIES
from autopatch.domain.exposure import KbStatus, ServerFacts, classify_kb
from autopatch.domain.fleet import Instance
from autopatch.domain.identifiers import parse_kb
from autopatch.domain.patching import KbState, install_order
from autopatch.domain.product_catalog import ProductCatalog
from autopatch.domain.release_dates import (
    KbRelease,
    catalog_as_of,
    month_release_dates,
)
from autopatch.domain.runs import RunItem
from autopatch.errors import NotFoundError, ValidationError
from autopatch.store.base import BaselineStore, CatalogStore

_STATE_OF = {
    KbStatus.ALREADY_INSTALLED: KbState.ALREADY_INSTALLED,
    KbStatus.SUPERSEDED: KbState.SUPERSEDED,
    KbStatus.AVAILABLE: KbState.PENDING,
    KbStatus.NOT_AVAILABLE: KbState.NOT_AVAILABLE,
}
NOT_OFFERED = "not offered by Windows Update"


class PolicyStore(CatalogStore, BaselineStore, Protocol):
    """What applying a policy reads: the catalog (release dates, exploited CVEs) and the baselines."""


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


def parse_as_of(value: str | date | None, field: str = "as_of") -> date | None:
    """``YYYY-MM-DD`` → a date (None stays None); anything else is a ``ValidationError`` naming ``field``."""
    if value is None or isinstance(value, date):
        return value
    text = value.strip() if isinstance(value, str) else ""
    try:
        if _DATE.fullmatch(text) is None:
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise ValidationError(field, value, "a date is YYYY-MM-DD, e.g. 2024-02-20") from None


def find_baseline(store: BaselineStore, name: str, field: str = "baseline") -> Baseline:
    """The stored baseline ``name``, or ``NotFoundError`` naming it."""
    baseline = store.get_baseline(parse_baseline_name(name, field))
    if baseline is None:
        raise NotFoundError(f"{field}: {name!r} is not a known baseline (see `autopatch baseline list`)")
    return baseline


@lru_cache(maxsize=64)
def _severity_ranks(catalog: ProductCatalog) -> dict[int, int]:
    """KB → the rank (0 = Critical) of the most severe CVE it fixes on the product."""
    ranks: dict[int, int] = {}
    for cve in catalog.cves:
        if cve.severity in SEVERITIES:
            rank = SEVERITIES.index(cve.severity)
            for kb in cve.kbs:
                ranks[kb] = min(rank, ranks.get(kb, rank))
    return ranks


@dataclass
class _Product:
    """What the policy knows about one product in this plan, each part loaded once, when first needed."""

    releases: dict[int, KbRelease] | None = None
    view: ProductCatalog | None = None  # the catalog as of the plan's date
    exploited: frozenset[int] | None = None
    decisions: dict[tuple[str, int], KbDecision] = field(default_factory=dict)
    newest_approved: dict[tuple[str, int], int | None] = field(default_factory=dict)  # superseded KB → its successor


class PlanPolicy:
    """The baselines, as-of date and advisories of one plan; ``plan_run`` calls ``view`` and ``review``."""

    def __init__(
        self,
        store: PolicyStore,
        baselines: Sequence[Baseline],
        named: Baseline | None = None,
        as_of: date | None = None,
        named_kbs: Collection[str] = (),
        today: date | None = None,
    ) -> None:
        self._facts_source = CatalogFacts(store)
        self.baselines = list(baselines)
        self.named = named
        self.as_of = as_of
        self.on = as_of or today or datetime.now(UTC).date()
        self.named_kbs = frozenset(parse_kb(kb) for kb in named_kbs)
        self.labels: dict[str, str] = {}
        self._products: dict[str, _Product] = {}

    @classmethod
    def from_options(cls, store: PolicyStore, options: Mapping[str, object]) -> PlanPolicy:
        """The policy a run's options ask for: ``baseline`` (a name), ``as_of`` (``YYYY-MM-DD``), ``kbs``."""
        name = options.get("baseline")
        named = find_baseline(store, str(name)) if name else None
        listed = options.get("kbs")
        kbs = [str(kb) for kb in listed] if isinstance(listed, list) else []
        as_of = options.get("as_of")
        return cls(store, store.list_baselines(), named, parse_as_of(str(as_of)) if as_of else None, kbs)

    def baselines_for(self, instance: Instance) -> list[Baseline]:
        """The run's baseline, else those whose groups match the server's tags."""
        return [self.named] if self.named is not None else matching_baselines(self.baselines, instance.tags)

    def label(self, instance_id: str) -> str:
        """The baselines a planned server was judged by, ``a+b``; empty when none applied."""
        return self.labels.get(instance_id, "")

    def _product(self, catalog: ProductCatalog) -> _Product:
        return self._products.setdefault(catalog.product, _Product())

    def releases(self, catalog: ProductCatalog) -> dict[int, KbRelease]:
        """Every KB's release (``domain/release_dates.py``), read once per product."""
        product = self._product(catalog)
        if product.releases is None:
            product.releases = self._facts_source.releases(catalog)
        return product.releases

    def _exploited(self, catalog: ProductCatalog) -> frozenset[int]:
        """KBs fixing a CVE Microsoft marks exploited on the product (read only for ``exploited_first``)."""
        product = self._product(catalog)
        if product.exploited is None:
            product.exploited = self._facts_source.exploited_kbs(catalog)
        return product.exploited

    # --- hook 1: the catalog and facts as of the plan's date ----------------------------------

    def view(self, catalog: ProductCatalog, facts: ServerFacts) -> tuple[ProductCatalog, ServerFacts]:
        """The product's catalog and the server's facts on the as-of date (unchanged without one)."""
        if self.as_of is None:
            return catalog, facts
        product = self._product(catalog)
        if product.view is None:
            month_dates = month_release_dates(self._facts_source.document_dates())
            product.view = catalog_as_of(catalog, self.releases(catalog), month_dates, self.as_of)
        view = product.view
        branch = facts.on_branch
        assumed = {
            number
            for number, entry in view.kbs.items()
            if not entry.is_hotpatch
            and not entry.never_offered
            and (entry.build is None or branch is None or entry.build[:3] == branch)
        }
        assumed |= {int(issue.kb[2:]) for issue in known_issues_for(catalog.product) if issue.released <= self.as_of}
        return view, replace(facts, offered=frozenset(facts.offered or ()) | assumed)

    # --- hook 2: the baselines' decisions on the server's KBs ---------------------------------

    def review(
        self, run_id: str, instance: Instance, catalog: ProductCatalog, facts: ServerFacts, items: list[RunItem]
    ) -> list[RunItem]:
        """The server's items with its baselines applied: Held KBs, KBs added by name, the install order."""
        baselines = self.baselines_for(instance)
        self.labels[instance.instance_id] = "+".join(baseline.name for baseline in baselines)
        added = self._additions(baselines, catalog, facts, items)
        reviewed = items + [new_item(run_id, instance.instance_id, catalog, facts, kb) for kb in added]
        reviewed = [self._judged(item, baselines, catalog, facts) for item in reviewed]
        exploited = self._exploited(catalog) if any(b.exploited_first for b in baselines) else frozenset()
        reviewed.sort(key=lambda item: install_key(catalog, item, exploited))
        return [replace(item, position=position) for position, item in enumerate(reviewed)]

    def _additions(
        self, baselines: Sequence[Baseline], catalog: ProductCatalog, facts: ServerFacts, items: list[RunItem]
    ) -> list[str]:
        """KBs approved by name for this product, and known-issue KBs offered to it, not yet planned.

        None when the run names its KBs (``patch --kb``): it plans those only.
        """
        if self.named_kbs:
            return []
        present = {item.kb for item in items}
        wanted: dict[str, None] = {}
        for kb in (kb for baseline in baselines for kb in baseline.approved):
            issue = known_issue(kb)
            if int(kb[2:]) in catalog.kbs or (issue is not None and catalog.product in issue.products):
                wanted[kb] = None
        offered = facts.offered or frozenset()
        wanted |= {issue.kb: None for issue in known_issues_for(catalog.product) if int(issue.kb[2:]) in offered}
        return [kb for kb in wanted if kb not in present and self._exists(kb)]

    def _exists(self, kb: str) -> bool:
        """Known-issue KBs do not exist before their release in an as-of plan (catalog KBs are already cut)."""
        issue = known_issue(kb)
        return issue is None or self.as_of is None or issue.released <= self.as_of

    def decision(self, baselines: Sequence[Baseline], catalog: ProductCatalog, kb: str) -> KbDecision:
        """The baselines' verdict on one KB of the product (once per plan)."""
        product = self._product(catalog)
        key = ("+".join(b.name for b in baselines), int(kb[2:]))
        if key not in product.decisions:
            product.decisions[key] = decide_all(baselines, self._facts(baselines, catalog, kb), self.on)
        return product.decisions[key]

    def _facts(self, baselines: Sequence[Baseline], catalog: ProductCatalog, kb: str) -> KbFacts:
        number = int(kb[2:])
        issue: KnownIssue | None = known_issue(kb)
        entry = catalog.kbs.get(number)
        released: date | None = issue.released if issue is not None else None
        # Release dates cost a catalog read: only a plan that needs them (as-of, a waiting period) loads them.
        if issue is None and (self.as_of is not None or any(b.approve_after_days for b in baselines)):
            release = self.releases(catalog).get(number)
            released = release.released if release is not None else None
        ranks = _severity_ranks(catalog)
        rank = ranks.get(number)
        if issue is not None:
            fixed = [
                SEVERITIES.index(c.severity) for c in catalog.cves if c.cve in issue.cves and c.severity in SEVERITIES
            ]
            rank = min(fixed, default=None)
        exploited = any(b.exploited_first for b in baselines) and number in self._exploited(catalog)
        return KbFacts(
            kb=kb,
            released=released,
            classification=issue.classification
            if issue is not None
            else classification_of(entry.subtype if entry else None),
            severity=SEVERITIES[rank] if rank is not None else None,
            exploited=exploited,
            advisory=issue,
            named=kb in self.named_kbs,
        )

    def _judged(
        self, item: RunItem, baselines: Sequence[Baseline], catalog: ProductCatalog, facts: ServerFacts
    ) -> RunItem:
        if baselines and item.state is KbState.SUPERSEDED and item.reason.startswith("superseded by"):
            # Without a baseline nothing of the catalog is held (advisory KBs are not catalog KBs).
            item = self._superseded_again(item, baselines, catalog, facts)
        if item.state not in (KbState.PENDING, KbState.NOT_AVAILABLE):
            return item
        decision = self.decision(baselines, catalog, item.kb)
        if decision.approved or (item.state is KbState.NOT_AVAILABLE and not decision.rule.startswith("rejected")):
            return item
        return replace(item, state=KbState.HELD, reason=decision.rule)

    def _superseded_again(
        self, item: RunItem, baselines: Sequence[Baseline], catalog: ProductCatalog, facts: ServerFacts
    ) -> RunItem:
        """A KB superseded only by held KBs is what the server can get: planned like any other."""
        number = int(item.kb[2:])
        newest = self._newest_approved(baselines, catalog, number)
        if newest is not None:
            return item if newest == catalog.successor(number) else replace(item, reason=f"superseded by KB{newest}")
        held = ", ".join(f"KB{kb}" for kb in sorted(catalog.newer_product_kbs(number)))
        if facts.offered is not None and number in facts.offered:
            return replace(item, state=KbState.PENDING, reason=f"the KBs that supersede it are held ({held})")
        reason = f"{NOT_OFFERED} (the KBs that supersede it are held: {held})"
        return replace(item, state=KbState.NOT_AVAILABLE, reason=reason)

    def _newest_approved(self, baselines: Sequence[Baseline], catalog: ProductCatalog, kb: int) -> int | None:
        """The newest KB of the product that supersedes ``kb`` and that the baselines approve (once per plan)."""
        cache = self._product(catalog).newest_approved
        key = ("+".join(b.name for b in baselines), kb)
        if key not in cache:
            newer = catalog.newer_product_kbs(kb)
            approved = [n for n in newer if self.decision(baselines, catalog, f"KB{n}").approved]
            cache[key] = max(approved, key=lambda n: (catalog.kbs[n].month, n)) if approved else None
        return cache[key]


def new_item(run_id: str, instance_id: str, catalog: ProductCatalog, facts: ServerFacts, kb: str) -> RunItem:
    """A KB the baselines add to a server's plan, classified as ``plan_run`` classifies the others."""
    number = int(kb[2:])
    entry = catalog.kbs.get(number)
    if entry is not None:
        state = _STATE_OF[classify_kb(catalog, number, facts)]
        reason = f"superseded by KB{catalog.successor(number)}" if state is KbState.SUPERSEDED else ""
    elif number in facts.installed:
        state, reason = KbState.ALREADY_INSTALLED, "installed"
    elif facts.offered is not None and number in facts.offered:
        state, reason = KbState.PENDING, ""
    else:
        state, reason = KbState.NOT_AVAILABLE, ""
    if state is KbState.NOT_AVAILABLE:
        reason = NOT_OFFERED
    build = ".".join(map(str, entry.build)) if entry and entry.build and not entry.build_inferred else None
    subtype, restart = (entry.subtype, entry.restart_required) if entry is not None else (None, None)
    return RunItem(run_id, instance_id, kb, 0, state, subtype, build, restart, reason=reason)


def install_key(catalog: ProductCatalog, item: RunItem, exploited: frozenset[int]) -> tuple[object, ...]:
    """Servicing stack first, then (``exploited_first``) KBs fixing an exploited CVE, then ``install_order``."""
    number = int(item.kb[2:])
    entry = catalog.kbs.get(number)
    rank, build, kb = install_order(item.subtype, entry.build if entry is not None else None, number)
    if not exploited:
        return (rank, build, kb)
    return (rank != 0, number not in exploited, rank, build, kb)


def plan_policy(store: PolicyStore, options: Mapping[str, object]) -> PlanPolicy:
    """The policy of a plan from its run's options (``baseline``, ``as_of``, ``kbs``)."""
    return PlanPolicy.from_options(store, options)

"""The fleet's exposure, kept current as scans and imports arrive: dashboards ask far more often than either comes.

Assessing 100,000 servers takes seconds; a dashboard, a monitor and a script polling every few
seconds would keep a core busy recomputing the same answer. The store's change counters
(``catalog_revision``, ``fleet_revision``: one-row reads, moved in the same write as the data) and
what deadlines depend on besides the catalog (the day, the SLA policy: ``deadlines_key``) say
whether a kept answer still holds. When they moved, the store's change logs say what moved
(``summary_maintenance.py``): only the servers a scan or a discovery wrote, and the servers of the
products a catalog import touched, are assessed again, at a few lookups each when their patch
level is already known. The whole fleet is assessed again only when the logs cannot tell (a
write that logged nothing, such as a KEV import; a log that no longer reaches back), when most
of the fleet moved anyway, or on a new day or SLA policy.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from autopatch.assessment import AssessmentMemo, fleet_exposure
from autopatch.cve_deadlines import deadlines_key, load_deadline_rules
from autopatch.domain.deadlines import DeadlineRules
from autopatch.errors import NotFoundError
from autopatch.store.base import Store
from autopatch.summary_maintenance import KeptRows, forget_products, stale_products

Filter = frozenset[str] | None
State = tuple[int, int, object]  # catalog revision, fleet revision, deadlines key
REASSESS_AT_MOST = 0.25  # of the fleet: beyond, one pass over the whole fleet costs less than the lookups
REASSESS_ALWAYS = 1_000  # servers a refresh may assess one by one whatever the fleet's size
MOVES_KEPT = 64  # catalog moves remembered for summaries kept at older revisions


@dataclass(frozen=True)
class FleetSummary:
    """Every server's exposure row (shared: callers must not change them), the fleet's totals, and when.

    ``rendered`` keeps pages already serialised (by whoever renders them: the API's JSON), so a
    dashboard polling the same page costs a dictionary lookup, not a serialisation of 100 rows.
    """

    rows: list[dict[str, Any]]
    totals: dict[str, int]
    computed_at: str
    rendered: dict[tuple[Any, ...], bytes] = field(default_factory=dict, compare=False, repr=False)

    def render(self, key: tuple[Any, ...], render: Callable[[], bytes], keep: int = 64) -> bytes:
        """The page ``key`` as ``render`` makes it, made once while this summary holds."""
        if (body := self.rendered.get(key)) is None:
            body = render()
            if len(self.rendered) < keep:
                self.rendered[key] = body
        return body


@dataclass(frozen=True)
class _Kept:
    state: State
    kept: KeptRows
    summary: FleetSummary


def _summary(kept: KeptRows) -> FleetSummary:
    return FleetSummary(kept.rows, kept.totals, datetime.now(UTC).isoformat(timespec="seconds"))


class FleetExposureCache:
    """One process's fleet summaries, one per severity filter, each brought up to date when asked.

    ``cached`` costs three small reads; ``compute`` brings the summary to the store's revisions
    once even when many requests miss together (they wait for the first, then find its answer).
    While one request computes, ``latest`` offers the others the previous answer (with its
    ``computed_at``) instead of a queue: during a patch run every verification scan moves the
    fleet revision.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[Filter, _Kept] = {}
        self._computing: Counter[Filter] = Counter()  # requests computing, per filter
        self._counting = threading.Lock()
        self._memo = AssessmentMemo()
        self._memo_revision = -1  # the catalog revision the memo's catalogs are current for
        # Each move of the memo: (from revision, to revision, the products whose catalogs it
        # dropped, None when it started afresh), so that a summary kept at an older revision
        # knows which of its rows the catalog writes since then made stale.
        self._catalog_moves: list[tuple[int, int, frozenset[str] | None]] = []
        self._rules: tuple[tuple[int, object], DeadlineRules] | None = None

    @staticmethod
    def _state(store: Store) -> State:
        # Overdue counts also move with the day and the SLA policy (a KEV import moves the catalog revision).
        return store.catalog_revision(), store.fleet_revision(), deadlines_key(store)

    def cached(self, store: Store, severities: Collection[str] | None = None) -> FleetSummary | None:
        """The kept summary if the catalog, the fleet and the deadlines are unchanged since it was made; else None."""
        kept = self._kept.get(frozenset(severities) if severities else None)
        return kept.summary if kept is not None and kept.state == self._state(store) else None

    def latest(self, severities: Collection[str] | None = None) -> FleetSummary | None:
        """The last answer for this filter while another request is computing a newer one; else None."""
        wanted = frozenset(severities) if severities else None
        kept = self._kept.get(wanted)
        return kept.summary if kept is not None and self._computing[wanted] > 0 else None

    def compute(self, store: Store, severities: Collection[str] | None = None) -> FleetSummary:
        """Bring the summary up to the store's revisions (incrementally when the logs allow) and keep it.

        The revisions are read before the data: a write landing meanwhile leaves the answer under
        the older revisions, so the next request finds the write in the log and applies it.
        """
        wanted = frozenset(severities) if severities else None
        with self._counting:
            self._computing[wanted] += 1
        try:
            with self._lock:
                state = self._state(store)
                kept = self._kept.get(wanted)
                if kept is not None and kept.state == state:
                    return kept.summary
                self._bring_memo_to(store, state[0])
                rows = self._refreshed(store, kept, state, wanted) if kept is not None else None
                if rows is None:
                    self._memo = self._memo.next_call()  # the levels still in use move over, the rest go
                    rows = KeptRows.of(
                        fleet_exposure(store, (), wanted, memo=self._memo, rules=self._rules_for(store, state))
                    )
                self._kept[wanted] = _Kept(state, rows, _summary(rows))
                return self._kept[wanted].summary
        finally:
            with self._counting:
                self._computing[wanted] -= 1

    def get(self, store: Store, severities: Collection[str] | None = None) -> FleetSummary:
        return self.cached(store, severities) or self.compute(store, severities)

    def _bring_memo_to(self, store: Store, catalog_revision: int) -> None:
        """Forget the catalogs (and their summaries) that catalog writes since the memo's revision touched."""
        if catalog_revision == self._memo_revision:
            return
        changes = store.catalog_changes(self._memo_revision) if self._memo_revision >= 0 else None
        stale = None if changes is None else frozenset(stale_products(self._memo.catalogs, changes))
        if stale is None:
            self._memo = AssessmentMemo()
        else:
            forget_products(self._memo, set(stale))
        self._catalog_moves = [
            *self._catalog_moves[-(MOVES_KEPT - 1) :],
            (self._memo_revision, catalog_revision, stale),
        ]
        self._memo_revision = catalog_revision

    def _stale_since(self, catalog_revision: int) -> set[str] | None:
        """Products whose catalogs the memo dropped since ``catalog_revision``; None when it cannot tell."""
        starts = [index for index, (start, _, _) in enumerate(self._catalog_moves) if start == catalog_revision]
        if not starts:
            return None
        stale: set[str] = set()
        for _, _, products in self._catalog_moves[starts[-1] :]:
            if products is None:
                return None
            stale |= products
        return stale

    def _rules_for(self, store: Store, state: State) -> DeadlineRules:
        """The deadline rules of the state (read once per catalog revision and deadlines key)."""
        key = (state[0], state[2])
        if self._rules is None or self._rules[0] != key:
            self._rules = key, load_deadline_rules(store)
        return self._rules[1]

    def _refreshed(self, store: Store, kept: _Kept, state: State, wanted: Filter) -> KeptRows | None:
        """``kept`` with the servers the logs name assessed again; None when a full assessment is due."""
        catalog_revision, fleet_revision, deadlines = state
        if deadlines != kept.state[2]:  # a new day or SLA policy: every server's overdue counts may move
            return None
        moved: set[str] = set()
        if fleet_revision != kept.state[1]:
            fleet = store.fleet_changes(kept.state[1])
            if fleet is None:
                return None
            moved |= fleet.instance_ids
        if catalog_revision != kept.state[0]:
            products = self._stale_since(kept.state[0])
            if products is None:
                return None
            moved |= {row["instance_id"] for row in kept.kept.rows if row["product"] in products}
        if not moved:  # e.g. an import touching no product of the fleet: the rows stand
            return kept.kept
        if len(moved) > max(REASSESS_ALWAYS, REASSESS_AT_MOST * len(kept.kept.rows)):
            return None
        try:
            fresh = fleet_exposure(store, sorted(moved), wanted, memo=self._memo, rules=self._rules_for(store, state))
        except NotFoundError:  # a scan of a server never discovered (DynamoDB does not refuse one)
            return None
        return kept.kept.replaced(fresh)

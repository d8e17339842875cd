"""The fleet's exposure, kept until the catalog or the fleet changes: dashboards ask far more often than either does.

Assessing 10,000 servers takes seconds; a dashboard, a monitor and a script polling every few
seconds would keep a core busy recomputing the same answer. The store's two change counters
(``catalog_revision``, ``fleet_revision``: one-row reads, bumped in the same write as the data)
say whether a kept answer still holds. When only the fleet moved (a scan, a discovery), the
per-(product, facts) summaries are reused: a scan of one server reassesses only its patch level.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from autopatch.assessment import AssessmentMemo, fleet_exposure, fleet_totals
from autopatch.store.base import Store


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


class FleetExposureCache:
    """One process's kept fleet summaries, per severity filter, valid for one (catalog, fleet) revision pair.

    ``cached`` costs two small reads; ``compute`` assesses once per revision pair even when many
    requests miss together (they wait for the first, then find its answer). While one request
    computes, ``latest`` offers the others the previous answer (with its ``computed_at``) instead
    of a queue: during a patch run every verification scan moves the fleet revision.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._summaries: dict[tuple[int, int, frozenset[str] | None], FleetSummary] = {}
        self._latest: dict[frozenset[str] | None, FleetSummary] = {}
        self._computing: Counter[frozenset[str] | None] = Counter()  # requests computing, per filter
        self._counting = threading.Lock()
        self._memo = AssessmentMemo()
        self._memo_revision = -1

    @staticmethod
    def _key(store: Store, severities: Collection[str] | None) -> tuple[int, int, frozenset[str] | None]:
        return store.catalog_revision(), store.fleet_revision(), frozenset(severities) if severities else None

    def cached(self, store: Store, severities: Collection[str] | None = None) -> FleetSummary | None:
        """The kept summary if the catalog and the fleet are unchanged since it was computed; else None."""
        return self._summaries.get(self._key(store, severities))

    def latest(self, severities: Collection[str] | None = None) -> FleetSummary | None:
        """The last answer for this filter while another request is computing a newer one; else None."""
        wanted = frozenset(severities) if severities else None
        return self._latest.get(wanted) if self._computing[wanted] > 0 else None

    def compute(self, store: Store, severities: Collection[str] | None = None) -> FleetSummary:
        """Assess the fleet (reusing what the catalog revision allows) and keep the answer.

        The revisions are read before the data: a write landing meanwhile leaves the answer under
        the older key, so the next request sees a newer revision and computes again.
        """
        wanted = frozenset(severities) if severities else None
        with self._counting:
            self._computing[wanted] += 1
        try:
            with self._lock:
                key = self._key(store, severities)
                if (kept := self._summaries.get(key)) is not None:
                    return kept
                catalog_revision = key[0]
                if catalog_revision != self._memo_revision:
                    self._memo, self._memo_revision = AssessmentMemo(), catalog_revision
                else:
                    self._memo = self._memo.next_call()
                rows = fleet_exposure(store, severities=severities, memo=self._memo)
                summary = FleetSummary(rows, fleet_totals(rows), datetime.now(UTC).isoformat(timespec="seconds"))
                # Only the current revision pair is worth keeping (one entry per severity filter).
                self._summaries = {k: v for k, v in self._summaries.items() if k[:2] == key[:2]} | {key: summary}
                self._latest[wanted] = summary
                return summary
        finally:
            with self._counting:
                self._computing[wanted] -= 1

    def get(self, store: Store, severities: Collection[str] | None = None) -> FleetSummary:
        return self.cached(store, severities) or self.compute(store, severities)

"""What an open CVE's deadline, KEV listing and exploited flags are on a given day (pure).

``domain/sla.py`` decides one CVE's due date; this module applies it to a product's catalog and to
exposure: the fields every CVE row carries (``kev``, ``exploited``, ``publicly_disclosed``, ``due``,
``overdue``), and per-server counts of open overdue and open exploited CVEs.

Counts come from the same fast summary as the open counts (``domain/exposure.summarise``) run on
the product's catalog narrowed to a few CVEs: whether a CVE is open on a server does not depend on
the other CVEs, so a narrowed catalog's open count is the number of open CVEs among those. Most
open CVEs of a server behind on its updates are long overdue, so what is narrowed to is the small
rest, the CVEs *not* overdue that day (released within the policy's days, or without a deadline):
open overdue = open - open not overdue, per severity. Exploited and KEV-listed CVEs are few too.
Both narrowed catalogs index a few hundred CVEs instead of thousands, and each is kept while its
product's catalog object and the rules (day, policy, KEV entries) stay the same, so the fleet
summary's caches keep working.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from threading import Lock
from typing import Any

from autopatch.domain.catalog import SEVERITIES, AffectedRecord
from autopatch.domain.exposure import ExposureSummary, ServerFacts, summarise
from autopatch.domain.kev import KevEntry
from autopatch.domain.product_catalog import CatalogCve, ProductCatalog
from autopatch.domain.sla import SlaPolicy, cve_due, is_overdue

Risk = tuple[date | None, bool, bool]  # released, exploited, publicly disclosed
OVERDUE_FIELDS = tuple(f"overdue_{severity.lower()}" for severity in SEVERITIES)
# The per-server counts ``DeadlineRules.counts`` adds to an exposure row (and fleet totals sum).
DEADLINE_COUNTS = (*OVERDUE_FIELDS, "overdue_total", "open_exploited")
_VIEWS_KEPT = 128


def merged_risk(current: Risk | None, record: AffectedRecord) -> Risk:
    """One more document's word on a CVE: the earliest release date, exploited/disclosed if any says so."""
    released = record.release_date
    if current is None:
        return released, bool(record.exploited), bool(record.publicly_disclosed)
    earliest = min((day for day in (current[0], released) if day is not None), default=None)
    return earliest, current[1] or bool(record.exploited), current[2] or bool(record.publicly_disclosed)


def published_by(catalog: ProductCatalog, as_of: date) -> ProductCatalog:
    """The catalog without CVEs Microsoft published after ``as_of`` (an out-of-band CVE late in its month)."""
    kept = tuple(cve for cve in catalog.cves if cve.released is None or cve.released <= as_of)
    return catalog if len(kept) == len(catalog.cves) else replace(catalog, cves=kept)


@dataclass(frozen=True)
class DeadlineRules:
    """The SLA policy, the KEV entries listed by ``on``, and the day deadlines are measured on."""

    policy: SlaPolicy
    kev: Mapping[str, KevEntry]
    on: date
    key: tuple[object, ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        listed = frozenset((cve, entry.due_date) for cve, entry in self.kev.items())
        object.__setattr__(self, "key", (self.on, self.policy, hash(listed), len(listed)))

    def due(self, cve: str, severity: str | None, released: date | None) -> date | None:
        entry = self.kev.get(cve)
        return cve_due(severity, released, entry.due_date if entry else None, self.policy)

    def is_exploited(self, cve: CatalogCve) -> bool:
        """Exploited-first's test: Microsoft says exploited, or CISA lists it by ``on``."""
        return cve.exploited or cve.cve in self.kev

    def cve_fields(self, cve: CatalogCve | None, cve_id: str, severity: str | None, still_open: bool) -> dict[str, Any]:
        """The deadline fields of one CVE row; ``overdue`` only for a CVE still open (or, with no server, unfixed)."""
        released = cve.released if cve is not None else None
        due = self.due(cve_id, severity, released)
        return {
            "kev": cve_id in self.kev,
            "exploited": bool(cve.exploited) if cve is not None else False,
            "publicly_disclosed": bool(cve.publicly_disclosed) if cve is not None else False,
            "due": due.isoformat() if due else None,
            "overdue": still_open and is_overdue(due, self.on),
        }

    def not_overdue_view(self, catalog: ProductCatalog) -> ProductCatalog:
        """The product's catalog narrowed to the CVEs not past a deadline on ``on`` (or without one)."""
        return _narrowed(
            catalog, self, "not overdue", lambda c: not is_overdue(self.due(c.cve, c.severity, c.released), self.on)
        )

    def exploited_view(self, catalog: ProductCatalog) -> ProductCatalog:
        """The product's catalog narrowed to exploited or KEV-listed CVEs."""
        return _narrowed(catalog, self, "exploited", self.is_exploited)

    def counts(
        self,
        catalog: ProductCatalog,
        facts: ServerFacts,
        severities: frozenset[str] | None,
        full: ExposureSummary | None = None,
    ) -> dict[str, int]:
        """One server's open overdue CVEs per severity (and in all) and open exploited/KEV CVEs.

        ``full`` is ``summarise(catalog, facts, severities)`` when the caller has it already.
        """
        full = full if full is not None else summarise(catalog, facts, severities)
        recent = summarise(self.not_overdue_view(catalog), facts, severities)
        exploited = summarise(self.exploited_view(catalog), facts, severities)
        overdue = {
            severity: full.open_by_severity.get(severity, 0) - recent.open_by_severity.get(severity, 0)
            for severity in SEVERITIES
        }
        return {
            **{name: overdue[severity] for name, severity in zip(OVERDUE_FIELDS, SEVERITIES, strict=True)},
            "overdue_total": full.open_total - recent.open_total,
            "open_exploited": exploited.open_total,
        }


_views: OrderedDict[tuple[int, tuple[object, ...], str], tuple[ProductCatalog, ProductCatalog]] = OrderedDict()
_views_lock = Lock()


def _narrowed(catalog: ProductCatalog, rules: DeadlineRules, kind: str, keep: Any) -> ProductCatalog:
    # Keyed by the catalog object (held, so its id is not reused) and the rules: the summary's
    # lru caches are keyed by catalog identity, and a new narrowed object each call would miss them.
    key = (id(catalog), rules.key, kind)
    with _views_lock:
        found = _views.get(key)
        if found is not None and found[0] is catalog:
            _views.move_to_end(key)
            return found[1]
    view = replace(catalog, cves=tuple(cve for cve in catalog.cves if keep(cve)))
    with _views_lock:
        _views[key] = (catalog, view)
        while len(_views) > _VIEWS_KEPT:
            _views.popitem(last=False)
    return view

"""Deadline rules and as-of catalogs from the store: what ``assess``, ``exposure`` and ``catalog cves`` apply.

The rules are pure (``domain/sla.py``, ``domain/kev.py``, ``domain/deadlines.py``); this module
reads what they need — the SLA policy, the KEV entries listed by the day, the catalog as it stood
on an as-of date (``domain/release_dates.catalog_as_of``, as plans with ``--as-of`` use it) — and
adds the deadline fields to rows that already exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any, Protocol

from autopatch.catalog_facts import CatalogFacts
from autopatch.domain.catalog import SEVERITIES
from autopatch.domain.deadlines import OVERDUE_FIELDS, DeadlineRules, published_by
from autopatch.domain.product_catalog import CatalogCve, ProductCatalog
from autopatch.domain.release_dates import catalog_as_of, month_release_dates
from autopatch.domain.sla import is_overdue
from autopatch.kev_lookup import kev_entries
from autopatch.sla_policy import SLA_SETTING_KEY, load_sla_policy
from autopatch.store.base import CatalogStore, KevStore, SettingsStore


class DeadlineStore(CatalogStore, KevStore, SettingsStore, Protocol):
    """What deadlines read: the catalog (release evidence), the KEV catalog and the SLA policy."""


def today() -> date:
    return datetime.now(UTC).date()


def deadlines_key(store: SettingsStore) -> tuple[date, str | None]:
    """What deadline counts depend on besides the catalog (a KEV import moves its revision): the day, the policy."""
    return today(), store.stored_settings().get(SLA_SETTING_KEY)


def load_deadline_rules(store: DeadlineStore, as_of: date | None = None) -> DeadlineRules:
    """The rules on ``as_of`` (today when None): the stored SLA policy and the KEV entries listed by then."""
    on = as_of or today()
    return DeadlineRules(load_sla_policy(store), kev_entries(store, on), on)


def catalog_on(store: CatalogStore, catalog: ProductCatalog, as_of: date) -> ProductCatalog:
    """The product's catalog on ``as_of``: KBs and CVEs released later do not exist yet.

    Months are dated by their Patch Tuesday (``catalog_as_of``, the same view ``patch --dry-run
    --as-of`` plans with); a CVE Microsoft published later in its month is dropped too.
    """
    facts = CatalogFacts(store)
    month_dates = month_release_dates(facts.document_dates())
    return published_by(catalog_as_of(catalog, facts.releases(catalog), month_dates, as_of), as_of)


def cves_by_id(catalog: ProductCatalog) -> dict[str, CatalogCve]:
    return {cve.cve: cve for cve in catalog.cves}


def add_decision_fields(rules: DeadlineRules, catalog: ProductCatalog, views: Iterable[dict[str, Any]]) -> None:
    """Give each CVE decision row (``assessment.decision_view``) its ``kev``…``overdue`` fields, in place."""
    known = cves_by_id(catalog)
    for view in views:
        cve = view["cve"]
        view.update(rules.cve_fields(known.get(cve), cve, view["severity"], view["status"] == "open"))


def overdue_summary(views: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Open overdue CVEs per severity, in all, and open exploited/KEV CVEs, from annotated decision rows."""
    open_rows = [view for view in views if view["status"] == "open"]
    overdue = [view for view in open_rows if view["overdue"]]
    return {
        **{
            name: sum(1 for v in overdue if v["severity"] == sev)
            for name, sev in zip(OVERDUE_FIELDS, SEVERITIES, strict=True)
        },
        "overdue_total": len(overdue),
        "open_exploited": sum(1 for view in open_rows if view["exploited"] or view["kev"]),
    }


def add_catalog_fields(
    store: DeadlineStore, rows: list[dict[str, Any]], as_of: date | None = None
) -> list[dict[str, Any]]:
    """``catalog cves`` rows with their deadline fields; with ``as_of``, CVEs not yet published are left out.

    Without a server, ``overdue`` says the deadline has passed on the day: anyone still exposed is late.
    """
    rules = load_deadline_rules(store, as_of)
    kept = []
    for row in rows:
        released = date.fromisoformat(row["release_date"]) if row.get("release_date") else None
        if as_of is not None and released is not None and released > as_of:
            continue
        due = rules.due(row["cve"], row["severity"], released)
        row |= {
            "kev": row["cve"] in rules.kev,
            "exploited": bool(row.get("exploited")),
            "publicly_disclosed": bool(row.get("publicly_disclosed")),
            "due": due.isoformat() if due else None,
            "overdue": is_overdue(due, rules.on),
        }
        kept.append(row)
    return kept

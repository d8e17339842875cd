"""The open CVEs of each scanned server, with their due dates, worked out once per patch level.

History (``scan_history.py``) records them whenever scans are stored, and the SLA and CVE reports
read the fleet's current ones: both need, per server, the ids of its open CVEs with a severity and
a due date (``domain/deadlines.DeadlineRules``, exactly as exposure rows get theirs: days per severity from
the CVE's release, or KEV's due date when earlier, with the KEV entries CISA had listed on the day
judged). A fleet has far fewer
patch levels than servers, so everything is worked out per (product, facts) and per day, and kept
per store while the catalog revision (which KEV imports move too) stays the same.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

from autopatch.assessment import load_product_catalog, server_facts
from autopatch.domain.deadlines import DeadlineRules
from autopatch.domain.exposure import ServerFacts
from autopatch.domain.exposure_history import ASSESSED, ExposureSet, OpenCve, set_text, set_with_digest
from autopatch.domain.fleet import Instance, ScanReport
from autopatch.domain.kev import KevEntry, listed_by
from autopatch.domain.open_cves import catalog_cves, open_positions
from autopatch.domain.os_identity import OsIdentity, identify_product
from autopatch.domain.product_catalog import ProductCatalog
from autopatch.domain.sla import SlaPolicy
from autopatch.errors import NotFoundError
from autopatch.sla_policy import load_sla_policy
from autopatch.store.base import CatalogStore, KevStore, SettingsStore

_MEMO_LIMIT = 8192  # (patch level, day) pairs kept per store before the memo starts afresh


class ExposureStore(CatalogStore, KevStore, SettingsStore, Protocol):
    """What working out exposure sets reads: the catalog, the KEV catalog and the SLA policy."""


@dataclass(frozen=True, slots=True)
class ServerExposure:
    """One scan's exposure: ``assessed`` with its set, or the reason it is not known."""

    instance_id: str
    product: str | None
    build: str
    status: str
    exposure: ExposureSet | None


@dataclass
class _Product:
    catalog: ProductCatalog | None
    missing: str = ""  # why the catalog has no such product


@dataclass
class _Memo:
    revision: int
    products: dict[str, _Product] = field(default_factory=dict)
    kev: list[KevEntry] | None = None
    rules: dict[tuple[date, SlaPolicy], DeadlineRules] = field(default_factory=dict)
    identities: dict[tuple[object, ...], OsIdentity] = field(default_factory=dict)
    facts: dict[tuple[object, ...], ServerFacts] = field(default_factory=dict)
    positions: dict[tuple[str, ServerFacts], tuple[int, ...]] = field(default_factory=dict)
    entries: dict[tuple[str, date, SlaPolicy], list[tuple[OpenCve, str] | None]] = field(default_factory=dict)
    sets: dict[tuple[str, ServerFacts, date, SlaPolicy], ExposureSet] = field(default_factory=dict)
    by_digest: dict[str, ExposureSet] = field(default_factory=dict)


_memos: weakref.WeakKeyDictionary[object, _Memo] = weakref.WeakKeyDictionary()
_memos_lock = threading.Lock()


def _memo(store: ExposureStore) -> _Memo:
    revision = store.catalog_revision()
    with _memos_lock:
        memo = _memos.get(store)
        if memo is None or memo.revision != revision:
            memo = _memos[store] = _Memo(revision)
        if len(memo.sets) > _MEMO_LIMIT:
            memo.sets.clear()
            memo.entries.clear()
            memo.by_digest.clear()
        return memo


class ExposureSets:
    """Works out servers' exposure sets from one store, reusing what an earlier call on it worked out."""

    def __init__(self, store: ExposureStore) -> None:
        self._store = store
        self._memo = _memo(store)
        self._policy = load_sla_policy(store)

    @property
    def policy(self) -> SlaPolicy:
        return self._policy

    def kev_entries(self) -> list[KevEntry]:
        """Every stored KEV entry (read once per catalog revision)."""
        if self._memo.kev is None:
            self._memo.kev = self._store.list_kev_entries()
        return self._memo.kev

    def product(self, name: str) -> _Product:
        products = self._memo.products
        if name not in products:
            try:
                catalog = load_product_catalog(self._store, name)
            except NotFoundError as exc:
                products[name] = _Product(None, str(exc))
            else:
                products[name] = _Product(catalog)
        return products[name]

    def catalog(self, name: str) -> ProductCatalog | None:
        return self.product(name).catalog

    def identify(self, instance: Instance, scan: ScanReport) -> OsIdentity:
        """``scanning.identify``, kept per distinct set of facts (a fleet repeats them)."""
        key = (
            instance.platform_name,
            instance.platform_version,
            scan.build,
            scan.installation_type,
            instance.ami_name,
            instance.tags.get("OS"),
        )
        identities = self._memo.identities
        if key not in identities:
            identities[key] = identify_product(*key)
        return identities[key]

    def facts(self, scan: ScanReport) -> ServerFacts:
        key = (scan.build, scan.installed_kbs, scan.offered)  # the offered tuple: no set built per scan
        known = self._memo.facts
        if key not in known:
            known[key] = server_facts(scan.build, scan.installed_kbs, scan.offered_kbs)
        return known[key]

    def open_positions(self, product: str, facts: ServerFacts) -> tuple[int, ...]:
        """The open CVEs of a patch level (positions in ``catalog_cves``); the product must be in the catalog."""
        key = (product, facts)
        positions = self._memo.positions
        if key not in positions:
            catalog = self.catalog(product)
            assert catalog is not None
            positions[key] = open_positions(catalog, facts)
        return positions[key]

    def rules(self, on: date) -> DeadlineRules:
        """The deadline rules on ``on`` (``domain/deadlines.py``, as exposure rows apply them): policy and KEV then."""
        key = (on, self._policy)
        if key not in self._memo.rules:
            self._memo.rules[key] = DeadlineRules(self._policy, listed_by(self.kev_entries(), on), on)
        return self._memo.rules[key]

    def due(self, product: str, position: int, on: date) -> date | None:
        """The due date of one CVE of the product, as judged on ``on``."""
        catalog = self.catalog(product)
        assert catalog is not None
        cve = catalog_cves(catalog)[position]
        return self.rules(on).due(cve.cve, cve.severity, cve.released)

    def exposure_set(self, product: str, facts: ServerFacts, on: date) -> ExposureSet:
        """The open CVEs of one patch level with their due dates as judged on ``on``."""
        key = (product, facts, on, self._policy)
        sets = self._memo.sets
        if key in sets:
            return sets[key]
        positions = self.open_positions(product, facts)
        entries = self._entries(product, on)
        for position in positions:
            if entries[position] is None:
                entries[position] = self._entry(product, position, on)
        chosen = [entry for position in positions if (entry := entries[position]) is not None]
        text = "\n".join(line for _, line in chosen)
        digest = hashlib.sha256(text.encode()).hexdigest()[:32]
        found = self._memo.by_digest.get(digest)
        if found is None:
            found = self._memo.by_digest[digest] = set_with_digest(digest, tuple(cve for cve, _ in chosen))
        sets[key] = found
        return found

    def _entries(self, product: str, on: date) -> list[tuple[OpenCve, str] | None]:
        """Per position of the product's CVEs: the CVE as judged on ``on`` and its line of ``set_text``, once made."""
        key = (product, on, self._policy)
        if key not in self._memo.entries:
            catalog = self.catalog(product)
            assert catalog is not None
            self._memo.entries[key] = [None] * len(catalog_cves(catalog))
        return self._memo.entries[key]

    def _entry(self, product: str, position: int, on: date) -> tuple[OpenCve, str]:
        catalog = self.catalog(product)
        assert catalog is not None
        cve = catalog_cves(catalog)[position]
        entry = OpenCve(cve.cve, cve.severity, self.due(product, position, on))
        return entry, set_text([entry])

    def server(self, instance: Instance, scan: ScanReport, on: date) -> ServerExposure:
        """One scan's exposure judged on ``on`` (history judges a scan on its own day)."""
        identity = self.identify(instance, scan)
        if identity.product is None:
            return ServerExposure(instance.instance_id, None, scan.build, f"unidentified: {identity.reason}", None)
        known = self.product(identity.product)
        if known.catalog is None:
            return ServerExposure(instance.instance_id, identity.product, scan.build, known.missing, None)
        exposure = self.exposure_set(identity.product, self.facts(scan), on)
        return ServerExposure(instance.instance_id, identity.product, scan.build, ASSESSED, exposure)

    def servers(self, pairs: Iterable[tuple[Instance, ScanReport]], on: date) -> list[ServerExposure]:
        return [self.server(instance, scan, on) for instance, scan in pairs]

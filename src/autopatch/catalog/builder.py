"""Format-neutral assembly of a ``CatalogDocument``: the MSRC derivation rules live here once.

The CVRF XML and JSON parsers only translate syntax into ``VulnerabilityFacts``; the builder
applies MSRC_DATA.md §5: per-product severity and impact, one row per Vendor Fix with a KB
(Release Notes and Known Issue remediations repeat the KB and are ignored), junk CVE ids dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

from autopatch.domain.catalog import (
    AffectedProduct,
    CatalogDocument,
    DocumentInfo,
    KbFix,
    Product,
    Vulnerability,
    kb_article_url,
    normalise_restart,
    normalise_severity,
    normalise_subtype,
    parse_exploit_status,
    parse_supersedes,
)
from autopatch.domain.identifiers import is_cve_id, kb_number


@lru_cache(maxsize=1024)
def _float(raw: str | float | None) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None


@dataclass(slots=True)
class RemediationFacts:
    """One Vendor Fix remediation (the only type that carries a KB to install)."""

    description: str | None
    url: str | None
    supersedence: str | None
    product_ids: list[str]
    restart_required: str | None
    subtype: str | None
    fixed_build: str | None


@dataclass(slots=True)
class VulnerabilityFacts:
    """What one Vulnerability element says, still in Microsoft's terms."""

    cve: str = ""
    title: str = ""
    cwe: list[str] = field(default_factory=list)
    known_affected: list[str] = field(default_factory=list)
    severity: dict[str, str | None] = field(default_factory=dict)
    impact: dict[str, str | None] = field(default_factory=dict)
    scores: dict[str, tuple[float | None, float | None, str | None]] = field(default_factory=dict)
    remediations: list[RemediationFacts] = field(default_factory=list)
    exploit_status: str | None = None
    revision_dates: list[date] = field(default_factory=list)

    def add_threat(self, kind: str, description: str | None, product_ids: list[str]) -> None:
        target = self.severity if kind == "severity" else self.impact
        for product_id in product_ids:
            # A product can be listed twice; a real value beats an empty one.
            if description or product_id not in target:
                target[product_id] = description

    def add_scores(
        self, base: str | float | None, temporal: str | float | None, vector: str | None, ids: list[str]
    ) -> None:
        scores = (_float(base), _float(temporal), vector or None)
        for product_id in ids:
            if product_id:
                self.scores.setdefault(product_id, scores)


class DocumentBuilder:
    """Collects products and vulnerabilities of one document, then builds it."""

    def __init__(self, info: DocumentInfo) -> None:
        self.document = CatalogDocument(info=info)
        self._families: dict[str, str | None] = {}
        self._names: dict[str, str] = {}
        # A CVE can be listed twice in one document (CVE-2025-38501 in 2025-Aug): merge, not repeat.
        self._cves: set[str] = set()
        self._affected: set[tuple[str, str]] = set()
        self._fixes: set[tuple[str, str, int]] = set()

    def add_family(self, product_id: str, family: str | None) -> None:
        if product_id:
            self._families[product_id] = family

    def add_product(self, product_id: str, name: str) -> None:
        if product_id and name:
            self._names[product_id] = name

    def add_vulnerability(self, facts: VulnerabilityFacts) -> None:
        if not is_cve_id(facts.cve):
            return
        exploited, disclosed = parse_exploit_status(facts.exploit_status)
        document = self.document
        if facts.cve not in self._cves:
            self._cves.add(facts.cve)
            document.vulnerabilities.append(
                Vulnerability(
                    cve=facts.cve,
                    title=facts.title,
                    cwe=tuple(dict.fromkeys(cwe for cwe in facts.cwe if cwe)),
                    exploited=exploited,
                    publicly_disclosed=disclosed,
                    release_date=min(facts.revision_dates, default=document.info.initial_release_date),
                )
            )
        affected = dict.fromkeys(pid for pid in facts.known_affected if pid in self._names)
        cve, seen, rows = facts.cve, self._affected, document.affected
        severity, impact, scores = facts.severity.get, facts.impact.get, facts.scores.get
        no_scores = (None, None, None)
        for product_id in affected:  # hundreds of thousands of rows per import: keep this loop lean
            if (cve, product_id) in seen:
                continue
            seen.add((cve, product_id))
            rows.append(
                AffectedProduct(
                    cve,
                    product_id,
                    normalise_severity(severity(product_id)),
                    impact(product_id),
                    *scores(product_id, no_scores),
                )
            )
        self._add_fixes(facts, affected)

    def _add_fixes(self, facts: VulnerabilityFacts, affected: dict[str, None]) -> None:
        seen = self._fixes
        fixes = self.document.fixes
        for remediation in facts.remediations:
            if not remediation.description:
                continue
            kb = kb_number(remediation.description)
            if kb is None:  # package names, "Release Notes", "Click to Run"…
                continue
            subtype = normalise_subtype(remediation.subtype)
            supersedes = parse_supersedes(remediation.supersedence)
            restart = normalise_restart(remediation.restart_required)
            kb_url = kb_article_url(kb)
            for product_id in remediation.product_ids:
                if product_id not in affected or (facts.cve, product_id, kb) in seen:
                    continue
                seen.add((facts.cve, product_id, kb))
                fixes.append(
                    KbFix(
                        facts.cve,
                        product_id,
                        kb,
                        subtype,
                        remediation.fixed_build,
                        supersedes,
                        restart,
                        kb_url,
                        remediation.url,
                    )
                )

    def build(self) -> CatalogDocument:
        self.document.products = [
            Product(product_id=pid, name=name, family=self._families.get(pid)) for pid, name in self._names.items()
        ]
        return self.document

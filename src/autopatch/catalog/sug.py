"""Parser for Security Update Guide OData ``affectedProduct`` records (one record per CVE and product).

SUG has no documents: records are grouped by ``releaseNumber`` (the CVRF month id) into one
catalog document per month, stored as ``sug/<month>`` so that a few SUG pages never replace a
complete CVRF month. Scores arrive as strings, productId as an int, ``kbArticles`` may be empty.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from typing import Any

from autopatch.catalog.builder import DocumentBuilder, RemediationFacts, VulnerabilityFacts
from autopatch.domain.catalog import CatalogDocument, DocumentInfo, collapse_spaces
from autopatch.errors import DocumentFormatError

SUG_PREFIX = "sug/"


def is_sug_page(payload: Any) -> bool:
    if not isinstance(payload, dict) or not isinstance(payload.get("value"), list):
        return False
    context = str(payload.get("@odata.context", ""))
    return "affectedProduct" in context or any(isinstance(r, dict) and "cveNumber" in r for r in payload["value"][:1])


def _date(raw: Any) -> date | None:
    try:
        return date.fromisoformat(str(raw)[:10]) if raw else None
    except ValueError:
        return None


def parse_sug_records(records: list[dict[str, Any]], source: str = "<sug>") -> list[CatalogDocument]:
    """Group ``affectedProduct`` records by release month into catalog documents."""
    by_month: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if not isinstance(record, dict) or not record.get("cveNumber") or record.get("productId") is None:
            raise DocumentFormatError(f"{source}: a SUG record needs cveNumber and productId")
        by_month[str(record.get("releaseNumber") or "unknown")].append(record)
    try:
        return [_document(month, rows) for month, rows in sorted(by_month.items())]
    except (AttributeError, TypeError) as exc:  # JSON has no schema: a list where an object belongs
        raise DocumentFormatError(f"{source}: not SUG records (a value of the wrong type: {str(exc)[:80]})") from exc


def _document(month: str, records: list[dict[str, Any]]) -> CatalogDocument:
    dates = [day for record in records if (day := _date(record.get("releaseDate")))]
    latest = max(dates, default=None)
    builder = DocumentBuilder(
        DocumentInfo(
            document_id=f"{SUG_PREFIX}{month}",
            title=f"Security Update Guide records for {month}",
            revision=latest.strftime("%Y%m%d") if latest else "0",
            initial_release_date=min(dates, default=None),
            current_release_date=latest,
            source_format="sug",
        )
    )
    facts_by_cve: dict[str, VulnerabilityFacts] = {}
    for record in records:
        product_id = str(record["productId"])
        builder.add_product(product_id, collapse_spaces(str(record.get("product") or product_id)))
        builder.add_family(product_id, record.get("productFamily"))
        cve = str(record["cveNumber"]).strip()
        facts = facts_by_cve.setdefault(cve, VulnerabilityFacts(cve=cve, title=""))
        facts.title = facts.title or str(record.get("cveTitle") or "")
        facts.cwe.extend(str(cwe).split(":")[0] for cwe in record.get("cweList") or [])
        facts.known_affected.append(product_id)
        facts.add_threat("severity", record.get("severity"), [product_id])
        facts.add_threat("impact", record.get("impact"), [product_id])
        facts.add_scores(record.get("baseScore"), record.get("temporalScore"), record.get("vectorString"), [product_id])
        if (day := _date(record.get("initialReleaseDate") or record.get("releaseDate"))) is not None:
            facts.revision_dates.append(day)
        for article in record.get("kbArticles") or []:
            facts.remediations.append(
                RemediationFacts(
                    description=str(article.get("articleName") or "") or None,
                    url=article.get("downloadUrl") or None,
                    supersedence=article.get("supercedence") or None,
                    product_ids=[product_id],
                    restart_required=article.get("rebootRequired"),
                    subtype=article.get("downloadName"),
                    fixed_build=article.get("fixedBuildNumber") or None,
                )
            )
    for facts in facts_by_cve.values():
        builder.add_vulnerability(facts)
    return builder.build()

"""Parser for CVRF JSON monthly documents (``/cvrf/v3.0/cvrf/{YYYY-Mon}``, ``Accept: application/json``).

Same data model as the XML form, with integer enums: Threat 0 = Impact, 1 = Exploit Status,
3 = Severity; ProductStatus 3 = Known Affected; Remediation 2 = Vendor Fix (the Known Issue code
moved from 5 to 6 over the years, so only 2 is trusted). Strings hide in ``{"Value": …}``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from autopatch.catalog.builder import DocumentBuilder, RemediationFacts, VulnerabilityFacts
from autopatch.domain.catalog import CatalogDocument, DocumentInfo, collapse_spaces
from autopatch.errors import DocumentFormatError

_IMPACT, _EXPLOIT_STATUS, _SEVERITY = 0, 1, 3
_KNOWN_AFFECTED = 3
_VENDOR_FIX = 2


def _value(node: Any) -> str | None:
    """``{"Value": "x"}`` → "x"; plain strings pass through; empty → None."""
    if isinstance(node, dict):
        node = node.get("Value")
    if node is None:
        return None
    text = str(node).strip()
    return text or None


def _date(raw: Any) -> date | None:
    text = _value(raw)
    if not text or len(text) < 10 or text.startswith("0001"):
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def _ids(node: dict[str, Any]) -> list[str]:
    ids = node.get("ProductID") or []
    return [str(pid) for pid in (ids if isinstance(ids, list) else [ids]) if pid]


def parse_cvrf_json(document: dict[str, Any], source: str = "<json>") -> CatalogDocument:
    """Parse one decoded CVRF JSON document; raise ``DocumentFormatError`` if it is not one.

    JSON carries no schema: a list where an object belongs is the file's fault, so the
    ``AttributeError`` or ``TypeError`` it causes is reported as a format error, not a traceback.
    """
    try:
        tracking = document["DocumentTracking"]
        document_id = _value(tracking["Identification"]["ID"])
    except (KeyError, TypeError) as exc:
        raise DocumentFormatError(f"{source}: no DocumentTracking/Identification/ID: not CVRF JSON") from exc
    if not document_id:
        raise DocumentFormatError(f"{source}: empty document id")
    try:
        return _parse(document, tracking, document_id, source)
    except (AttributeError, TypeError) as exc:
        raise DocumentFormatError(f"{source}: not CVRF JSON (a value of the wrong type: {str(exc)[:80]})") from exc


def _parse(document: dict[str, Any], tracking: dict[str, Any], document_id: str, source: str) -> CatalogDocument:
    revisions = [str(rev.get("Number", "0")) for rev in tracking.get("RevisionHistory") or []]
    builder = DocumentBuilder(
        DocumentInfo(
            document_id=document_id,
            title=_value(document.get("DocumentTitle")) or "",
            revision=DocumentInfo.latest_revision(revisions, source),
            initial_release_date=_date(tracking.get("InitialReleaseDate")),
            current_release_date=_date(tracking.get("CurrentReleaseDate")),
            source_format="cvrf-json",
        )
    )
    tree = document.get("ProductTree") or {}
    _read_branches(tree.get("Branch") or [], builder, family=None)
    for product in tree.get("FullProductName") or []:
        builder.add_product(str(product.get("ProductID", "")), collapse_spaces(product.get("Value") or ""))
    for vulnerability in document.get("Vulnerability") or []:
        builder.add_vulnerability(_vulnerability_facts(vulnerability))
    return builder.build()


def _read_branches(branches: list[dict[str, Any]], builder: DocumentBuilder, family: str | None) -> None:
    for branch in branches:
        name = branch.get("Name") if branch.get("Type") == 1 else family
        for item in branch.get("Items") or []:
            if "ProductID" in item:
                builder.add_family(str(item["ProductID"]), name)
        _read_branches([item for item in branch.get("Items") or [] if "Items" in item], builder, name)


def _vulnerability_facts(raw: dict[str, Any]) -> VulnerabilityFacts:
    facts = VulnerabilityFacts(cve=str(raw.get("CVE") or "").strip(), title=_value(raw.get("Title")) or "")
    facts.cwe = [str(cwe.get("ID") or cwe.get("Value") or "") for cwe in raw.get("CWE") or []]
    for status in raw.get("ProductStatuses") or []:
        if status.get("Type") == _KNOWN_AFFECTED:
            facts.known_affected.extend(_ids(status))
    for threat in raw.get("Threats") or []:
        kind = threat.get("Type")
        if kind == _SEVERITY:
            facts.add_threat("severity", _value(threat.get("Description")), _ids(threat))
        elif kind == _IMPACT:
            facts.add_threat("impact", _value(threat.get("Description")), _ids(threat))
        elif kind == _EXPLOIT_STATUS:
            facts.exploit_status = _value(threat.get("Description"))
    for scores in raw.get("CVSSScoreSets") or []:
        facts.add_scores(scores.get("BaseScore"), scores.get("TemporalScore"), scores.get("Vector"), _ids(scores))
    for remediation in raw.get("Remediations") or []:
        if remediation.get("Type") != _VENDOR_FIX:
            continue
        facts.remediations.append(
            RemediationFacts(
                description=_value(remediation.get("Description")),
                url=_value(remediation.get("URL")),
                supersedence=_value(remediation.get("Supercedence")),
                product_ids=_ids(remediation),
                restart_required=_value(remediation.get("RestartRequired")),
                subtype=_value(remediation.get("SubType")),
                fixed_build=_value(remediation.get("FixedBuild")),
            )
        )
    facts.revision_dates = [day for rev in raw.get("RevisionHistory") or [] if (day := _date(rev.get("Date")))]
    return facts

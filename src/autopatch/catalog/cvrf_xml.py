"""Parser for CVRF 1.1 XML monthly documents (``/cvrf/v3.0/cvrf/{YYYY-Mon}``, ``Accept: application/xml``).

Streams the document with ``lxml.etree.iterparse`` and clears each ``Vulnerability`` once read,
so a 9 MB month never lives in memory as a whole tree.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import date

from lxml import etree

from autopatch.catalog.builder import DocumentBuilder, RemediationFacts, VulnerabilityFacts
from autopatch.domain.catalog import CatalogDocument, DocumentInfo, collapse_spaces
from autopatch.domain.identifiers import kb_number
from autopatch.errors import DocumentFormatError

CVRF = "{http://www.icasi.org/CVRF/schema/cvrf/1.1}"
PROD = "{http://www.icasi.org/CVRF/schema/prod/1.1}"
VULN = "{http://www.icasi.org/CVRF/schema/vuln/1.1}"

_ROOT = f"{CVRF}cvrfdoc"
_TRACKING = f"{CVRF}DocumentTracking"
_TITLE = f"{CVRF}DocumentTitle"
_PRODUCT_TREE = f"{PROD}ProductTree"
_VULNERABILITY = f"{VULN}Vulnerability"
_PRODUCT_ID = f"{VULN}ProductID"
_DESCRIPTION = f"{VULN}Description"


def parse_cvrf_xml(data: bytes, source: str = "<bytes>") -> CatalogDocument:
    """Parse one CVRF XML document; raise ``DocumentFormatError`` for anything that is not one."""
    builder: DocumentBuilder | None = None
    title = ""
    try:
        events = etree.iterparse(
            io.BytesIO(data),
            events=("end",),
            tag=(_TITLE, _TRACKING, _PRODUCT_TREE, _VULNERABILITY),
            remove_blank_text=True,
            collect_ids=False,
            resolve_entities=False,
        )
        for _, element in events:
            tag = element.tag
            if tag == _VULNERABILITY:
                if builder is None:
                    raise DocumentFormatError(f"{source}: Vulnerability before DocumentTracking")
                builder.add_vulnerability(_vulnerability_facts(element))
            elif tag == _PRODUCT_TREE:
                if builder is None:
                    raise DocumentFormatError(f"{source}: ProductTree before DocumentTracking")
                _read_product_tree(element, builder)
            elif tag == _TRACKING:
                builder = DocumentBuilder(_document_info(element, title, source))
            elif tag == _TITLE:
                title = (element.text or "").strip()
            _release(element)
    except etree.XMLSyntaxError as exc:
        raise DocumentFormatError(f"{source}: not well-formed XML ({exc})") from exc
    if builder is None:
        raise DocumentFormatError(f"{source}: no cvrf:DocumentTracking element: not a CVRF document")
    return builder.build()


def _release(element: etree._Element) -> None:
    """Free what has been read: the element and the siblings iterparse already passed."""
    element.clear()
    parent = element.getparent()
    if parent is not None and parent.tag == _ROOT:
        while element.getprevious() is not None:
            del parent[0]


def _text(element: etree._Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    text = element.text.strip()
    return text or None


def _date(raw: str | None) -> date | None:
    """Dates come with and without "Z" and with varying hours: keep the day only."""
    if not raw or len(raw) < 10:
        return None
    try:
        return date.fromisoformat(raw[:10])
    except ValueError:
        return None


def _document_info(tracking: etree._Element, title: str, source: str) -> DocumentInfo:
    document_id = _text(tracking.find(f"{CVRF}Identification/{CVRF}ID"))
    if document_id is None:
        raise DocumentFormatError(f"{source}: DocumentTracking has no Identification/ID")
    numbers = [_text(number) or "0" for number in tracking.iter(f"{CVRF}Number")]
    revision = max(numbers, key=lambda n: DocumentInfo.revision_sort_key(n), default="0")
    return DocumentInfo(
        document_id=document_id,
        title=title,
        revision=revision,
        initial_release_date=_date(_text(tracking.find(f"{CVRF}InitialReleaseDate"))),
        current_release_date=_date(_text(tracking.find(f"{CVRF}CurrentReleaseDate"))),
        source_format="cvrf-xml",
    )


def _read_product_tree(tree: etree._Element, builder: DocumentBuilder) -> None:
    for branch in tree.iter(f"{PROD}Branch"):
        if branch.get("Type") == "Product Family":
            family = branch.get("Name")
            for product in branch.iterchildren(f"{PROD}FullProductName"):
                builder.add_family(product.get("ProductID", ""), family)
    for product in tree.iterchildren(f"{PROD}FullProductName"):
        builder.add_product(product.get("ProductID", ""), collapse_spaces(product.text or ""))


_CVE = f"{VULN}CVE"
_TITLE_V = f"{VULN}Title"
_CWE = f"{VULN}CWE"
_STATUSES = f"{VULN}ProductStatuses"
_THREATS = f"{VULN}Threats"
_SCORE_SETS = f"{VULN}CVSSScoreSets"
_REMEDIATIONS = f"{VULN}Remediations"
_HISTORY = f"{VULN}RevisionHistory"
_FIELD_NAMES = {
    f"{VULN}{name}": name for name in ("Description", "URL", "Supercedence", "RestartRequired", "SubType", "FixedBuild")
}
_BASE_SCORE, _TEMPORAL_SCORE, _VECTOR = (f"{VULN}{name}" for name in ("BaseScore", "TemporalScore", "Vector"))


def _product_ids(element: etree._Element) -> list[str]:
    return [text for child in element.iterchildren(_PRODUCT_ID) if (text := child.text)]


# The loops below touch millions of elements across the full history: they read children
# positionally with tag checks instead of ElementPath lookups, which cost several times more.
def _vulnerability_facts(vulnerability: etree._Element) -> VulnerabilityFacts:
    facts = VulnerabilityFacts()
    for child in vulnerability:
        tag = child.tag
        if tag == _CVE:
            facts.cve = (child.text or "").strip()
        elif tag == _TITLE_V:
            facts.title = (child.text or "").strip()
        elif tag == _CWE:
            facts.cwe.append(child.get("ID") or (child.text or "").strip())
        elif tag == _STATUSES:
            for status in child:
                if status.get("Type") == "Known Affected":
                    facts.known_affected.extend(_product_ids(status))
        elif tag == _THREATS:
            _read_threats(child, facts)
        elif tag == _SCORE_SETS:
            _read_scores(child, facts)
        elif tag == _REMEDIATIONS:
            facts.remediations.extend(_remediations(child))
        elif tag == _HISTORY:
            facts.revision_dates.extend(day for day in (_date(_text(rev.find(f"{CVRF}Date"))) for rev in child) if day)
    return facts


def _read_threats(threats: etree._Element, facts: VulnerabilityFacts) -> None:
    severity, impact = facts.severity, facts.impact
    for threat in threats:
        kind = threat.get("Type")
        if kind == "Exploit Status":
            facts.exploit_status = _text(threat.find(_DESCRIPTION))
            continue
        target = severity if kind == "Severity" else impact if kind == "Impact" else None
        if target is None:
            continue
        description = None
        for part in threat:
            if part.tag == _PRODUCT_ID:
                product_id = part.text
                # A product can be listed twice; a real value beats an empty one.
                if product_id and (description or product_id not in target):
                    target[product_id] = description
            elif part.tag == _DESCRIPTION and part.text:
                description = part.text.strip() or None


def _read_scores(score_sets: etree._Element, facts: VulnerabilityFacts) -> None:
    for score_set in score_sets:
        base = temporal = vector = None
        product_ids: list[str] = []
        for part in score_set:
            tag = part.tag
            if tag == _PRODUCT_ID:
                if part.text:
                    product_ids.append(part.text)
            elif tag == _BASE_SCORE:
                base = part.text
            elif tag == _TEMPORAL_SCORE:
                temporal = part.text
            elif tag == _VECTOR:
                vector = part.text
        facts.add_scores(base, temporal, vector, product_ids)


def _remediations(remediations: etree._Element) -> Iterator[RemediationFacts]:
    for remediation in remediations:
        if remediation.get("Type") != "Vendor Fix":
            continue
        values: dict[str, str | None] = {}
        product_ids: list[str] = []
        for part in remediation:
            if part.tag == _PRODUCT_ID:
                if part.text:
                    product_ids.append(part.text)
            elif (name := _FIELD_NAMES.get(part.tag)) is not None:
                text = part.text
                values[name] = text.strip() or None if text else None
                # Most Vendor Fixes in recent months are Linux packages, not KBs: stop early.
                if name == "Description" and (text is None or kb_number(text) is None):
                    break
        else:
            yield RemediationFacts(
                description=values.get("Description"),
                url=values.get("URL"),
                supersedence=values.get("Supercedence"),
                product_ids=product_ids,
                restart_required=values.get("RestartRequired"),
                subtype=values.get("SubType"),
                fixed_build=values.get("FixedBuild"),
            )

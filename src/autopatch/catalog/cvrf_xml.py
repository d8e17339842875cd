"""Parser for CVRF 1.1 XML monthly documents (``/cvrf/v3.0/cvrf/{YYYY-Mon}``, ``Accept: application/xml``).

Streams the document with ``lxml.etree.iterparse`` from a file-like object and frees each
top-level record (``Vulnerability``, ``ProductTree``…) once read, so a 9 MB month never lives in
memory as a whole tree. Hostile input is refused, never obeyed: entities are not resolved and
external DTDs never loaded (no XXE), libxml2's default limits refuse entity amplification
(billion laughs), nesting deeper than 256 and text nodes over 10 MB, and a record that would hold
more than ``XML_RECORD_MEMORY_LIMIT`` in memory (a tree bomb of tiny elements: 4 bytes of
``<x/>`` cost lxml some 120) is a ``DocumentFormatError`` too.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import date
from typing import Protocol

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

MIB = 1 << 20
# The largest real record (a Vulnerability of 2024-Apr) holds about 4,500 nodes, under 1 MiB.
XML_RECORD_MEMORY_LIMIT = 32 * MIB
_CHECK_EVERY = MIB  # of XML read without a record being released; real records are under 0.7 MB
_BYTES_PER_NODE = 128  # what lxml/libxml2 spend on an element, attribute or text node (measured)
ECHO_LIMIT = 80  # characters of a value quoted back in an error message


class ByteStream(Protocol):
    """What the parsers read from: a file, a gzip stream, a capped or hashing wrapper of one."""

    def read(self, size: int, /) -> bytes: ...


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """A value as quoted in an error message: at most ``limit`` characters, both ends kept (a path's file name)."""
    text = str(value)
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return f"{text[:head]}…{text[len(text) - (limit - 1 - head) :]}"


def parse_cvrf_xml(data: bytes | ByteStream, source: str = "<bytes>") -> CatalogDocument:
    """Parse one CVRF XML document (bytes or a stream); raise ``DocumentFormatError`` for anything that is not one."""
    stream = _GuardedStream(io.BytesIO(data) if isinstance(data, bytes) else data, source)
    builder: DocumentBuilder | None = None
    title = ""
    try:
        events = etree.iterparse(
            stream,
            events=("start", "end"),
            tag=(_ROOT, _TITLE, _TRACKING, _PRODUCT_TREE, _VULNERABILITY),
            remove_blank_text=True,
            remove_comments=True,
            remove_pis=True,
            collect_ids=False,
            resolve_entities=False,
        )
        for event, element in events:
            stream.anchor = element  # the latest element is still in the tree: its root is the document's
            tag = element.tag
            if event == "start" or tag == _ROOT:
                continue
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
            stream.released()
    except etree.XMLSyntaxError as exc:
        raise DocumentFormatError(f"{source}: not well-formed XML ({echo(exc)})") from exc
    if builder is None:
        raise DocumentFormatError(f"{source}: no cvrf:DocumentTracking element: not a CVRF document")
    return builder.build()


class _GuardedStream:
    """Feeds iterparse and, after each MiB read without a record released, weighs the tree still held.

    Releasing records bounds the tree for real documents; a hostile one can pile up elements that
    are never released (inside one record, or outside any), and only counting them tells.
    """

    def __init__(self, stream: ByteStream, source: str) -> None:
        self._stream = stream
        self._source = source
        self._position = 0
        self._check_at = _CHECK_EVERY
        self.anchor: etree._Element | None = None  # an element of the tree, to find its root

    def read(self, size: int, /) -> bytes:
        data = self._stream.read(size)
        self._position += len(data)
        if self._position >= self._check_at:
            self._check_at = self._position + _CHECK_EVERY
            self._check()
        return data

    def released(self) -> None:
        self._check_at = self._position + _CHECK_EVERY

    def _check(self) -> None:
        if self.anchor is None:
            raise DocumentFormatError(f"{self._source}: no CVRF element in the first MiB: not a CVRF document")
        if _held_bytes(self.anchor.getroottree().getroot()) > XML_RECORD_MEMORY_LIMIT:
            raise DocumentFormatError(
                f"{self._source}: one XML record would take more than {XML_RECORD_MEMORY_LIMIT // MIB} MiB"
                " of memory (the cap for a record; real ones take under 1 MiB)"
            )


def _held_bytes(root: etree._Element) -> int:
    held = 0
    for node in root.iter():
        held += _BYTES_PER_NODE * (1 + (node.text is not None) + (node.tail is not None))
        held += len(node.text or "") + len(node.tail or "")
        for value in node.attrib.values():
            held += _BYTES_PER_NODE + len(value)
    return held


def _release(element: etree._Element) -> None:
    """Free what has been read: the element and everything before it (its ancestors' earlier children).

    In a real document every record is a child of the root; a hostile one may nest records
    anywhere, and what precedes them must not pile up either.
    """
    element.clear()
    node = element
    while (parent := node.getparent()) is not None:
        while node.getprevious() is not None:
            del parent[0]
        node = parent


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
    revision = DocumentInfo.latest_revision(numbers, source)
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

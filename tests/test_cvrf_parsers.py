"""Parsers checked against facts read by hand in the real MSRC documents."""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path

import pytest

from autopatch.catalog.cvrf_xml import parse_cvrf_xml
from autopatch.catalog.sources import parse_file, parse_payload
from autopatch.domain.catalog import CatalogDocument, KbFix
from autopatch.errors import DocumentFormatError

from .conftest import CVRF_JSON, SUG, xml_path


def load(month: str) -> CatalogDocument:
    return parse_cvrf_xml(gzip.decompress(xml_path(month).read_bytes()), month)


def fixes(document: CatalogDocument, cve: str, product_id: str) -> dict[int, KbFix]:
    return {f.kb: f for f in document.fixes if f.cve == cve and f.product_id == product_id}


def test_january_2024_fixes_kerberos_cve_on_server_2022_with_kb5034129() -> None:
    document = load("2024-Jan")
    assert (document.info.document_id, document.info.revision) == ("2024-Jan", "369")
    [fix] = fixes(document, "CVE-2024-20674", "11923").values()
    assert fix.kb == 5034129
    assert fix.subtype == "Security Update"
    assert fix.supersedes == (5033118,)
    assert fix.fixed_build == "10.0.20348.2227"
    assert fix.restart_required == "Yes"
    [affected] = [a for a in document.affected if a.cve == "CVE-2024-20674" and a.product_id == "11923"]
    assert (affected.severity, affected.impact, affected.cvss_base) == (
        "Critical",
        "Security Feature Bypass",
        8.8,
    )
    core = fixes(document, "CVE-2024-20674", "11572")[5034127]
    assert (core.supersedes, core.fixed_build) == ((5033371,), "10.0.17763.5329")


def test_every_vendor_fix_is_kept_not_just_the_first() -> None:
    november = load("2024-Nov")
    server_2025 = fixes(november, "CVE-2024-43639", "12436")
    assert set(server_2025) == {5046617, 5046696}
    assert server_2025[5046696].subtype == "Security Hotpatch Update"  # spelled SecurityHotpatchUpdate
    assert server_2025[5046617].supersedes == () and server_2025[5046696].supersedes == ()
    october = load("2025-Oct")
    wsus = fixes(october, "CVE-2025-59287", "11923")
    assert set(wsus) == {5070884, 5070892}
    assert wsus[5070892].subtype == "Standalone Security Update"
    assert {f.fixed_build for f in wsus.values()} == {"10.0.20348.4297"}
    hotpatch = fixes(october, "CVE-2025-59290", "11923")[5065306]
    assert (hotpatch.subtype, hotpatch.supersedes) == ("Security Hotpatch Update", (5063812,))


def test_release_notes_kb_numbers_are_not_counted_as_fixes() -> None:
    document = load("2024-Jan")
    kbs = {f.kb for f in document.fixes if f.product_id == "11923"}
    # Release Notes remediations put 5034129 in SubType; only Vendor Fix rows count, once each.
    assert len([f for f in document.fixes if f.cve == "CVE-2024-20674" and f.product_id == "11923"]) == 1
    assert 5034129 in kbs


def test_junk_cve_ids_are_dropped_and_the_real_cve_kept() -> None:
    document = load("2023-Oct")
    ids = {v.cve for v in document.vulnerabilities}
    assert not any(" " in cve or cve.endswith("-M") for cve in ids)
    assert 5032196 in {f.kb for f in document.fixes if f.cve == "CVE-2023-38039"}


def test_kbs_of_later_months_inside_an_older_document_are_kept() -> None:
    january_2025 = load("2025-Jan")
    later = fixes(january_2025, "CVE-2025-21293", "12436")
    assert later[5065426].fixed_build == "10.0.26100.6584"
    assert later[5065426].supersedes == (5063878,)


def test_comma_separated_supersedence_becomes_a_list() -> None:
    # 2023-Feb: .NET Framework 4.8 on Windows Server 2022 (11676-11923), "5018551, 5021095".
    document = load("2023-Feb")
    net_on_2022 = {f.kb: f for f in document.fixes if f.product_id == "11676-11923"}
    assert net_on_2022[5022735].supersedes == (5018551, 5021095)


def test_json_and_xml_forms_of_2021_july_agree_on_printnightmare() -> None:
    xml = load("2021-Jul")
    [json_document] = parse_payload((CVRF_JSON / "2021-Jul_CVE-2021-34527_release.json").read_bytes(), "json")
    assert (json_document.info.document_id, json_document.info.source_format) == ("2021-Jul", "cvrf-json")
    cve = "CVE-2021-34527"
    assert [v for v in xml.vulnerabilities if v.cve == cve] == json_document.vulnerabilities
    xml_affected = {a.product_id: a for a in xml.affected if a.cve == cve}
    json_affected = {a.product_id: a for a in json_document.affected if a.cve == cve}
    shared = xml_affected.keys() & json_affected.keys()
    assert {"10816", "10855", "11571", "11572"} <= shared
    assert all(xml_affected[pid] == json_affected[pid] for pid in shared)
    xml_fixes = {(f.product_id, f.kb): f for f in xml.fixes if f.cve == cve}
    json_fixes = {(f.product_id, f.kb): f for f in json_document.fixes if f.cve == cve}
    assert json_fixes[("11571", 5004947)] == xml_fixes[("11571", 5004947)]
    assert json_fixes[("11571", 5004947)].fixed_build == "10.0.17763.2029"
    # Revision 6 (JSON, 2021) lacked some FixedBuilds that revision 39 (XML, 2026) has, and MSRC
    # later corrected Windows 10 20H2's build from 10.0.19041.1803 to 10.0.19042.1083.
    corrected = {"11800", "11801", "11802", "11803"}
    for key in xml_fixes.keys() & json_fixes.keys():
        x, j = xml_fixes[key], json_fixes[key]
        assert (x.subtype, x.supersedes, x.restart_required, x.kb_url) == (
            j.subtype,
            j.supersedes,
            j.restart_required,
            j.kb_url,
        )
        if j.fixed_build and key[0] not in corrected:
            assert x.fixed_build == j.fixed_build
    assert json_fixes[("10816", 5004948)].fixed_build is None
    assert xml_fixes[("10816", 5004948)].fixed_build == "10.0.14393.4470"


def test_double_spaces_in_json_product_names_are_collapsed() -> None:
    [document] = parse_payload((CVRF_JSON / "2021-Jul_CVE-2021-34527_release.json").read_bytes(), "json")
    names = {p.product_id: p.name for p in document.products}
    assert names["11572"] == "Windows Server 2019 (Server Core installation)"
    families = {p.product_id: p.family for p in document.products}
    assert families["11571"] == "Windows"


def test_sug_page_matches_the_cvrf_march_2025_row() -> None:
    [document] = parse_payload((SUG / "affectedProduct_2025-Mar_CVE-2025-24066_page.json").read_bytes(), "sug")
    assert document.info.document_id == "sug/2025-Mar"
    sug_fix = fixes(document, "CVE-2025-24066", "10816")[5053594]
    cvrf_fix = fixes(load("2025-Mar"), "CVE-2025-24066", "10816")[5053594]
    assert sug_fix == cvrf_fix._replace(download_url=sug_fix.download_url)
    assert sug_fix.fixed_build == "10.0.14393.7876" and sug_fix.supersedes == (5052006,)
    [affected] = [a for a in document.affected if a.product_id == "10816"]
    assert (affected.severity, affected.impact, affected.cvss_base) == (
        "Important",
        "Elevation of Privilege",
        7.8,
    )


def test_sug_cves_without_kb_are_kept_with_no_fixes() -> None:
    [document] = parse_payload((SUG / "affectedProduct_2025-Mar_cloud_nokb_page.json").read_bytes(), "sug")
    assert {v.cve for v in document.vulnerabilities} == {"CVE-2025-21384", "CVE-2025-26683"}
    assert len(document.affected) == 2 and document.fixes == []


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"hello world", "not MSRC data"),
        (b"<html><body>not cvrf</body></html>", "not a CVRF document"),
        (b"<cvrf:cvrfdoc", "not well-formed XML"),
        (b'{"value": 3}', "neither a CVRF document nor a SUG"),
        (b"{not json", "not valid JSON"),
    ],
)
def test_data_that_is_not_msrc_is_rejected_with_a_clear_message(payload: bytes, message: str) -> None:
    with pytest.raises(DocumentFormatError, match=message):
        parse_payload(payload, "bad-file")


def test_a_truncated_gzip_is_a_format_error() -> None:
    raw = xml_path("2024-Jan").read_bytes()
    with pytest.raises(DocumentFormatError, match="truncated or damaged gzip"):
        parse_payload(raw[: len(raw) // 2], "truncated.xml.gz")


def test_a_file_is_stream_parsed_to_the_same_document_and_hashed_whole() -> None:
    path = xml_path("2024-Jan")
    sha256, [streamed] = parse_file(path)
    assert sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert streamed == load("2024-Jan")
    assert parse_cvrf_xml(io.BytesIO(gzip.decompress(path.read_bytes())), "2024-Jan") == streamed


def test_a_plain_xml_file_and_its_gzip_parse_alike(tmp_path: Path) -> None:
    plain = tmp_path / "2017-May-B.xml"
    plain.write_bytes(gzip.decompress(xml_path("2017-May-B").read_bytes()))
    assert parse_file(plain)[1] == parse_file(xml_path("2017-May-B"))[1]

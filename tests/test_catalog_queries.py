"""Catalog queries on real documents (2021-Jul, 2023-Oct … 2024-Mar, 2024-Nov, 2025-Jan/Sep/Oct)."""

from __future__ import annotations

import pytest

from autopatch.catalog.queries import describe_kb, find_cves, list_products, parse_severities
from autopatch.domain.identifiers import parse_month
from autopatch.errors import NotFoundError, ValidationError
from autopatch.store.sqlite import SqliteStore


def test_products_list_ids_and_counts(catalog: SqliteStore) -> None:
    products = {row["product"]: row for row in list_products(catalog)}
    server_2022 = products["Windows Server 2022"]
    assert server_2022["product_id"] == "11923" and server_2022["product_family"] == "Windows"
    assert server_2022["cves"] > 300 and server_2022["kbs"] >= 10
    assert products["Windows Server 2022 (Server Core installation)"]["product_id"] == "11924"


def test_cves_for_server_2022_in_january_2024_carry_their_kb(catalog: SqliteStore) -> None:
    rows = find_cves(catalog, "Windows Server 2022", month=parse_month("2024-01"))
    assert rows and {row["month"] for row in rows} == {"2024-01"}
    kerberos = next(row for row in rows if row["cve"] == "CVE-2024-20674")
    assert kerberos["severity"] == "Critical" and kerberos["cvss_base"] == 8.8
    assert kerberos["cwe"] == ["CWE-305"]
    [kb] = kerberos["kbs"]
    assert kb == {
        "kb": "KB5034129",
        "subtype": "Security Update",
        "fixed_build": "10.0.20348.2227",
        "supersedes": ["KB5033118"],
        "restart_required": "Yes",
        "url": "https://support.microsoft.com/help/5034129",
        "download_url": "https://catalog.update.microsoft.com/v7/site/Search.aspx?q=KB5034129",
    }


def test_severity_and_cve_filters_narrow_the_result(catalog: SqliteStore) -> None:
    critical = find_cves(catalog, "windows server 2022", severities=parse_severities(["critical"]))
    assert critical and {row["severity"] for row in critical} == {"Critical"}
    one = find_cves(catalog, "Windows Server 2022", cves=["CVE-2024-20674"])
    assert [row["cve"] for row in one] == ["CVE-2024-20674"]


def test_unknown_products_and_severities_are_input_errors(catalog: SqliteStore) -> None:
    with pytest.raises(NotFoundError, match="'Windows Server 2099' is not in the catalog"):
        find_cves(catalog, "Windows Server 2099")
    with pytest.raises(ValidationError, match="severity: 'Urgent'"):
        parse_severities(["Critical,Urgent"])


def test_kb_view_follows_the_supersedence_chain_both_ways(catalog: SqliteStore) -> None:
    view = describe_kb(catalog, "kb5034129")
    assert view["kb"] == "KB5034129" and view["month"] == "2024-01"
    builds = {p["product"]: p["fixed_build"] for p in view["products"]}
    assert builds == {
        "Windows Server 2022": "10.0.20348.2227",
        "Windows Server 2022 (Server Core installation)": "10.0.20348.2227",
    }
    assert {
        "cve": "CVE-2024-20674",
        "title": "Windows Kerberos Security Feature Bypass Vulnerability",
        "severity": "Critical",
    } in view["cves"]
    assert view["supersedes"] == ["KB5033118"]
    # Dec 2023 KB5033118 superseded Nov 2023 KB5032198; Feb 2024 KB5034770 and Mar 2024 KB5035857 follow.
    assert view["supersedes_chain"][:2] == ["KB5033118", "KB5032198"]
    assert view["superseded_by"] == ["KB5034770"]
    assert view["superseded_by_chain"][:2] == ["KB5034770", "KB5035857"]


def test_a_kb_listed_in_an_earlier_document_keeps_its_own_month(catalog: SqliteStore) -> None:
    # The January 2025 document lists September 2025's KB5065426 for one CVE.
    assert describe_kb(catalog, "KB5065426")["month"] == "2025-09"


def test_unknown_and_malformed_kbs_are_rejected(catalog: SqliteStore) -> None:
    with pytest.raises(NotFoundError, match="KB1234567 is not in the catalog"):
        describe_kb(catalog, "KB1234567")
    with pytest.raises(ValidationError, match="kb: 'KB12x'"):
        describe_kb(catalog, "KB12x")

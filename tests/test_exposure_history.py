"""Exposure on real servers of 2016-2019, judged against Microsoft's history (2016-Oct … 2019-Feb and later).

The two servers are the ones a review tried: a Windows Server 2016 whose newest cumulative update is
KB4483229 (December 2018) and a Windows Server 2019 at KB4480116 (January 2019), read from systeminfo.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from autopatch.assessment import assess_facts, load_product_catalog, server_facts
from autopatch.catalog.ingest import import_paths
from autopatch.catalog.queries import find_cves
from autopatch.domain.exposure import assess
from autopatch.domain.identifiers import Month, month_of_document, parse_month
from autopatch.store.sqlite import SqliteStore

from .conftest import xml_path
from .systeminfo_samples import WS2016_HOTFIXES, WS2019_HOTFIXES

ZEROLOGON, PRINTNIGHTMARE, MSHTML = "CVE-2020-1472", "CVE-2021-34527", "CVE-2021-40444"


def by_cve(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {cve["cve"]: cve for cve in result["cves"]}


@pytest.mark.parametrize(
    ("document_id", "month"),
    [
        ("2018-FEB", Month(2018, 2)),
        ("2017-May-B", Month(2017, 5)),
        ("2024-jan", Month(2024, 1)),
        ("2024-Jan", Month(2024, 1)),
    ],
)
def test_document_ids_name_their_month_whatever_the_case_or_suffix(document_id: str, month: Month) -> None:
    assert month_of_document(document_id) == month


def test_february_2018_cves_are_found_by_month(history: SqliteStore) -> None:
    rows = find_cves(history, "Windows Server 2016", month=parse_month("2018-02"))
    assert len(rows) >= 15 and {row["month"] for row in rows} == {"2018-02"}


def test_a_patched_2016_server_has_february_2018_fixed_through_the_next_known_build(history: SqliteStore) -> None:
    # 10.0.14393.4651 is September 2021's cumulative update (KB5005573): it contains February 2018's.
    result = assess_facts(history, "Windows Server 2016", "10.0.14393.4651", month=parse_month("2018-02"))
    assert result["summary"]["open"] == 0 and result["summary"]["fixed"] >= 15
    reasons = {cve["reason"] for cve in result["cves"]}
    assert all("the first later cumulative update with a known build" in reason for reason in reasons)


def test_server_2016_at_the_december_2018_update_is_judged_by_chains_across_products_and_by_month(
    history: SqliteStore,
) -> None:
    result = assess_facts(history, "Windows Server 2016", "10.0.14393", WS2016_HOTFIXES)
    cves = by_cve(result)
    # KB4483229 is listed only under "Internet Explorer 11 on Windows Server 2016": the chain goes on through it.
    assert cves["CVE-2017-0144"]["status"] == "fixed"
    assert cves["CVE-2017-0144"]["reason"] == "KB4483229 is installed and supersedes KB4013429"
    # KB3200970 (November 2016) names no successor: the installed December 2018 update contains it.
    assert cves["CVE-2016-7256"]["status"] == "fixed"
    assert (
        "KB4483229, a cumulative update of 2018-12, is installed and contains KB3200970 of 2016-11"
        in (cves["CVE-2016-7256"]["reason"])
    )
    # What WES-NG hides stays open: a newer KB exists, but none is installed.
    for cve in (ZEROLOGON, PRINTNIGHTMARE, MSHTML):
        assert cves[cve]["status"] == "open", cve
        assert "KB4483229 (2018-12), is not newer than" in cves[cve]["reason"]
    open_before_2019 = [
        cve for cve in result["cves"] if cve["status"] == "open" and cve["month"] < "2019-01" and cve["fix"] != "none"
    ]
    # Only the servicing stack advisory is left: its newest SSU is later than the installed KB4465659.
    assert [cve["cve"] for cve in open_before_2019] == ["ADV990001"]


def test_server_2019_at_the_january_2019_update_has_late_2018_fixed_and_is_not_sent_back_to_december(
    history: SqliteStore,
) -> None:
    result = assess_facts(history, "Windows Server 2019", "10.0.17763", WS2019_HOTFIXES)
    late_2018 = [cve for cve in result["cves"] if "2018-10" <= cve["month"] <= "2018-12" and cve["fix"] != "none"]
    assert len(late_2018) >= 49
    statuses = Counter(cve["status"] for cve in late_2018)
    # CVE-2018-8566's only fix is the November 2018 servicing stack update, not on the cumulative line.
    assert statuses["open"] <= 1, [cve for cve in late_2018 if cve["status"] == "open"]
    assert not any("KB4471332" in cve["fixing_kbs"] for cve in result["cves"])  # older than what is installed
    december = by_cve(result)["CVE-2018-8611"]
    assert december["status"] == "fixed" and "KB4480116 is installed and supersedes KB4471332" in december["reason"]


def test_a_build_without_revision_takes_the_build_of_the_newest_known_installed_update(history: SqliteStore) -> None:
    # KB5005573 (September 2021) has FixedBuild 10.0.14393.4651 in the catalog.
    result = assess_facts(history, "Windows Server 2016", "10.0.14393", ["KB5005573"])
    assert result["build"] == "10.0.14393.4651"
    assert any("taken as 10.0.14393.4651, the fixed build of KB5005573" in warning for warning in result["warnings"])
    assert by_cve(result)[PRINTNIGHTMARE]["status"] == "fixed"


def test_a_fix_listed_only_on_another_build_branch_says_so(history: SqliteStore) -> None:
    # MSRC lists the 2022 (20348) cumulative update as the fix for 23H2 (25398).
    product = "Windows Server 2022, 23H2 Edition (Server Core installation)"
    result = assess_facts(history, product, "10.0.25398.1189")
    bitlocker = by_cve(result)["CVE-2024-43513"]
    assert bitlocker["status"] == "open"
    assert bitlocker["reason"].startswith(
        "Microsoft lists its fixed build only on another build branch (10.0.20348.2751"
    )
    assert "this server is on 10.0.25398" in bitlocker["reason"]


def test_a_kb_listed_at_two_builds_keeps_the_one_on_the_products_branch(history: SqliteStore, tmp_path: Any) -> None:
    # KB5060842 is 10.0.26100.4349 in June 2025 and "10.0.26200.4349" in July 2025 (CVE-2025-49735).
    result = assess_facts(history, "Windows Server 2025", "10.0.26100.4351")
    assert (
        by_cve(result)["CVE-2025-49735"]["reason"]
        == "build 10.0.26100.4351 is at or past KB5060842's fixed build 10.0.26100.4349"
    )
    july_only = SqliteStore(tmp_path / "july.db")
    import_paths(july_only, [xml_path("2025-Jul")], workers=1)
    lone = by_cve(assess_facts(july_only, "Windows Server 2025", "10.0.26100.4351"))["CVE-2025-49735"]
    assert lone["status"] == "open" and "only on another build branch (10.0.26200.4349 for KB5060842)" in lone["reason"]
    july_only.close()


def test_setup_dynamic_updates_are_shown_as_not_offered_with_a_true_reason(catalog_db: Any, tmp_path: Any) -> None:
    store = SqliteStore(tmp_path / "oct2019.db")
    import_paths(store, [xml_path("2019-Oct")], workers=1)
    catalog = load_product_catalog(store, "Windows Server 2016")
    [setup] = [d for d in assess(catalog, server_facts("10.0.14393.3274", [], [])) if d.cve == "CVE-2019-1316"]
    assert setup.status == "open" and setup.fix == "not offered" and setup.fixing_kbs == ("KB4519335",)
    assert "Windows Update does not offer" in setup.reason and "Setup DU" in setup.reason
    store.close()

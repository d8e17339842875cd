"""Exposure decided on real catalog data: builds, supersedence chains, hotpatches, KB classes."""

from __future__ import annotations

from collections import Counter

import pytest

from autopatch.assessment import assess_facts, kb_statuses, load_product_catalog, server_facts
from autopatch.domain.exposure import assess, summarise
from autopatch.domain.identifiers import parse_month
from autopatch.domain.product_catalog import closure
from autopatch.errors import NotFoundError, ValidationError
from autopatch.store.sqlite import SqliteStore

JANUARY_2024_BUILD = "10.0.20348.2227"  # KB5034129, Windows Server 2022


def test_server_2022_at_the_january_2024_build_is_fixed_for_january(catalog: SqliteStore) -> None:
    result = assess_facts(catalog, "Windows Server 2022", JANUARY_2024_BUILD, month=parse_month("2024-01"))
    assert result["summary"]["open"] == 0 and result["summary"]["fixed"] > 30
    kerberos = next(cve for cve in result["cves"] if cve["cve"] == "CVE-2024-20674")
    assert kerberos["status"] == "fixed"
    assert kerberos["reason"] == "build 10.0.20348.2227 is at or past KB5034129's fixed build 10.0.20348.2227"


def test_server_2022_at_the_january_2024_build_is_open_for_february(catalog: SqliteStore) -> None:
    result = assess_facts(catalog, "Windows Server 2022", JANUARY_2024_BUILD, month=parse_month("2024-02"))
    assert (result["summary"]["open"], result["summary"]["fixed"]) == (40, 0)
    # Typed-in facts say nothing about what Windows Update offers.
    assert result["summary"]["open_fix_unknown"] == 40 and {cve["offered"] for cve in result["cves"]} == {None}
    # Feb's KB5034770 is superseded by March's KB5035857 (the newest in this catalog): install that one.
    assert {tuple(cve["fixing_kbs"]) for cve in result["cves"]} == {("KB5035857",)}


def test_only_a_superseding_kb_installed_closes_the_superseded_kbs_cves(catalog: SqliteStore) -> None:
    # An old build with only March 2024's cumulative update listed: January's CVEs are fixed through the chain.
    result = assess_facts(
        catalog, "Windows Server 2022", "10.0.20348.2113", installed=["KB5035857"], month=parse_month("2024-01")
    )
    assert result["summary"]["open"] == 0
    assert {cve["reason"] for cve in result["cves"]} == {"KB5035857 is installed and supersedes KB5034129"}


def test_server_2016_follows_its_own_rollup_chain_without_hotpatches(catalog: SqliteStore) -> None:
    january = assess_facts(catalog, "Windows Server 2016", "10.0.14393.6614", month=parse_month("2024-01"))
    assert january["summary"]["open"] == 0
    february = assess_facts(catalog, "Windows Server 2016", "10.0.14393.6614", month=parse_month("2024-02"))
    assert february["summary"]["fixed"] == 0 and february["summary"]["open"] > 20
    catalog_2016 = load_product_catalog(catalog, "Windows Server 2016")
    assert not any(kb.is_hotpatch for kb in catalog_2016.kbs.values())
    assert all(cve["fixing_kbs"] for cve in february["cves"])


def test_hotpatch_kbs_are_not_recommended_unless_windows_update_offers_them(catalog: SqliteStore) -> None:
    result = assess_facts(catalog, "Windows Server 2025", "10.0.26100.2033", month=parse_month("2024-11"))
    kdc = next(cve for cve in result["cves"] if cve["cve"] == "CVE-2024-43639")
    assert kdc["status"] == "open" and kdc["fixing_kbs"] == ["KB5046617"]  # not hotpatch KB5046696
    product = load_product_catalog(catalog, "Windows Server 2025")
    assert product.kbs[5046696].is_hotpatch


def test_kbs_are_classified_installed_superseded_available_or_not_available(catalog: SqliteStore) -> None:
    product = load_product_catalog(catalog, "Windows Server 2022")
    facts = server_facts(JANUARY_2024_BUILD, installed=["KB5034129"], offered=["KB5035857"])
    statuses = kb_statuses(product, facts)
    assert statuses["KB5033118"] == "Already Installed"  # December 2023: its build is reached
    assert statuses["KB5034129"] == "Already Installed"
    assert statuses["KB5034770"] == "Superseded"  # February, covered by March
    assert statuses["KB5035857"] == "Available"
    not_offered = kb_statuses(product, server_facts(JANUARY_2024_BUILD, installed=[]))
    assert not_offered["KB5035857"] == "Not Available"


def test_supersedence_closure_is_transitive_and_survives_cycles() -> None:
    edges = {1: {2}, 2: {3}, 3: {1, 4}}
    result = closure(edges, [1, 2, 3, 4])
    assert result[1] == {2, 3, 4} and result[4] == frozenset()


def test_bad_typed_facts_are_input_errors(catalog: SqliteStore) -> None:
    with pytest.raises(ValidationError, match=r"build: '10\.0'"):
        assess_facts(catalog, "Windows Server 2022", "10.0")
    with pytest.raises(ValidationError, match=r"build: '10\.0\.２０３４８'"):  # full-width digits are not digits here
        assess_facts(catalog, "Windows Server 2022", "10.0.２０３４８")
    with pytest.raises(ValidationError, match="installed: 'KB12x'"):
        assess_facts(catalog, "Windows Server 2022", JANUARY_2024_BUILD, installed=["KB12x"])
    with pytest.raises(NotFoundError, match="Windows Server 2099"):
        assess_facts(catalog, "Windows Server 2099", JANUARY_2024_BUILD)


@pytest.mark.parametrize(
    ("product", "build", "installed", "offered"),
    [
        ("Windows Server 2022", JANUARY_2024_BUILD, [], []),
        ("Windows Server 2022", "10.0.20348.2113", ["KB5035857"], ["KB5035857"]),
        ("Windows Server 2022", "10.0.20348.2849", [], ["KB5046698"]),  # an offered hotpatch
        ("Windows Server 2025", "10.0.26100.2033", [], []),
        ("Windows Server 2016", "10.0.14393.6614", ["KB5034767"], []),
        ("Windows Server 2019", "10.0.17763.1", [], []),
        ("Windows Server 2022", "10.0.20348.2113", [], ["KB5035857"]),  # the newest update is offered
        ("Windows Server 2025", "10.0.26100.2314", ["KB5046617"], ["KB5065426"]),
    ],
)
def test_the_fast_fleet_summary_agrees_with_the_per_cve_decisions(
    catalog: SqliteStore, product: str, build: str, installed: list[str], offered: list[str]
) -> None:
    product_catalog = load_product_catalog(catalog, product)
    facts = server_facts(build, installed, offered)
    decisions = assess(product_catalog, facts)
    for severities in (None, frozenset({"Critical"}), frozenset({"Critical", "Important"})):
        chosen = [d for d in decisions if severities is None or d.severity in severities]
        summary = summarise(product_catalog, facts, severities)
        open_cves = [d for d in chosen if d.status == "open"]
        assert summary.open_total == len(open_cves)
        assert summary.fixed_total == len(chosen) - len(open_cves)
        assert dict(summary.open_by_severity) == dict(Counter(d.severity for d in open_cves))
        assert {f"KB{kb}" for kb in summary.closing} == {kb for d in open_cves for kb in d.fixing_kbs}
        fixes = Counter(d.fix for d in open_cves)
        assert {kind: count for kind, count in summary.open_by_fix.items() if count} == dict(fixes)


def test_build_less_cumulative_updates_take_the_build_of_the_next_known_one() -> None:
    from autopatch.domain.product_catalog import CatalogKb, infer_cumulative_builds

    kbs = {
        3200970: CatalogKb(3200970, None, None, "Yes", month=(2016, 11)),  # no SubType, no FixedBuild
        4487006: CatalogKb(4487006, None, "Update", "No", month=(2019, 2)),  # not cumulative
        5005573: CatalogKb(5005573, (10, 0, 14393, 4651), "Security Update", "Yes", month=(2021, 9)),
        5006669: CatalogKb(5006669, (10, 0, 14393, 4704), "Security Update", "Yes", month=(2021, 10)),
        5099999: CatalogKb(5099999, None, "Security Update", "Yes", month=(2030, 1)),  # nothing later
    }
    inferred = infer_cumulative_builds(kbs)
    assert inferred[3200970].build == (10, 0, 14393, 4651) and inferred[3200970].build_inferred
    assert inferred[4487006].build is None
    assert inferred[5006669] == kbs[5006669]
    assert inferred[5099999].build is None

"""A KB's release date is the monthly release it belongs to, not the first document that mentions it.

Checked on real KBs of the real documents (``domain/release_dates.py`` says which rule dates which).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from autopatch.assessment import load_product_catalog
from autopatch.catalog.ingest import import_paths
from autopatch.domain.identifiers import Month
from autopatch.domain.release_dates import (
    KbRelease,
    catalog_as_of,
    document_dates,
    month_release_dates,
    next_patch_tuesday,
    patch_tuesday,
)
from autopatch.engine.policy import PlanPolicy
from autopatch.store.sqlite import SqliteStore

from .conftest import xml_path


def releases(store: SqliteStore, product: str) -> dict[int, KbRelease]:
    return PlanPolicy(store, []).releases(load_product_catalog(store, product))


def first_listing(store: SqliteStore, kb: int) -> str:
    """The earliest document (by release) that lists ``kb``: what a naive rule would call its release."""
    dated = document_dates({d.document_id: d.initial_release_date for d in store.list_documents()})
    return min({record.document_id for record in store.fixes_for_kbs([kb])}, key=dated.__getitem__)


def test_patch_tuesday_is_the_second_tuesday() -> None:
    assert patch_tuesday(Month(2024, 2)) == date(2024, 2, 13)
    assert patch_tuesday(Month(2025, 10)) == date(2025, 10, 14)
    assert patch_tuesday(Month(2024, 10)) == date(2024, 10, 8)  # October 2024 starts on a Tuesday
    assert next_patch_tuesday(date(2024, 2, 13)) == date(2024, 3, 12)
    assert next_patch_tuesday(date(2024, 2, 12)) == date(2024, 2, 13)


def test_monthly_cumulative_updates_are_dated_by_their_own_month(catalog: SqliteStore) -> None:
    dated = releases(catalog, "Windows Server 2022")
    assert (dated[5034129].released, dated[5034129].document_id) == (date(2024, 1, 9), "2024-Jan")
    assert (dated[5034770].released, dated[5034770].document_id) == (date(2024, 2, 13), "2024-Feb")
    assert dated[5035857].released == date(2024, 3, 12)
    assert not any(dated[kb].estimated for kb in (5034129, 5034770, 5035857))


def test_a_kb_listed_early_by_a_revised_document_is_dated_by_the_release_it_belongs_to(catalog: SqliteStore) -> None:
    # April 2024's KB5036909 is listed by the revised 2024-Mar document; the 2024-Apr document is not
    # in this catalog. Listed beside March's KB5035857, 62 revisions above its build, it is a later release.
    assert first_listing(catalog, 5036909) == "2024-Mar"
    april = releases(catalog, "Windows Server 2022")[5036909]
    assert april.released == date(2024, 4, 9) and april.estimated and april.document_id is None
    assert "KB5035857" in april.basis
    # November 2023's KB5032196 for Windows Server 2019 is listed by 2023-Oct too (2 rows).
    assert first_listing(catalog, 5032196) == "2023-Oct"
    assert releases(catalog, "Windows Server 2019")[5032196].released == date(2023, 11, 14)


def test_an_out_of_band_update_keeps_its_month(catalog: SqliteStore) -> None:
    # October 2025's WSUS fix KB5070884 (released 2025-10-23) is 3 revisions above October's KB5066782.
    dated = releases(catalog, "Windows Server 2022")
    assert (dated[5070884].released, dated[5070884].document_id) == (date(2025, 10, 14), "2025-Oct")
    assert dated[5066782].released == date(2025, 10, 14)


def test_history_out_of_band_fixes_and_the_update_that_superseded_them(history: SqliteStore) -> None:
    dated = releases(history, "Windows Server 2016")
    # KB4483229 (Internet Explorer, CVE-2018-8653) came out of band on 2018-12-19: its CVE's date.
    assert dated[4483229].released == date(2018, 12, 19) and dated[4483229].document_id == "2018-Dec"
    # July 2021's cumulative update supersedes the PrintNightmare fix of the same month, listed 2 times
    # against its 100+: the same release, not a later one.
    assert history.supersedes([5004238])[5004238] >= {5004948}
    assert dated[5004238].released == dated[5004948].released == date(2021, 7, 13)


@pytest.fixture(scope="session")
def ssu_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ssu-release") / "ssu.db"
    store = SqliteStore(path)
    import_paths(store, [xml_path(month) for month in ("2018-Nov", "2024-Aug", "2024-Sep")], workers=1)
    store.close()
    return path


def test_a_servicing_stack_update_in_adv990001_is_dated_by_its_build(ssu_catalog: Path) -> None:
    store = SqliteStore(ssu_catalog)
    try:
        # ADV990001 (the 2018-Nov document) lists only the newest servicing stack update, revised ever since.
        assert first_listing(store, 5043124) == "2018-Nov"
        ssu = releases(store, "Windows Server 2016")[5043124]
        assert (ssu.released, ssu.document_id) == (date(2024, 9, 10), "2024-Sep")
        assert ssu.basis.startswith("ships with KB5043051")
    finally:
        store.close()


def test_the_catalog_as_of_a_date_has_no_later_kbs_cves_or_supersedence(catalog: SqliteStore) -> None:
    full = load_product_catalog(catalog, "Windows Server 2022")
    dated = PlanPolicy(catalog, []).releases(full)
    months = month_release_dates(
        document_dates({d.document_id: d.initial_release_date for d in catalog.list_documents()})
    )
    before = catalog_as_of(full, dated, months, date(2024, 2, 12))
    assert 5034770 in full.kbs and 5034770 not in before.kbs
    assert 5034770 in full.superseded_by[5034129] and not before.superseded_by[5034129] & {5034770, 5035857}
    assert before.successor(5034129) == 5034129
    assert {"CVE-2024-21412", "CVE-2024-20674"} <= {cve.cve for cve in full.cves}
    assert "CVE-2024-21412" not in {cve.cve for cve in before.cves}  # February's, exploited
    assert "CVE-2024-20674" in {cve.cve for cve in before.cves}  # January's
    on_the_day = catalog_as_of(full, dated, months, date(2024, 2, 13))
    assert 5034770 in on_the_day.kbs and on_the_day.successor(5034129) == 5034770

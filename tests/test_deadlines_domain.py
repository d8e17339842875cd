"""The pure rules of deadlines and KEV (``domain/sla.py``, ``domain/kev.py``): due dates, overdue, the feed."""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path

import pytest

from autopatch.domain.kev import KevEntry, listed_by, parse_kev_bytes
from autopatch.domain.sla import DEFAULT_SLA, SlaPolicy, cve_due, is_overdue
from autopatch.errors import DocumentFormatError, ValidationError

KEV_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "kev" / "known_exploited_vulnerabilities.json.gz"
PATCH_TUESDAY = date(2024, 2, 13)


def test_the_default_policy_gives_15_30_90_180_days_per_severity() -> None:
    assert [DEFAULT_SLA.days_for(s) for s in ("Critical", "Important", "Moderate", "Low")] == [15, 30, 90, 180]
    assert DEFAULT_SLA.days_for("important") == 30
    assert DEFAULT_SLA.days_for(None) is None and DEFAULT_SLA.days_for("Unknown") is None


def test_a_cve_is_due_its_severitys_days_after_release() -> None:
    assert cve_due("Critical", PATCH_TUESDAY, None, DEFAULT_SLA) == date(2024, 2, 28)
    assert cve_due("Important", PATCH_TUESDAY, None, DEFAULT_SLA) == date(2024, 3, 14)


def test_an_earlier_kev_due_date_wins_and_a_later_one_does_not() -> None:
    assert cve_due("Important", PATCH_TUESDAY, date(2024, 3, 5), DEFAULT_SLA) == date(2024, 3, 5)
    assert cve_due("Important", PATCH_TUESDAY, date(2024, 3, 25), DEFAULT_SLA) == date(2024, 3, 14)


def test_a_cve_without_severity_or_release_is_due_only_by_kev() -> None:
    assert cve_due(None, PATCH_TUESDAY, None, DEFAULT_SLA) is None
    assert cve_due("Critical", None, None, DEFAULT_SLA) is None
    assert cve_due(None, None, date(2024, 3, 5), DEFAULT_SLA) == date(2024, 3, 5)


def test_overdue_starts_the_day_after_the_due_date() -> None:
    due = date(2024, 3, 5)
    assert not is_overdue(due, date(2024, 3, 5))
    assert is_overdue(due, date(2024, 3, 6))
    assert not is_overdue(None, date(2099, 1, 1))


@pytest.mark.parametrize("days", [0, -1, 3651, True, 1.5])
def test_a_policy_refuses_days_outside_1_to_3650_naming_the_severity(days: object) -> None:
    with pytest.raises(ValidationError) as error:
        SlaPolicy(critical=days, important=30, moderate=90, low=180)  # type: ignore[arg-type]
    assert error.value.field == "critical"


def test_the_real_kev_catalog_reads_with_its_dates_and_ransomware_use() -> None:
    catalog = parse_kev_bytes(KEV_FILE.read_bytes(), KEV_FILE.name)
    assert catalog.catalog_version == "2025.08.25" and len(catalog.entries) == 1404
    entries = {entry.cve: entry for entry in catalog.entries}
    shortcut = entries["CVE-2024-21412"]
    assert (shortcut.date_added, shortcut.due_date, shortcut.vendor_project) == (
        date(2024, 2, 13),
        date(2024, 3, 5),
        "Microsoft",
    )
    assert sum(1 for e in catalog.entries if e.vendor_project == "Microsoft" and e.product == "Windows") > 100
    assert {e.known_ransomware_campaign_use for e in catalog.entries} == {"Known", "Unknown"}
    plain = parse_kev_bytes(gzip.decompress(KEV_FILE.read_bytes()), "plain.json")
    assert plain.entries == catalog.entries


def test_an_entry_is_kev_from_the_day_cisa_added_it() -> None:
    kernel = KevEntry("CVE-2024-21338", date(2024, 3, 4), date(2024, 3, 25))
    assert listed_by([kernel], date(2024, 3, 3)) == {}
    assert listed_by([kernel], date(2024, 3, 4)) == {"CVE-2024-21338": kernel}
    assert listed_by([kernel], None) == {"CVE-2024-21338": kernel}


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"<cvrf/>", "not JSON"),
        (b'{"title": "x"}', "no 'vulnerabilities' list"),
        (
            b'{"vulnerabilities": [{"cveID": "CVE-2024-1", "dateAdded": "2024-01-01", "dueDate": "2024-01-22"}]}',
            "cveID",
        ),
        (
            b'{"vulnerabilities": [{"cveID": "CVE-2024-21412", "dateAdded": "13/02/2024", "dueDate": "2024-03-05"}]}',
            "dateAdded",
        ),
        (gzip.compress(b"{}", mtime=0)[:-8], "truncated gzip"),
    ],
    ids=["xml", "other-json", "bad-cve", "bad-date", "truncated-gzip"],
)
def test_a_file_that_is_not_the_kev_catalog_is_refused_naming_what_is_wrong(payload: bytes, says: str) -> None:
    with pytest.raises(DocumentFormatError, match=says):
        parse_kev_bytes(payload, "feed.json")


def test_a_gzip_bomb_is_refused_before_it_is_inflated_whole() -> None:
    bomb = gzip.compress(json.dumps({"vulnerabilities": [], "pad": "x" * (65 * 1024 * 1024)}).encode())
    with pytest.raises(DocumentFormatError, match="size cap"):
        parse_kev_bytes(bomb, "bomb.json.gz")

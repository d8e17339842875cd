"""The ``HistoryStore`` port's contract, run against every adapter by ``tests/test_store_contract.py``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from autopatch.domain.exposure_history import ASSESSED, ExposureSet, HistorySpan, OpenCve, exposure_set, history_time
from autopatch.store.base import Store

WEB = "i-0aaaaaaaaaaaaaaa1"
DB = "i-0bbbbbbbbbbbbbbb2"
MONDAY = datetime(2024, 2, 12, 9, 0, tzinfo=UTC)
JANUARY = exposure_set(
    [
        OpenCve("CVE-2024-21338", "Important", date(2024, 3, 14)),
        OpenCve("CVE-2024-21412", "Important", date(2024, 3, 5)),
        OpenCve("CVE-2024-20674", "Critical", date(2024, 1, 24)),
        OpenCve("ADV240001", None, None),
    ]
)
PATCHED = exposure_set([OpenCve("ADV240001", None, None)])


def scan(instance_id: str, hours: int, exposure: ExposureSet | None, build: str = "10.0.20348.2159") -> HistorySpan:
    at = history_time(MONDAY + timedelta(hours=hours))
    if exposure is None:
        return HistorySpan(instance_id, at, at, 1, None, build, "unidentified: no build", None, {}, {})
    return HistorySpan(
        instance_id,
        at,
        at,
        1,
        "Windows Server 2022",
        build,
        ASSESSED,
        exposure.digest,
        exposure.counts,
        exposure.overdue_counts(date.fromisoformat(at[:10])),
    )


class HistoryStoreContract:
    def test_an_empty_store_has_no_history(self, store: Store) -> None:
        assert store.latest_history() == {}
        assert store.history_spans() == []
        assert store.exposure_sets([JANUARY.digest]) == {}

    def test_scans_with_the_same_exposure_extend_one_span_and_another_exposure_starts_one(self, store: Store) -> None:
        store.append_history([scan(WEB, 0, JANUARY), scan(DB, 0, None)], [JANUARY])
        store.append_history([scan(WEB, 24, JANUARY)], [JANUARY])
        store.append_history([scan(WEB, 48, JANUARY), scan(WEB, 72, PATCHED, "10.0.20348.2227")], [JANUARY, PATCHED])
        spans = store.history_spans([WEB])
        assert [(s.first_scanned_at, s.last_scanned_at, s.scans, s.set_digest) for s in spans] == [
            (history_time(MONDAY), history_time(MONDAY + timedelta(hours=48)), 3, JANUARY.digest),
            (history_time(MONDAY + timedelta(hours=72)), history_time(MONDAY + timedelta(hours=72)), 1, PATCHED.digest),
        ]
        assert spans[0].open_counts == JANUARY.counts and spans[0].open_counts["Important"] == 2
        # Overdue counts follow the span's last scan: CVE-2024-20674 was due 2024-01-24.
        assert spans[0].overdue_counts["Critical"] == 1 and spans[0].overdue_counts["Important"] == 0
        latest = store.latest_history()
        assert set(latest) == {WEB, DB}
        assert latest[WEB] == spans[1]
        assert latest[DB].status == "unidentified: no build" and latest[DB].set_digest is None
        assert store.latest_history([DB]) == {DB: latest[DB]}
        assert [s.instance_id for s in store.history_spans()] == [WEB, WEB, DB]  # by instance id, then time

    def test_a_scan_not_newer_than_the_latest_recorded_one_adds_nothing(self, store: Store) -> None:
        store.append_history([scan(WEB, 24, JANUARY)], [JANUARY])
        store.append_history([scan(WEB, 0, PATCHED), scan(WEB, 24, PATCHED)], [PATCHED])
        [span] = store.history_spans()
        assert (span.scans, span.set_digest) == (1, JANUARY.digest)
        assert store.exposure_sets([PATCHED.digest]) == {}  # no span names it: never written

    def test_exposure_sets_are_stored_once_and_read_back_whole(self, store: Store) -> None:
        store.append_history([scan(WEB, 0, JANUARY), scan(DB, 0, JANUARY)], [JANUARY])
        store.append_history([scan(DB, 1, PATCHED)], [PATCHED])
        found = store.exposure_sets([JANUARY.digest, PATCHED.digest, "0" * 32])
        assert found == {JANUARY.digest: JANUARY, PATCHED.digest: PATCHED}
        assert found[JANUARY.digest].cves == JANUARY.cves
        assert found[JANUARY.digest].overdue_counts(date(2024, 3, 6)) == JANUARY.overdue_counts(date(2024, 3, 6))

    def test_a_large_exposure_set_survives_the_round_trip(self, store: Store) -> None:
        # A Windows Server 2016 server never patched has thousands of open CVEs of every severity.
        big = exposure_set(
            OpenCve(f"CVE-{2016 + n % 9}-{10000 + n}", ("Critical", "Important", "Moderate", "Low", None)[n % 5], None)
            for n in range(12_000)
        )
        store.append_history([scan(WEB, 0, big)], [big])
        assert store.exposure_sets([big.digest])[big.digest].ids == big.ids

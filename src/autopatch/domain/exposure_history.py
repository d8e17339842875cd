"""Exposure history: what each scan found open, kept compactly, and what trends it supports (pure).

A security team asks "are we getting better" and "how long do we take to close a Critical": the
answers must come from what was recorded when each scan was stored, never from re-assessing old
scans against today's catalog (which knows CVEs that did not exist then, and KBs that came later).

Two kinds of facts are kept:

- an **exposure set**: the open CVEs of one patch level at one time, each with its severity and
  its due date (``domain/sla.py``) as known then. It is content-addressed (``digest``): the
  thousands of servers at the same patch level share one set, and a set repeated from one day to
  the next is stored once.
- a **span** per server: consecutive scans that found the same exposure (same product, build,
  status and set) are one span, ``first_scanned_at`` … ``last_scanned_at`` with the number of scans
  it stands for. A scan that finds something else starts a new span. Every scan is accounted for,
  and a server scanned daily for a year at one patch level costs one row, not 365.

A scan not newer than the server's latest recorded scan adds nothing (history only moves forward;
the scan itself is still kept with the others). Times are UTC ISO-8601 text with microseconds, so
text order is time order.

Trends read the spans: on a day, a server's exposure is that of its latest span started by the end
of that day (a server keeps its last known exposure until a scan says otherwise). A remediation is
one (server, CVE) going from open in one span to absent from the next assessed one; its time to
remediate runs from the first span where it was open to the first where it no longer was.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property, lru_cache
from itertools import pairwise
from types import MappingProxyType

from autopatch.domain.catalog import SEVERITIES

ASSESSED = "assessed"
UNRATED = "Unrated"  # a CVE Microsoft gave no severity for this product
SEVERITY_KEYS = (*SEVERITIES, UNRATED)
_NO_COUNTS: Mapping[str, int] = MappingProxyType({})


def severity_key(severity: str | None) -> str:
    """The key a CVE is counted under: its severity, or ``Unrated``."""
    return severity if severity in SEVERITIES else UNRATED


def history_time(at: datetime) -> str:
    """A scan time as history stores it: UTC, ISO-8601, to the microsecond (text order is time order)."""
    moment = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def day_of(stamp: str) -> date:
    """The UTC day of a history time."""
    return date.fromisoformat(stamp[:10])


def counts_text(counts: Mapping[str, int]) -> str | None:
    """Counts per severity key as stored: ``"1,4,0,0,2"`` in ``SEVERITY_KEYS`` order (None: no counts)."""
    return ",".join(str(counts.get(key, 0)) for key in SEVERITY_KEYS) if counts else None


@lru_cache(maxsize=4096)
def counts_of(text: str | None) -> Mapping[str, int]:
    """``counts_text`` read back (empty for None: a span whose exposure was not known).

    Kept per text, and so shared between spans: a fleet repeats a few hundred count lines.
    """
    return MappingProxyType(dict(zip(SEVERITY_KEYS, map(int, text.split(",")), strict=True))) if text else _NO_COUNTS


@dataclass(frozen=True, slots=True)
class OpenCve:
    """One open CVE of a patch level as recorded: its severity and its due date then (None: no deadline)."""

    cve: str
    severity: str | None
    due: date | None


@dataclass(frozen=True)
class ExposureSet:
    """The open CVEs of one patch level, sorted by id, under the digest of their canonical text."""

    digest: str
    cves: tuple[OpenCve, ...]
    counts: Mapping[str, int] = field(compare=False, repr=False)  # per severity key, zeros included
    dues: Mapping[str, tuple[date, ...]] = field(compare=False, repr=False)  # per severity key, sorted

    @cached_property
    def ids(self) -> frozenset[str]:
        return frozenset(cve.cve for cve in self.cves)

    @cached_property
    def severities(self) -> Mapping[str, str | None]:
        return {cve.cve: cve.severity for cve in self.cves}

    def open_counts(self) -> dict[str, int]:
        """Open CVEs per severity key (every key present, zeros included)."""
        return dict(self.counts)

    def overdue_counts(self, on: date) -> dict[str, int]:
        """CVEs past their due date on ``on`` (``domain/sla.is_overdue``: the day after the due date), per severity."""
        # bisect_left counts the due dates strictly before ``on``: exactly the CVEs overdue that day.
        return {key: bisect_left(dues, on) for key, dues in self.dues.items()}


def set_text(cves: Iterable[OpenCve]) -> str:
    """The canonical text of a set (one ``CVE<TAB>severity<TAB>due`` line per CVE, by id): what the digest covers."""
    return "\n".join(
        f"{cve.cve}\t{cve.severity or ''}\t{cve.due.isoformat() if cve.due else ''}"
        for cve in sorted(cves, key=lambda c: c.cve)
    )


def exposure_set(cves: Iterable[OpenCve]) -> ExposureSet:
    """The set of these open CVEs (one entry per CVE id: a repeated id keeps its last entry)."""
    unique = sorted({cve.cve: cve for cve in cves}.values(), key=lambda c: c.cve)
    text = set_text(unique)
    return set_with_digest(hashlib.sha256(text.encode()).hexdigest()[:32], tuple(unique))


def set_from_text(digest: str, text: str) -> ExposureSet:
    """A stored set read back from its canonical text (the digest is the stored one: it names the set)."""
    cves = []
    for line in text.split("\n") if text else ():
        cve, severity, due = line.split("\t")
        cves.append(OpenCve(cve, severity or None, date.fromisoformat(due) if due else None))
    return set_with_digest(digest, tuple(cves))


def set_with_digest(digest: str, cves: tuple[OpenCve, ...]) -> ExposureSet:
    """The set of ``cves`` (distinct ids, sorted) under a digest its caller computed from their ``set_text``."""
    counts = dict.fromkeys(SEVERITY_KEYS, 0)
    dues: dict[str, list[date]] = {key: [] for key in SEVERITY_KEYS}
    for cve in cves:
        key = cve.severity if cve.severity in counts else UNRATED
        counts[key] += 1
        if cve.due is not None:
            dues[key].append(cve.due)
    return ExposureSet(digest, cves, counts, {key: tuple(sorted(values)) for key, values in dues.items()})


@dataclass(frozen=True, slots=True)
class HistorySpan:
    """Consecutive scans of one server that found the same exposure.

    ``status`` is ``assessed`` or why the exposure was not known (``unidentified: …``, a product the
    catalog lacks); only an assessed span names a set. The counts are over every severity; overdue
    is as of the span's last scan.
    """

    instance_id: str
    first_scanned_at: str
    last_scanned_at: str
    scans: int
    product: str | None
    build: str | None
    status: str
    set_digest: str | None
    open_counts: Mapping[str, int]
    overdue_counts: Mapping[str, int]

    @property
    def assessed(self) -> bool:
        return self.status == ASSESSED

    def same_exposure(self, other: HistorySpan) -> bool:
        return (self.product, self.build, self.status, self.set_digest) == (
            other.product,
            other.build,
            other.status,
            other.set_digest,
        )


def extend_spans(latest: Mapping[str, HistorySpan], scans: Iterable[HistorySpan]) -> list[HistorySpan]:
    """The spans to store for new one-scan spans, given each server's latest stored span.

    A scan with the latest span's exposure extends it (its last scan, count and overdue counts
    move); another exposure starts a span; a scan not newer than the latest span's last scan is
    dropped. Each touched span is returned once, in its final form, keyed by (instance, first scan).
    """
    current = dict(latest)
    touched: dict[tuple[str, str], HistorySpan] = {}
    for scan in sorted(scans, key=lambda s: (s.instance_id, s.first_scanned_at)):
        span = current.get(scan.instance_id)
        if span is not None and scan.first_scanned_at <= span.last_scanned_at:
            continue
        if span is not None and span.same_exposure(scan):
            span = HistorySpan(
                span.instance_id,
                span.first_scanned_at,
                scan.last_scanned_at,
                span.scans + scan.scans,
                span.product,
                span.build,
                span.status,
                span.set_digest,
                scan.open_counts,
                scan.overdue_counts,
            )
        else:
            span = scan
        current[scan.instance_id] = span
        touched[(span.instance_id, span.first_scanned_at)] = span
    return list(touched.values())


# --- trends -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrendDay:
    """The fleet's exposure at the end of one day, from the spans recorded by then."""

    day: date
    open_counts: Mapping[str, int]
    overdue_counts: Mapping[str, int]
    servers_assessed: int
    servers_unknown: int


def _state_days(spans: Sequence[HistorySpan]) -> list[tuple[date, HistorySpan]]:
    """One server's spans (by first scan), each with the first day it is the state at the end of.

    Of two spans started the same day, the later one is that day's state.
    """
    by_day: dict[date, HistorySpan] = {}
    for span in spans:
        by_day[day_of(span.first_scanned_at)] = span  # spans come in time order: the day's last wins
    return sorted(by_day.items(), key=lambda pair: pair[0])


def daily_trend(
    spans: Iterable[HistorySpan], sets: Mapping[str, ExposureSet], first_day: date, last_day: date
) -> list[TrendDay]:
    """Open and overdue CVEs per severity at the end of each day from ``first_day`` to ``last_day``.

    Counted as a sweep over days: each server's state changes only where a span starts, so the
    work is the number of spans plus the days times the distinct sets in force, not servers times days.
    """
    per_server: dict[str, list[HistorySpan]] = defaultdict(list)
    for span in spans:
        per_server[span.instance_id].append(span)
    starts: dict[date, list[tuple[str | None, int]]] = defaultdict(list)  # day → (state key, +1/-1)
    in_force: dict[str | None, int] = defaultdict(int)  # state key → servers (None: unknown)
    for server_spans in per_server.values():
        server_spans.sort(key=lambda s: s.first_scanned_at)
        states = _state_days(server_spans)
        for index, (start, span) in enumerate(states):
            key = span.set_digest if span.assessed else None
            end = states[index + 1][0] if index + 1 < len(states) else None
            if end is not None and end <= first_day:
                continue  # replaced before the window opens
            if start > last_day:
                break
            in_force_from = max(start, first_day)
            starts[in_force_from].append((key, 1))
            if end is not None and end <= last_day:
                starts[end].append((key, -1))
    trend = []
    day = first_day
    while day <= last_day:
        for key, delta in starts.get(day, ()):
            in_force[key] += delta
        open_counts = dict.fromkeys(SEVERITY_KEYS, 0)
        overdue_counts = dict.fromkeys(SEVERITY_KEYS, 0)
        assessed = 0
        for key, servers in in_force.items():
            if key is None or servers == 0:
                continue
            assessed += servers
            exposure = sets[key]
            for severity, count in exposure.counts.items():
                open_counts[severity] += servers * count
            for severity, count in exposure.overdue_counts(day).items():
                overdue_counts[severity] += servers * count
        trend.append(TrendDay(day, open_counts, overdue_counts, assessed, in_force.get(None, 0)))
        day += timedelta(days=1)
    return trend


# --- time to remediate -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Remediation:
    """One (server, CVE) closed: open from ``opened_at`` (the first span it was open in) to ``closed_at``."""

    instance_id: str
    cve: str
    severity: str | None
    opened_at: str
    closed_at: str

    @property
    def days(self) -> float:
        opened = datetime.fromisoformat(self.opened_at)
        closed = datetime.fromisoformat(self.closed_at)
        return (closed - opened).total_seconds() / 86400


def remediations(spans: Iterable[HistorySpan], sets: Mapping[str, ExposureSet]) -> list[Remediation]:
    """Every (server, CVE) that went from open to no longer open between two assessed spans.

    Spans whose exposure was unknown are passed over (they neither open nor close anything). A CVE
    closed and open again later is two remediations when it closes twice. Consecutive spans with the
    same set change nothing; the differences of two sets are worked out once per pair.
    """
    per_server: dict[str, list[HistorySpan]] = defaultdict(list)
    for span in spans:
        if span.assessed and span.set_digest is not None:
            per_server[span.instance_id].append(span)
    differences: dict[tuple[str, str], tuple[frozenset[str], frozenset[str]]] = {}
    found: list[Remediation] = []
    for instance_id, server_spans in sorted(per_server.items()):
        server_spans.sort(key=lambda s: s.first_scanned_at)
        first = server_spans[0]
        assert first.set_digest is not None
        opened = dict.fromkeys(sets[first.set_digest].ids, first.first_scanned_at)
        for before, after in pairwise(server_spans):
            assert before.set_digest is not None and after.set_digest is not None
            if before.set_digest == after.set_digest:
                continue
            pair = (before.set_digest, after.set_digest)
            if pair not in differences:
                old, new = sets[pair[0]].ids, sets[pair[1]].ids
                differences[pair] = (old - new, new - old)
            closed, appeared = differences[pair]
            for cve in sorted(closed):
                severity = sets[before.set_digest].severities.get(cve)
                found.append(Remediation(instance_id, cve, severity, opened.pop(cve), after.first_scanned_at))
            for cve in appeared:
                opened[cve] = after.first_scanned_at
    return found


@dataclass(frozen=True, slots=True)
class RemediationStats:
    """Mean time to remediate of one severity over the remediations closed in a window."""

    severity: str
    remediated: int
    mean_days: float | None
    median_days: float | None


def remediation_stats(found: Iterable[Remediation], first_day: date, last_day: date) -> list[RemediationStats]:
    """Per severity key: how many (server, CVE) were closed on ``first_day``…``last_day``, and in how many days."""
    durations: dict[str, list[float]] = {key: [] for key in SEVERITY_KEYS}
    for remediation in found:
        if first_day <= day_of(remediation.closed_at) <= last_day:
            durations[severity_key(remediation.severity)].append(remediation.days)
    stats = []
    for key, days in durations.items():
        days.sort()
        middle = len(days) // 2
        median = None if not days else days[middle] if len(days) % 2 else (days[middle - 1] + days[middle]) / 2
        stats.append(RemediationStats(key, len(days), sum(days) / len(days) if days else None, median))
    return stats


def open_since(spans: Sequence[HistorySpan], sets: Mapping[str, ExposureSet], cve: str) -> str | None:
    """When ``cve`` became open on one server without a break until its latest assessed span (None: not open now).

    ``spans`` are one server's, in any order; unknown spans are passed over, as in ``remediations``.
    """
    assessed = sorted((s for s in spans if s.assessed and s.set_digest), key=lambda s: s.first_scanned_at)
    since = None
    for span in assessed:
        assert span.set_digest is not None
        open_now = cve in sets[span.set_digest].ids
        since = (since or span.first_scanned_at) if open_now else None
    return since

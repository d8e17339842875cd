"""Patch baselines: which KBs a server may get, and the rule that holds each other one back (pure).

A baseline is what AWS Patch Manager calls one: approval rules (a minimum severity, classifications,
a number of days after release), KBs approved or rejected by name, and patch groups — here any
``Tag=Value`` of the servers — that attach it to servers. ``decide`` judges one KB against one
baseline and says why, in words a plan shows next to the KB:

1. a KB rejected by name is never installed ("rejected: <reason>");
2. a KB approved by name (or named on ``patch --kb``) is installed whatever the rules and the
   advisories say;
3. a KB with a known-issue advisory (``domain/advisories.py``) is held until approved by name;
4. then the rules: classification, minimum severity, and ``approve_after_days`` after its release
   (``domain/release_dates.py``), which a KB fixing an exploited CVE skips when ``exploited_first``.

Classifications come from the catalog's Vendor Fix SubTypes (as normalised by ``domain/catalog``),
one name per kind of update, so a baseline never needs Microsoft's spellings:

==================  ===============================================================================
security            Security Update (on Windows Server 2016 and later, the monthly cumulative update)
cumulative          Monthly Rollup, Cumulative Update, Alternate Cumulative, IE Cumulative, Preview
                    Rollup, and no SubType (MSRC left it empty on cumulative updates before 2018)
security-only       Security Only (the non-cumulative monthly update of Windows Server 2012 R2 and older)
standalone          Standalone Security Update, Standalone (out-of-band fixes such as the WSUS one of
                    October 2025, and KB5034439's Recovery Environment update)
servicing-stack     Servicing Stack Update
hotpatch            Security Hotpatch Update, Azure Hotpatch (Azure Edition and Arc-enrolled servers)
dynamic-update      Setup DU, SafeOS DU, Dynamic Update (Windows Setup media; never offered to servers)
other               anything else ("Update", "Other", …)
==================  ===============================================================================

``rings`` and ``snapshot`` are kept as given for the rollout and snapshot features; nothing here
reads them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from autopatch.domain.advisories import KnownIssue
from autopatch.domain.catalog import SEVERITIES
from autopatch.domain.identifiers import parse_kb
from autopatch.errors import ValidationError

CLASSIFICATIONS: dict[str, frozenset[str | None]] = {
    "security": frozenset({"Security Update", "VIA Processors Security Update"}),
    "cumulative": frozenset(
        {
            None,
            "Monthly Rollup",
            "Cumulative Update",
            "Alternate Cumulative",
            "IE Cumulative",
            "Preview Rollup",
            "VIA Processors Monthly Rollup",
        }
    ),
    "security-only": frozenset({"Security Only", "VIA Processors Security Only"}),
    "standalone": frozenset({"Standalone Security Update", "Standalone"}),
    "servicing-stack": frozenset({"Servicing Stack Update"}),
    "hotpatch": frozenset({"Security Hotpatch Update", "Azure Hotpatch"}),
    "dynamic-update": frozenset({"Setup DU", "SafeOS DU", "Dynamic Update"}),
    "other": frozenset(),
}
_CLASS_OF = {subtype: name for name, subtypes in CLASSIFICATIONS.items() for subtype in subtypes}

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
NAME_RULE = "a baseline name is 1 to 64 ASCII letters, digits, '.', '_' or '-', e.g. prod-servers"
_TAG_KEY = re.compile(r"[^=\x00-\x1f\x7f]{1,128}")
_TAG_VALUE = re.compile(r"[^\x00-\x1f\x7f]{0,256}")
GROUP_RULE = "a group is Tag=Value (an EC2 tag key of 1-128 characters and its value), e.g. Environment=prod"
MAX_APPROVE_AFTER_DAYS = 365
MAX_REASON = 500
MAX_RINGS = 1000
MAX_KBS = 1000
MAX_GROUPS = 50


def classification_of(subtype: str | None) -> str:
    """The baseline classification of a normalised SubType (``other`` when it is none of the known ones)."""
    return _CLASS_OF.get(subtype, "other")


@dataclass(frozen=True, slots=True)
class RejectedKb:
    kb: str
    reason: str


@dataclass(frozen=True, slots=True)
class Baseline:
    """Approval rules and by-name decisions, attached to servers by tag (``groups``) or named on a run."""

    name: str
    min_severity: str | None = None  # None: every severity, unrated included
    classifications: tuple[str, ...] = ()  # empty: every classification
    approve_after_days: int = 0
    approved: tuple[str, ...] = ()
    rejected: tuple[RejectedKb, ...] = ()
    exploited_first: bool = False
    groups: tuple[str, ...] = ()  # "Tag=Value"
    rings: str | None = None  # kept for the rollout feature, not interpreted here
    snapshot: bool = False  # kept for the snapshot feature, not interpreted here
    created_at: str = ""
    updated_at: str = ""

    def rejection(self, kb: str) -> str | None:
        return next((entry.reason for entry in self.rejected if entry.kb == kb), None)

    def matches(self, tags: Mapping[str, str]) -> bool:
        """True when the server has one of the baseline's ``Tag=Value`` groups."""
        return any(tags.get(key) == value for key, value in map(split_group, self.groups))


# --- validation: one checker per field, each naming the field and the rule ----------------------


def parse_baseline_name(value: str, field: str = "name") -> str:
    text = value.strip() if isinstance(value, str) else ""
    if _NAME.fullmatch(text) is None:
        raise ValidationError(field, value, NAME_RULE)
    return text


def parse_min_severity(value: str | None, field: str = "min_severity") -> str | None:
    if value is None or not value.strip():
        return None
    name = value.strip().capitalize()
    if name not in SEVERITIES:
        raise ValidationError(field, value, f"a severity is one of {', '.join(SEVERITIES)}")
    return name


def parse_classifications(values: Iterable[str], field: str = "classifications") -> tuple[str, ...]:
    """Names from ``CLASSIFICATIONS`` (comma lists allowed, any case), each once, in the table's order."""
    wanted: set[str] = set()
    for value in values:
        for part in str(value).split(","):
            name = part.strip().lower()
            if not name:
                continue
            if name not in CLASSIFICATIONS:
                raise ValidationError(field, part.strip(), f"a classification is one of {', '.join(CLASSIFICATIONS)}")
            wanted.add(name)
    return tuple(name for name in CLASSIFICATIONS if name in wanted)


def parse_days(value: int, field: str = "approve_after_days") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_APPROVE_AFTER_DAYS:
        raise ValidationError(field, value, f"a number of days from 0 to {MAX_APPROVE_AFTER_DAYS}")
    return value


def parse_kbs(values: Iterable[str], field: str) -> tuple[str, ...]:
    """Canonical KB ids (``parse_kb``), each once, in the order given; at most ``MAX_KBS``."""
    kbs = tuple(dict.fromkeys(parse_kb(str(value), field) for value in values))
    if len(kbs) > MAX_KBS:
        raise ValidationError(field, f"{len(kbs)} KBs", f"at most {MAX_KBS} KBs")
    return kbs


def parse_reason(value: str | None, field: str = "reason") -> str:
    text = " ".join(value.split()) if isinstance(value, str) else ""
    if not text or len(text) > MAX_REASON or not text.isprintable():
        raise ValidationError(
            field, value, f"a reason is 1 to {MAX_REASON} printable characters, e.g. 'breaks SQL 2016'"
        )
    return text


def split_group(group: str) -> tuple[str, str]:
    key, _, value = group.partition("=")
    return key, value


def parse_group(value: str, field: str = "group") -> str:
    """``Tag=Value`` with the key and value trimmed; the key may not hold '=' or control characters."""
    key, sep, tag_value = str(value).partition("=")
    key, tag_value = key.strip(), tag_value.strip()
    if not sep or _TAG_KEY.fullmatch(key) is None or _TAG_VALUE.fullmatch(tag_value) is None:
        raise ValidationError(field, value, GROUP_RULE)
    return f"{key}={tag_value}"


def parse_groups(values: Iterable[str], field: str = "group") -> tuple[str, ...]:
    groups = tuple(dict.fromkeys(parse_group(value, field) for value in values))
    if len(groups) > MAX_GROUPS:
        raise ValidationError(field, f"{len(groups)} groups", f"at most {MAX_GROUPS} groups")
    return groups


def parse_rings(value: str | None, field: str = "rings") -> str | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    if len(text) > MAX_RINGS or not text.isprintable():
        raise ValidationError(field, value, f"rings are at most {MAX_RINGS} printable characters")
    return text


def check_baseline(baseline: Baseline) -> Baseline:
    """Every field checked and made canonical; a KB both approved and rejected is refused."""
    rejected = tuple(
        RejectedKb(kb, parse_reason(entry.reason))
        for kb, entry in {parse_kb(entry.kb, "reject"): entry for entry in baseline.rejected}.items()
    )
    checked = Baseline(
        name=parse_baseline_name(baseline.name),
        min_severity=parse_min_severity(baseline.min_severity),
        classifications=parse_classifications(baseline.classifications),
        approve_after_days=parse_days(baseline.approve_after_days),
        approved=parse_kbs(baseline.approved, "approve"),
        rejected=rejected,
        exploited_first=bool(baseline.exploited_first),
        groups=parse_groups(baseline.groups),
        rings=parse_rings(baseline.rings),
        snapshot=bool(baseline.snapshot),
        created_at=baseline.created_at,
        updated_at=baseline.updated_at,
    )
    if len(checked.rejected) > MAX_KBS:
        raise ValidationError("reject", f"{len(checked.rejected)} KBs", f"at most {MAX_KBS} KBs")
    both = sorted(set(checked.approved) & {entry.kb for entry in checked.rejected})
    if both:
        raise ValidationError("approve", both[0], "a KB cannot be both approved and rejected by name")
    return checked


def baseline_record(baseline: Baseline) -> dict[str, Any]:
    """The baseline as plain JSON values: what the stores keep and the API and CLI show."""
    return {
        "name": baseline.name,
        "min_severity": baseline.min_severity,
        "classifications": list(baseline.classifications),
        "approve_after_days": baseline.approve_after_days,
        "approved": list(baseline.approved),
        "rejected": [{"kb": entry.kb, "reason": entry.reason} for entry in baseline.rejected],
        "exploited_first": baseline.exploited_first,
        "groups": list(baseline.groups),
        "rings": baseline.rings,
        "snapshot": baseline.snapshot,
        "created_at": baseline.created_at,
        "updated_at": baseline.updated_at,
    }


def baseline_from_record(record: Mapping[str, Any]) -> Baseline:
    """The inverse of ``baseline_record`` (stored values were checked when stored)."""
    return Baseline(
        name=str(record["name"]),
        min_severity=record.get("min_severity"),
        classifications=tuple(record.get("classifications") or ()),
        approve_after_days=int(record.get("approve_after_days") or 0),
        approved=tuple(record.get("approved") or ()),
        rejected=tuple(RejectedKb(str(e["kb"]), str(e["reason"])) for e in record.get("rejected") or ()),
        exploited_first=bool(record.get("exploited_first")),
        groups=tuple(record.get("groups") or ()),
        rings=record.get("rings"),
        snapshot=bool(record.get("snapshot")),
        created_at=str(record.get("created_at") or ""),
        updated_at=str(record.get("updated_at") or ""),
    )


def describe_rules(baseline: Baseline) -> list[str]:
    """The baseline's rules in words, one per line: what ``baseline show`` and the dashboard print."""
    lines = [
        "severity: " + (f"{baseline.min_severity} and above" if baseline.min_severity else "any (unrated included)"),
        "classifications: " + (", ".join(baseline.classifications) or "all"),
        (
            f"approved {baseline.approve_after_days} days after release"
            if baseline.approve_after_days
            else "approved on release"
        )
        + (
            " (KBs fixing an exploited CVE: on release)"
            if baseline.exploited_first and baseline.approve_after_days
            else ""
        ),
    ]
    if baseline.exploited_first:
        lines.append("exploited first: KBs fixing an exploited CVE install right after the servicing stack")
    if baseline.approved:
        lines.append("approved by name: " + ", ".join(baseline.approved))
    lines.extend(f"rejected: {entry.kb} ({entry.reason})" for entry in baseline.rejected)
    lines.append("servers: " + (", ".join(baseline.groups) or "only runs that name it (no group)"))
    return lines


# --- decisions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KbFacts:
    """What a decision needs to know about one KB on one product."""

    kb: str
    released: date | None
    classification: str
    severity: str | None  # the highest severity of the CVEs it fixes on the product
    exploited: bool = False  # fixes a CVE Microsoft marks "Exploited: Yes"
    advisory: KnownIssue | None = None
    named: bool = False  # named on the run (``patch --kb``): approved by name


@dataclass(frozen=True, slots=True)
class KbDecision:
    kb: str
    approved: bool
    rule: str


def _rank(severity: str | None) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def decide(baseline: Baseline | None, facts: KbFacts, on: date) -> KbDecision:
    """One KB under one baseline (or none) on day ``on``: approved, or held with the rule that held it."""
    kb = facts.kb
    reason = baseline.rejection(kb) if baseline else None
    if reason is not None:
        return KbDecision(kb, False, f"rejected: {reason}")
    if facts.named or (baseline is not None and kb in baseline.approved):
        return KbDecision(kb, True, "approved by name" + (" (named on the run)" if facts.named else ""))
    if facts.advisory is not None:
        return KbDecision(kb, False, f"held: known issue {facts.advisory.summary}, approve by name to install")
    if baseline is None:
        return KbDecision(kb, True, "approved: no baseline applies")
    if baseline.classifications and facts.classification not in baseline.classifications:
        return KbDecision(kb, False, f"held: classification {facts.classification} not in baseline")
    if baseline.min_severity and _rank(facts.severity) > _rank(baseline.min_severity):
        return KbDecision(
            kb, False, f"held: severity {facts.severity or 'unrated'} below the minimum {baseline.min_severity}"
        )
    days = baseline.approve_after_days
    if days == 0:
        return KbDecision(kb, True, "approved: meets the baseline's rules")
    if facts.released is None:
        return KbDecision(kb, False, f"held: release date unknown, approve-after-days {days} cannot be checked")
    if baseline.exploited_first and facts.exploited:
        return KbDecision(kb, True, f"approved: fixes an exploited CVE (exploited first), released {facts.released}")
    if facts.released + timedelta(days=days) > on:
        return KbDecision(kb, False, f"held: released {facts.released}, approve-after-days {days} not reached on {on}")
    return KbDecision(kb, True, f"approved: released {facts.released}, {days} days before {on} or more")


def decide_all(baselines: Sequence[Baseline], facts: KbFacts, on: date) -> KbDecision:
    """Under several baselines a KB must be approved by each: the first that holds it (by name) says why."""
    if not baselines:
        return decide(None, facts, on)
    decisions = [(baseline.name, decide(baseline, facts, on)) for baseline in sorted(baselines, key=lambda b: b.name)]
    for name, decision in decisions:
        if not decision.approved:
            return decision if len(decisions) == 1 else KbDecision(facts.kb, False, f"{name}: {decision.rule}")
    return decisions[0][1]


def matching_baselines(baselines: Iterable[Baseline], tags: Mapping[str, str]) -> list[Baseline]:
    """The baselines whose groups include one of the server's tags, by name."""
    return sorted((baseline for baseline in baselines if baseline.matches(tags)), key=lambda b: b.name)


@dataclass(frozen=True, slots=True)
class BaselineChange:
    """A partial update (``baseline update``, the API's PUT sends every field): None leaves a field as it is.

    Approving a rejected KB takes it off the rejected list, and rejecting an approved one off the
    approved list: the latest decision about a KB is the one that counts.
    """

    min_severity: str | None = None
    clear_min_severity: bool = False
    classifications: tuple[str, ...] | None = None
    approve_after_days: int | None = None
    approve: tuple[str, ...] = ()
    unapprove: tuple[str, ...] = ()
    reject: tuple[str, ...] = ()
    reason: str | None = None
    unreject: tuple[str, ...] = ()
    exploited_first: bool | None = None
    groups: tuple[str, ...] | None = None
    rings: str | None = None
    snapshot: bool | None = None


def apply_change(baseline: Baseline, change: BaselineChange) -> Baseline:
    """``baseline`` with ``change`` applied and checked (``check_baseline``)."""
    approve, reject = parse_kbs(change.approve, "approve"), parse_kbs(change.reject, "reject")
    if reject and change.reason is None:
        raise ValidationError("reason", None, "rejecting a KB needs a reason (--reason TEXT)")
    unapprove = set(parse_kbs(change.unapprove, "unapprove")) | set(reject)
    unreject = set(parse_kbs(change.unreject, "unreject")) | set(approve)
    approved = tuple(kb for kb in baseline.approved if kb not in unapprove) + approve
    reason = parse_reason(change.reason) if reject else ""
    rejected = tuple(entry for entry in baseline.rejected if entry.kb not in unreject and entry.kb not in reject)
    rejected += tuple(RejectedKb(kb, reason) for kb in reject)
    updated = Baseline(
        name=baseline.name,
        min_severity=None if change.clear_min_severity else (change.min_severity or baseline.min_severity),
        classifications=baseline.classifications if change.classifications is None else change.classifications,
        approve_after_days=(
            baseline.approve_after_days if change.approve_after_days is None else change.approve_after_days
        ),
        approved=approved,
        rejected=rejected,
        exploited_first=baseline.exploited_first if change.exploited_first is None else change.exploited_first,
        groups=baseline.groups if change.groups is None else change.groups,
        rings=baseline.rings if change.rings is None else change.rings,
        snapshot=baseline.snapshot if change.snapshot is None else change.snapshot,
        created_at=baseline.created_at,
        updated_at=baseline.updated_at,
    )
    return check_baseline(updated)

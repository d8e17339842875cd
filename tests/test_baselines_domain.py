"""Baseline rules (pure): each decision and its words, the validators, partial updates, tag matching."""

from __future__ import annotations

from datetime import date

import pytest

from autopatch.domain.advisories import known_issue, known_issues_for
from autopatch.domain.baselines import (
    Baseline,
    BaselineChange,
    KbFacts,
    RejectedKb,
    apply_change,
    baseline_from_record,
    baseline_record,
    check_baseline,
    classification_of,
    decide,
    decide_all,
    describe_rules,
    matching_baselines,
    parse_classifications,
    parse_group,
)
from autopatch.errors import ValidationError

FEBRUARY = KbFacts("KB5034770", date(2024, 2, 13), "security", "Critical")
WINRE = KbFacts("KB5034439", date(2024, 1, 9), "standalone", "Important", advisory=known_issue("KB5034439"))


def test_approve_after_days_counts_from_the_release_day() -> None:
    week = Baseline("week", approve_after_days=7)
    assert decide(week, FEBRUARY, date(2024, 2, 19)).rule == (
        "held: released 2024-02-13, approve-after-days 7 not reached on 2024-02-19"
    )
    assert decide(week, FEBRUARY, date(2024, 2, 20)).approved
    assert decide(Baseline("now"), FEBRUARY, date(2024, 2, 13)).approved


def test_rejected_wins_over_everything_and_approved_by_name_over_rules_and_advisories() -> None:
    strict = Baseline(
        "strict",
        classifications=("servicing-stack",),
        approve_after_days=30,
        approved=("KB5034439", "KB5034770"),
        rejected=(RejectedKb("KB5034770", "breaks SQL"),),
    )
    assert decide(strict, FEBRUARY, date(2024, 2, 14)) == decide(strict, FEBRUARY, date(2025, 1, 1))
    assert decide(strict, FEBRUARY, date(2024, 2, 14)).rule == "rejected: breaks SQL"
    winre = decide(strict, WINRE, date(2024, 1, 10))
    assert winre.approved and winre.rule == "approved by name"


def test_a_known_issue_is_held_without_a_baseline_and_by_one_that_does_not_name_it() -> None:
    for baseline in (None, Baseline("any")):
        decision = decide(baseline, WINRE, date(2024, 6, 1))
        assert not decision.approved
        assert (
            decision.rule.startswith("held: known issue KB5034439 (0x80070643") and "approve by name" in decision.rule
        )
    named = KbFacts("KB5034439", date(2024, 1, 9), "standalone", None, advisory=known_issue("KB5034439"), named=True)
    assert decide(None, named, date(2024, 6, 1)).rule == "approved by name (named on the run)"


def test_classification_severity_and_exploited_first_rules() -> None:
    assert decide(Baseline("ssu", classifications=("servicing-stack",)), FEBRUARY, date(2024, 3, 1)).rule == (
        "held: classification security not in baseline"
    )
    moderate = KbFacts("KB1234567", date(2024, 1, 9), "security", "Moderate")
    assert decide(Baseline("imp", min_severity="Important"), moderate, date(2024, 3, 1)).rule == (
        "held: severity Moderate below the minimum Important"
    )
    assert decide(Baseline("imp", min_severity="Important"), FEBRUARY, date(2024, 3, 1)).approved
    exploited = KbFacts("KB5034770", date(2024, 2, 13), "security", "Critical", exploited=True)
    urgent = Baseline("urgent", approve_after_days=7, exploited_first=True)
    assert decide(urgent, exploited, date(2024, 2, 13)).approved
    assert not decide(urgent, FEBRUARY, date(2024, 2, 13)).approved  # nothing exploited: it waits
    unknown = KbFacts("KB1234567", None, "security", "Critical")
    assert decide(Baseline("week", approve_after_days=7), unknown, date(2024, 3, 1)).rule == (
        "held: release date unknown, approve-after-days 7 cannot be checked"
    )


def test_several_baselines_must_all_approve() -> None:
    slow, fast = Baseline("slow", approve_after_days=30), Baseline("fast")
    decision = decide_all([fast, slow], FEBRUARY, date(2024, 2, 20))
    assert not decision.approved and decision.rule.startswith("slow: held: released 2024-02-13")
    assert decide_all([fast], FEBRUARY, date(2024, 2, 20)).approved


def test_baselines_attach_to_servers_by_tag() -> None:
    prod = Baseline("prod", groups=("Environment=prod", "Patch Group=web"))
    other = Baseline("other", groups=("Environment=test",))
    assert matching_baselines([other, prod], {"Environment": "prod"}) == [prod]
    assert matching_baselines([other, prod], {"Patch Group": "web", "Environment": "test"}) == [other, prod]
    assert matching_baselines([other, prod], {"Environment": "Prod"}) == []  # exact, as EC2 tags are


def test_classifications_come_from_the_catalog_subtypes() -> None:
    assert classification_of("Security Update") == "security"
    assert classification_of("Servicing Stack Update") == "servicing-stack"
    assert classification_of("Security Hotpatch Update") == "hotpatch"
    assert classification_of(None) == "cumulative"  # MSRC left it empty on cumulative updates before 2018
    assert classification_of("Setup DU") == "dynamic-update"
    assert classification_of("Something New") == "other"
    assert parse_classifications(["Servicing-Stack, security"]) == ("security", "servicing-stack")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (Baseline("a b"), "name"),
        (Baseline("x" * 65), "name"),
        (Baseline("ok", min_severity="Urgent"), "min_severity"),
        (Baseline("ok", classifications=("security", "drivers")), "classifications"),
        (Baseline("ok", approve_after_days=366), "approve_after_days"),
        (Baseline("ok", approve_after_days=-1), "approve_after_days"),
        (Baseline("ok", approved=("KB12",)), "approve"),
        (Baseline("ok", rejected=(RejectedKb("5034770", ""),)), "reason"),
        (Baseline("ok", rejected=(RejectedKb("KB5034770", "bell \x07"),)), "reason"),
        (Baseline("ok", rejected=(RejectedKb("KB5034770", "x" * 501),)), "reason"),
        (Baseline("ok", groups=("Environment",)), "group"),
        (Baseline("ok", groups=("=prod",)), "group"),
        (Baseline("ok", approved=("KB5034770",), rejected=(RejectedKb("KB5034770", "no"),)), "approve"),
    ],
)
def test_every_field_is_checked_and_the_error_names_it(change: Baseline, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_baseline(change)
    assert caught.value.field == field


def test_values_are_made_canonical() -> None:
    checked = check_baseline(
        Baseline(" prod ", min_severity="important", approved=("5034439", "kb5034439"), groups=(" Env = prod ",))
    )
    assert (checked.name, checked.min_severity, checked.approved, checked.groups) == (
        "prod",
        "Important",
        ("KB5034439",),
        ("Env=prod",),
    )
    assert parse_group("Patch Group=web servers") == "Patch Group=web servers"
    assert baseline_from_record(baseline_record(checked)) == checked


def test_a_partial_update_moves_a_kb_between_approved_and_rejected() -> None:
    start = check_baseline(Baseline("b", approved=("KB5034439",), groups=("Env=prod",)))
    rejected = apply_change(start, BaselineChange(reject=("KB5034439",), reason="fails on small partitions"))
    assert rejected.approved == () and rejected.rejected == (RejectedKb("KB5034439", "fails on small partitions"),)
    assert rejected.groups == ("Env=prod",)  # untouched
    approved = apply_change(rejected, BaselineChange(approve=("KB5034439",), approve_after_days=3))
    assert (approved.approved, approved.rejected, approved.approve_after_days) == (("KB5034439",), (), 3)
    with pytest.raises(ValidationError) as caught:
        apply_change(start, BaselineChange(reject=("KB5034770",)))
    assert caught.value.field == "reason"
    assert apply_change(start, BaselineChange(min_severity="Critical", clear_min_severity=True)).min_severity is None


def test_the_rules_read_as_words() -> None:
    baseline = Baseline(
        "prod",
        min_severity="Important",
        classifications=("security", "servicing-stack"),
        approve_after_days=7,
        rejected=(RejectedKb("KB5034770", "breaks SQL"),),
        exploited_first=True,
        groups=("Environment=prod",),
    )
    assert describe_rules(baseline) == [
        "severity: Important and above",
        "classifications: security, servicing-stack",
        "approved 7 days after release (KBs fixing an exploited CVE: on release)",
        "exploited first: KBs fixing an exploited CVE install right after the servicing stack",
        "rejected: KB5034770 (breaks SQL)",
        "servers: Environment=prod",
    ]


def test_the_advisory_list_knows_kb5034439_for_windows_server_2022_only() -> None:
    assert [issue.kb for issue in known_issues_for("Windows Server 2022")] == ["KB5034439"]
    assert known_issues_for("Windows Server 2019") == ()
    issue = known_issue("KB5034439")
    assert issue is not None and issue.released == date(2024, 1, 9) and "0x80070643" in issue.issue

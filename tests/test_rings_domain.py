"""The pure rollout rules: the ``--rings`` grammar, ring assignment, percentages, soak times, the gate table."""

from __future__ import annotations

import pytest

from autopatch.domain.fleet import CommandInvocation, CommandStatus
from autopatch.domain.patching import KbState
from autopatch.domain.ring_gates import (
    GATE_TRANSITIONS,
    GateStatus,
    MemberCheck,
    check_gate_transition,
    health_verdict,
    patch_check,
)
from autopatch.domain.rings import (
    HEALTH_SCRIPT_MAX_BYTES,
    assign_rings,
    check_assignment,
    check_health_script,
    format_duration,
    parse_duration,
    parse_rate,
    parse_rings,
    share_of,
)
from autopatch.domain.runs import RunItem, RunServer
from autopatch.errors import StateError, ValidationError


def fleet(count: int, canary: int = 0) -> dict[str, dict[str, str]]:
    """``count`` servers with ids that sort in order; the last ``canary`` of them tagged Ring=canary."""
    return {f"i-{n:017x}": ({"Ring": "canary"} if n >= count - canary else {"Env": "prod"}) for n in range(count)}


@pytest.mark.parametrize(
    ("percent", "servers", "expected"), [(10, 24, 3), (1, 24, 1), (50, 5, 3), (100, 7, 7), (5, 1, 1)]
)
def test_a_share_is_rounded_up_and_never_below_one(percent: int, servers: int, expected: int) -> None:
    assert share_of(percent, servers) == expected


def test_rates_are_counts_or_percentages_resolved_against_the_runs_servers() -> None:
    assert parse_rate("10%", "--concurrency", 1000).resolve(24) == 3
    assert parse_rate(" 7 ", "--concurrency", 1000).resolve(24) == 7
    assert parse_rate(4, "concurrency", 1000).resolve(2) == 4
    assert parse_rate("5%", "--max-errors", 100).text == "5%"


@pytest.mark.parametrize("value", ["0", "0%", "101%", "1001", "ten", "10 %", "-1", "1.5", "%", ""])
def test_a_bad_rate_names_its_field_and_the_rule(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_rate(value, "--concurrency", 1000)
    assert caught.value.field == "--concurrency" and "percentage" in caught.value.rule


def test_the_example_grammar_reads_as_tags_and_a_share_then_the_rest() -> None:
    canary, rest = parse_rings(" canary = Ring=canary , 10% ; rest=* ")
    assert (canary.name, canary.tags, canary.percent, canary.selector) == (
        "canary",
        (("Ring", "canary"),),
        10,
        "Ring=canary,10%",
    )
    assert rest.catch_all and rest.selector == "*"


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("", "at least one ring"),
        ("canary", "NAME=SELECTOR"),
        ("canary=", "NAME=SELECTOR"),
        ("bad name=*", "ring name"),
        ("rest=*;canary=10%", "only the last ring"),
        ("a=10%;a=*", "unique"),
        ("a=10%,20%;b=*", "one percentage"),
        ("a=0%;b=*", "1% to 100%"),
        ("a=Ring;b=*", "KEY=VALUE"),
        ("a=Ring=x,*;b=*", "stands alone"),
        (";".join(f"r{n}=1%" for n in range(11)), "at most 10 rings"),
        ("a=" + "x" * 3000, "2000 characters"),
    ],
)
def test_a_bad_rings_text_is_refused_naming_the_field_and_the_rule(text: str, rule: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_rings(text, "--rings")
    assert caught.value.field == "--rings" and rule in caught.value.rule


def test_rings_are_filled_in_order_by_instance_id_and_every_server_lands_in_one() -> None:
    servers = fleet(24, canary=5)
    rings = check_assignment(assign_rings(parse_rings("canary=Ring=canary,10%;early=25%;rest=*"), servers), servers)
    canary, early, rest = (ring.instance_ids for ring in rings)
    tagged = sorted(i for i, tags in servers.items() if tags.get("Ring") == "canary")
    assert canary == tuple(tagged[:3])  # 10% of 24 → 3 of the 5 tagged ones, lowest ids first
    assert early == tuple(sorted(set(servers) - set(canary))[:6])  # 25% of the whole run (24) → 6
    assert len(rest) == 24 - 3 - 6
    everyone = [*canary, *early, *rest]
    assert sorted(everyone) == sorted(servers) and len(set(everyone)) == 24
    again = assign_rings(parse_rings("canary=Ring=canary,10%;early=25%;rest=*"), dict(reversed(servers.items())))
    assert [ring.instance_ids for ring in again] == [canary, early, rest]  # the order given does not matter


def test_servers_no_ring_takes_and_empty_rings_are_refused_but_an_empty_final_rest_is_dropped() -> None:
    servers = fleet(4, canary=1)
    with pytest.raises(ValidationError, match=r"3 server.* in no ring.*rest=\*"):
        check_assignment(assign_rings(parse_rings("canary=Ring=canary"), servers), servers)
    with pytest.raises(ValidationError, match="ring pilot selects none of the run's 4 server"):
        check_assignment(assign_rings(parse_rings("pilot=Ring=pilot;rest=*"), servers), servers)
    rings = check_assignment(assign_rings(parse_rings("all=100%;rest=*"), servers), servers)
    assert [ring.spec.name for ring in rings] == ["all"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("90s", 90), ("1d", 86400), ("45", 45), ("0", 0)],
)
def test_soak_durations_read_as_seconds_and_print_back(text: str, seconds: int) -> None:
    assert parse_duration(text, "--soak") == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["30 minutes", "m", "1h-5m", "8d", "", "2w"])
def test_a_bad_soak_is_refused(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_duration(text, "--soak")
    assert caught.value.field == "--soak"


def test_a_health_script_is_text_within_its_size_limit() -> None:
    assert check_health_script("\ufeffGet-Service W32Time\nexit 0\n") == "Get-Service W32Time\nexit 0\n"
    for bad, rule in [("  \n", "empty"), ("exit 0\x00", "NUL"), ("x" * (HEALTH_SCRIPT_MAX_BYTES + 1), "at most")]:
        with pytest.raises(ValidationError, match=rule) as caught:
            check_health_script(bad, "--health-script")
        assert caught.value.field == "--health-script"


def test_the_gate_moves_only_along_its_table() -> None:
    check_gate_transition(GateStatus.CHECKING, GateStatus.SOAKING)
    with pytest.raises(StateError, match="Passed → Patching"):
        check_gate_transition(GateStatus.PASSED, GateStatus.PATCHING)
    with pytest.raises(StateError, match="Soaking → Passed"):  # a soak always ends with a second round
        check_gate_transition(GateStatus.SOAKING, GateStatus.PASSED)
    assert all(not GATE_TRANSITIONS[status] for status in GateStatus if status.is_terminal)


def server(status: str, reason: str = "") -> RunServer:
    return RunServer(
        "p-1", "i-0aaaaaaaaaaaaaaa1", "web-1", "Windows Server 2022", "10.0.20348.1", status, reason=reason
    )


def item(state: KbState, reason: str = "") -> RunItem:
    return RunItem("p-1", "i-0aaaaaaaaaaaaaaa1", "KB5034439", 0, state, reason=reason)


def test_the_patch_check_fails_a_failed_kb_or_server_and_skips_an_unpatched_one() -> None:
    assert patch_check(server("Done"), [item(KbState.SUCCESS)]) == (MemberCheck.UNCHECKED, "")
    check, detail = patch_check(server("Failed"), [item(KbState.FAILED, "HRESULT 0x80070643")])
    assert check is MemberCheck.FAILED and detail == "KB5034439 Failed: HRESULT 0x80070643"
    assert patch_check(server("Failed", "agent gone"), [])[0] is MemberCheck.FAILED
    assert patch_check(server("Pending"), [item(KbState.PENDING)])[1].endswith("(--max-errors)")
    assert patch_check(server("Skipped", "offline"), []) == (MemberCheck.SKIPPED, "not patched: offline")


def test_a_health_check_passes_only_on_exit_code_zero() -> None:
    def ended(status: CommandStatus, code: int | None) -> CommandInvocation:
        return CommandInvocation("c", "i-0aaaaaaaaaaaaaaa1", status, code, "IIS: stopped\n")

    assert health_verdict(ended(CommandStatus.SUCCESS, 0), 600)[0] is MemberCheck.PASSED
    assert health_verdict(ended(CommandStatus.FAILED, 1), 600) == (
        MemberCheck.FAILED,
        "health script exited 1: IIS: stopped",
    )
    assert "did not run to the end (Undeliverable)" in health_verdict(ended(CommandStatus.UNDELIVERABLE, None), 600)[1]
    assert health_verdict(None, 600) == (MemberCheck.FAILED, "health script: no result within 600 s")

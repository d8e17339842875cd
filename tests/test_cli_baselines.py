"""``autopatch baseline …`` and ``patch --baseline / --as-of`` through the real CLI entry point.

The fleet stood in December 2023 (``aged_fleet.py``), the catalog runs to October 2025.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from autopatch.store.sqlite import SqliteStore

from .aged_fleet import WS2022_PROD, WS2022_TEST, aged_env, aged_template
from .conftest import run_cli

__all__ = ["aged_env", "aged_template"]

WINRE_RULE = (
    "held: known issue KB5034439 (0x80070643 when the WinRE recovery partition has less than 250 MB free), "
    "approve by name to install"
)


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = run_cli(capsys, *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def instance_ids(capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    return {row["name"]: row["instance_id"] for row in cli_json(capsys, "fleet", "list")}


def test_baseline_create_show_update_list_delete_each_audited(
    aged_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = instance_ids(capsys)
    created = cli_json(
        capsys,
        "baseline", "create", "prod",
        "--min-severity", "important",
        "--classifications", "security,servicing-stack",
        "--approve-after-days", "7",
        "--approve", "KB5034439",
        "--reject", "5034770,KB5035857", "--reason", "breaks the SQL cluster",
        "--exploited-first",
        "--group", "Environment=prod",
    )  # fmt: skip
    assert created["min_severity"] == "Important" and created["approved"] == ["KB5034439"]
    assert created["rejected"] == [
        {"kb": "KB5034770", "reason": "breaks the SQL cluster"},
        {"kb": "KB5035857", "reason": "breaks the SQL cluster"},
    ]
    assert {server["name"] for server in created["servers"]} >= {WS2022_PROD}
    assert ids[WS2022_TEST] not in {server["instance_id"] for server in created["servers"]}

    code, out, _ = run_cli(capsys, "baseline", "show", "prod")
    assert code == 0
    assert "approved 7 days after release (KBs fixing an exploited CVE: on release)" in out
    assert "rejected: KB5034770 (breaks the SQL cluster)" in out and WS2022_PROD in out

    updated = cli_json(
        capsys, "baseline", "update", "prod", "--unapprove", "KB5034439", "--approve", "KB5035857",
        "--approve-after-days", "3", "--no-exploited-first", "--classifications", "all",
    )  # fmt: skip
    assert (updated["approved"], updated["approve_after_days"], updated["exploited_first"]) == (["KB5035857"], 3, False)
    assert updated["rejected"] == [{"kb": "KB5034770", "reason": "breaks the SQL cluster"}]  # approving un-rejects
    assert updated["classifications"] == [] and updated["groups"] == ["Environment=prod"]
    assert updated["created_at"] == created["created_at"]

    assert [row["name"] for row in cli_json(capsys, "baseline", "list")] == ["prod"]
    code, out, _ = run_cli(capsys, "baseline", "list", "--format", "csv")
    assert (
        code == 0
        and out.splitlines()[0] == "name,severity,classifications,days,approved,rejected,exploited first,groups,servers"
    )
    code, _, _ = run_cli(capsys, "baseline", "create", "prod")
    assert code == 2  # the name is taken
    code, out, _ = run_cli(capsys, "baseline", "delete", "prod")
    assert code == 0 and cli_json(capsys, "baseline", "list") == []
    code, _, err = run_cli(capsys, "baseline", "delete", "prod")
    assert code == 2 and "not a known baseline" in err

    entries = [e for e in cli_json(capsys, "audit") if e["action"].startswith("baseline.")]
    assert [(e["action"], e["target"], e["result"]) for e in reversed(entries)] == [
        ("baseline.create", "prod", "ok"),
        ("baseline.update", "prod", "ok"),
        ("baseline.create", "prod", entries[2]["result"]),
        ("baseline.delete", "prod", "ok"),
        ("baseline.delete", "prod", entries[0]["result"]),
    ]
    assert entries[2]["result"].startswith("error: name: a baseline named 'prod' exists")
    assert entries[0]["actor"].startswith("cli")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--approve", "KB12"), "approve"),
        (("--min-severity", "Urgent"), "min_severity"),
        (("--classifications", "security,drivers"), "classifications"),
        (("--approve-after-days", "400"), "approve_after_days"),
        (("--group", "Environment"), "group"),
        (("--reject", "KB5034770"), "reason"),
        (("--reason", "why"), "reason"),
        (("--approve", "KB5034770", "--reject", "KB5034770", "--reason", "no"), "approve"),
    ],
)
def test_bad_baseline_input_exits_2_naming_the_field_and_stores_nothing(
    aged_env: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], named: str
) -> None:
    code, out, err = run_cli(capsys, "baseline", "create", "prod", *args)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {named}:") and len(err.splitlines()) == 1
    store = SqliteStore(aged_env)
    try:
        assert store.list_baselines() == []
    finally:
        store.close()


def test_a_bad_name_and_an_unknown_baseline_exit_2(aged_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "baseline", "create", "a b")
    assert code == 2 and err.startswith("error: name: 'a b' is invalid")
    code, _, err = run_cli(capsys, "patch", "--all", "--dry-run", "--baseline", "ghost")
    assert code == 2 and "baseline: 'ghost' is not a known baseline" in err
    code, _, err = run_cli(capsys, "baseline", "update", "ghost", "--approve-after-days", "1")
    assert code == 2 and "not a known baseline" in err


def test_as_of_is_accepted_only_with_a_dry_run(aged_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "patch", "--all", "--as-of", "2024-02-15")
    assert code == 2 and out == ""
    assert err.startswith("error: --as-of: '2024-02-15' is invalid: accepted only with --dry-run")
    code, _, err = run_cli(capsys, "patch", "--all", "--dry-run", "--as-of", "2024-02-30")
    assert code == 2 and err.startswith("error: --as-of: '2024-02-30' is invalid: a date is YYYY-MM-DD")
    assert cli_json(capsys, "runs") == []


def test_a_dry_run_as_of_a_date_shows_each_held_kb_and_its_rule(
    aged_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = instance_ids(capsys)
    code, _, err = run_cli(capsys, "baseline", "create", "wait-a-week", "--approve-after-days", "7")
    assert code == 0, err
    plan = cli_json(
        capsys,
        "patch",
        "--instance",
        ids[WS2022_PROD],
        "--dry-run",
        "--as-of",
        "2024-02-15",
        "--baseline",
        "wait-a-week",
    )
    [row] = plan
    assert row["kbs_in_order"] == ["KB5034129"] and row["baseline"] == "wait-a-week"
    assert row["held"] == [
        {"kb": "KB5034770", "rule": "held: released 2024-02-13, approve-after-days 7 not reached on 2024-02-15"},
        {"kb": "KB5034439", "rule": WINRE_RULE},
    ]
    code, out, _ = run_cli(
        capsys,
        "patch",
        "--instance",
        ids[WS2022_PROD],
        "--dry-run",
        "--as-of",
        "2024-02-15",
        "--baseline",
        "wait-a-week",
    )
    assert code == 0
    held_table = out[out.index("Held back") :]
    assert "KB5034770" in held_table and "approve-after-days 7 not reached on" in " ".join(held_table.split())
    assert cli_json(capsys, "runs") == []  # a dry run stores nothing


def test_servers_take_the_baseline_their_tags_match(aged_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        capsys,
        "baseline",
        "create",
        "prod",
        "--group",
        "Environment=prod",
        "--reject",
        "KB5034770",
        "--reason",
        "later",
    )
    assert code == 0, err
    rows = {row["name"]: row for row in cli_json(capsys, "patch", "--all", "--dry-run", "--as-of", "2024-02-20")}
    assert rows[WS2022_PROD]["baseline"] == "prod" and rows[WS2022_PROD]["kbs_in_order"] == ["KB5034129"]
    assert {"kb": "KB5034770", "rule": "rejected: later"} in rows[WS2022_PROD]["held"]
    assert rows[WS2022_TEST]["baseline"] == "" and rows[WS2022_TEST]["kbs_in_order"] == ["KB5034770"]

"""API tokens, roles and the audit log: the domain rules, the SQLite store, the core steps and the CLI."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from autopatch.access import audit, authenticate, create_token, revoke_token
from autopatch.cli.app import main
from autopatch.domain.access import (
    Principal,
    Role,
    new_token,
    parse_role,
    parse_token_name,
    token_digest,
)
from autopatch.errors import ConflictError, NotFoundError, ValidationError
from autopatch.store.access_sqlite import ACCESS_MIGRATION
from autopatch.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore

START = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def run(capsys: pytest.CaptureFixture[str], db: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--db", str(db), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- domain --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "needed", "allowed"),
    [
        (Role.ADMIN, Role.ADMIN, True),
        (Role.ADMIN, Role.OPERATOR, True),
        (Role.ADMIN, Role.VIEWER, True),
        (Role.OPERATOR, Role.ADMIN, False),
        (Role.OPERATOR, Role.OPERATOR, True),
        (Role.OPERATOR, Role.VIEWER, True),
        (Role.VIEWER, Role.ADMIN, False),
        (Role.VIEWER, Role.OPERATOR, False),
        (Role.VIEWER, Role.VIEWER, True),
    ],
)
def test_each_role_allows_itself_and_the_roles_below_it(role: Role, needed: Role, allowed: bool) -> None:
    assert role.allows(needed) is allowed


def test_roles_parse_in_any_case_and_an_unknown_role_names_the_field() -> None:
    assert parse_role(" Operator ") is Role.OPERATOR
    with pytest.raises(ValidationError) as error:
        parse_role("root")
    assert error.value.field == "role" and "viewer, operator, admin" in str(error.value)


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "tök", "ci/deploy", "ci\n", "１２３"])
def test_a_bad_token_name_is_refused_naming_the_field(name: str) -> None:
    with pytest.raises(ValidationError) as error:
        parse_token_name(name)
    assert error.value.field == "name" and "1 to 64 ASCII" in error.value.rule


def test_token_names_keep_letters_digits_dots_dashes_and_underscores() -> None:
    assert parse_token_name("ci-deploy_2.prod") == "ci-deploy_2.prod"
    assert parse_token_name("x" * 64) == "x" * 64


def test_new_tokens_are_prefixed_random_and_digested_with_sha256() -> None:
    first, second = new_token(), new_token()
    assert first.startswith("ap_") and len(first) > 40 and first != second
    assert token_digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2


# --- store and core steps ------------------------------------------------------------------------


def test_a_created_token_authenticates_as_its_name_and_role(empty_store: SqliteStore) -> None:
    record, token = create_token(empty_store, "ci-deploy", "operator", now=START)
    assert (record.name, record.role, record.created_at, record.revoked_at) == ("ci-deploy", Role.OPERATOR, START, None)
    assert authenticate(empty_store, token) == Principal("ci-deploy", Role.OPERATOR)
    assert authenticate(empty_store, token + "x") is None
    assert authenticate(empty_store, "") is None
    assert authenticate(empty_store, "ap_" + "x" * 10_000) is None


def test_only_the_digest_is_stored_never_the_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens.db"
    store = SqliteStore(path)
    _, token = create_token(store, "ci", Role.ADMIN)
    store.close()
    stored = b"".join(file.read_bytes() for file in tmp_path.iterdir() if file.name.startswith("tokens.db"))
    assert token.encode() not in stored
    assert token_digest(token).encode() in stored
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT digest FROM api_tokens").fetchall() == [(token_digest(token),)]
    db.close()


def test_a_revoked_token_stops_authenticating_at_once(empty_store: SqliteStore) -> None:
    _, token = create_token(empty_store, "ci", Role.ADMIN)
    assert authenticate(empty_store, token) is not None
    revoked = revoke_token(empty_store, "ci", now=START)
    assert revoked.revoked_at == START and not revoked.active
    assert authenticate(empty_store, token) is None


def test_revoking_an_unknown_or_revoked_token_is_not_found(empty_store: SqliteStore) -> None:
    with pytest.raises(NotFoundError, match="'ghost'"):
        revoke_token(empty_store, "ghost")
    create_token(empty_store, "ci", Role.VIEWER)
    revoke_token(empty_store, "ci")
    with pytest.raises(NotFoundError, match="'ci' is not a live token"):
        revoke_token(empty_store, "ci")


def test_a_live_name_cannot_be_reused_but_a_revoked_one_can(empty_store: SqliteStore) -> None:
    _, old = create_token(empty_store, "ci", Role.VIEWER, now=START)
    with pytest.raises(ConflictError, match="'ci' already exists"):
        create_token(empty_store, "ci", Role.ADMIN)
    revoke_token(empty_store, "ci")
    _, new = create_token(empty_store, "ci", Role.ADMIN, now=START + timedelta(hours=1))
    assert authenticate(empty_store, new) == Principal("ci", Role.ADMIN)
    assert authenticate(empty_store, old) is None
    listed = empty_store.list_tokens()
    assert [(t.name, t.role, t.active) for t in listed] == [("ci", Role.VIEWER, False), ("ci", Role.ADMIN, True)]


def test_bad_input_is_refused_before_the_store_is_touched(empty_store: SqliteStore) -> None:
    with pytest.raises(ValidationError, match=r"^name: "):
        create_token(empty_store, "bad name", Role.ADMIN)
    with pytest.raises(ValidationError, match=r"^role: "):
        create_token(empty_store, "ci", "superuser")
    with pytest.raises(ValidationError, match=r"^name: "):
        revoke_token(empty_store, "bad name")
    assert empty_store.list_tokens() == []


def test_last_used_is_recorded_at_most_once_a_minute(empty_store: SqliteStore) -> None:
    _, token = create_token(empty_store, "ci", Role.VIEWER, now=START)
    assert empty_store.list_tokens()[0].last_used_at is None
    authenticate(empty_store, token, now=START + timedelta(seconds=5))
    authenticate(empty_store, token, now=START + timedelta(seconds=30))
    assert empty_store.list_tokens()[0].last_used_at == START + timedelta(seconds=5)
    authenticate(empty_store, token, now=START + timedelta(minutes=2))
    assert empty_store.list_tokens()[0].last_used_at == START + timedelta(minutes=2)


def test_the_audit_log_pages_newest_first_with_its_total(empty_store: SqliteStore) -> None:
    for minute in range(5):
        audit(empty_store, "ci", "patch", f"r-{minute}", "ok", now=START + timedelta(minutes=minute))
    audit(empty_store, "ci", "cancel", "r-4", "ok", now=START + timedelta(minutes=4))  # same time: later wins
    first, total = empty_store.list_audit(limit=2, offset=0)
    assert total == 6
    assert [(e.action, e.target) for e in first] == [("cancel", "r-4"), ("patch", "r-4")]
    last, total = empty_store.list_audit(limit=2, offset=5)
    assert total == 6 and [(e.target, e.at) for e in last] == [("r-0", START)]
    assert empty_store.list_audit(limit=10, offset=6) == ([], 6)


def test_audit_entries_keep_every_field_and_cut_hostile_sizes(empty_store: SqliteStore) -> None:
    written = audit(empty_store, "ops", "reboot", "i-0123456789abcdef0", "refused", "held by r-1")
    (read,), _ = empty_store.list_audit(1, 0)
    assert read == written and read.detail == "held by r-1" and read.actor == "ops"
    audit(empty_store, "ops", "patch", "i-1," * 100_000, "ok")
    (long,), _ = empty_store.list_audit(1, 0)
    assert 0 < len(long.target) <= 2000


def test_a_database_from_before_tokens_is_upgraded_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    before = MIGRATIONS.index(ACCESS_MIGRATION)
    with sqlite3.connect(path) as db:
        for script in MIGRATIONS[:before]:
            db.executescript(script)
        db.execute(
            "INSERT INTO runs (run_id, kind, status, created_at, options) VALUES ('p-1', 'patch', 'Succeeded', "
            "'2026-01-01T00:00:00+00:00', '{}')"
        )
        db.execute(f"PRAGMA user_version = {before}")
    db.close()
    store = SqliteStore(path)
    try:
        assert store.get_run("p-1").kind == "patch"
        _, token = create_token(store, "ci", Role.ADMIN)
        assert authenticate(store, token) == Principal("ci", Role.ADMIN)
        assert store._query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
    finally:
        store.close()


# --- CLI -----------------------------------------------------------------------------------------


def test_token_create_prints_the_token_once_and_it_authenticates(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "cli.db"
    code, out, err = run(capsys, db, "token", "create", "--name", "ci", "--role", "operator", "--format", "json")
    assert code == 0
    created = json.loads(out)
    assert set(created) == {"name", "role", "token", "created_at"}
    assert (created["name"], created["role"]) == ("ci", "operator")
    assert datetime.fromisoformat(created["created_at"]).tzinfo is not None
    assert "will not be shown again" in err and created["token"] not in err
    store = SqliteStore(db)
    try:
        assert authenticate(store, created["token"]) == Principal("ci", Role.OPERATOR)
    finally:
        store.close()
    code, out, err = run(capsys, db, "token", "create", "--name", "ops", "--role", "admin")
    assert code == 0 and out.count("ap_") == 1 and "will not be shown again" in err


def test_token_list_shows_tokens_without_their_secret(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    _, out, _ = run(capsys, db, "token", "create", "--name", "ci", "--role", "viewer", "--format", "json")
    token = json.loads(out)["token"]
    run(capsys, db, "token", "revoke", "ci")
    outputs = [run(capsys, db, "token", "list", "--format", output)[1] for output in ("table", "json", "csv")]
    for text in outputs:
        assert "ci" in text and token not in text and token_digest(token) not in text
    (listed,) = json.loads(outputs[1])
    assert listed["status"] == "revoked" and listed["role"] == "viewer" and listed["revoked_at"]
    assert set(listed) == {"name", "role", "status", "created_at", "last_used_at", "revoked_at"}


def test_token_revoke_of_an_unknown_name_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, tmp_path / "cli.db", "token", "revoke", "ghost")
    assert code == 2 and "'ghost' is not a live token" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, tmp_path / "cli.db", "token", "create", "--name", "ci", "--role", "root")
    assert code == 2 and err.startswith("error: role: 'root' is invalid")


def test_audit_shows_token_changes_made_from_the_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    run(capsys, db, "token", "create", "--name", "ci", "--role", "admin")
    run(capsys, db, "token", "create", "--name", "ci", "--role", "admin")  # refused: the name is live
    run(capsys, db, "token", "revoke", "ci")
    code, out, _ = run(capsys, db, "audit", "--format", "json")
    assert code == 0
    entries = json.loads(out)
    assert [(e["action"], e["target"], e["result"]) for e in entries] == [
        ("token.revoke", "ci", "ok"),
        ("token.create", "ci", "error: name: a token named 'ci' already exists; revoke it first or pick another"),
        ("token.create", "ci", "ok"),
    ]
    assert all(e["actor"].startswith("cli") for e in entries) and "ap_" not in out
    assert entries[2]["detail"] == "role admin"
    code, out, _ = run(capsys, db, "audit", "--limit", "1")
    assert code == 0 and "1-1 of 3" in out and "token.revoke" in out and "role admin" not in out
    code, _, err = run(capsys, db, "audit", "--limit", "0")
    assert code == 2 and "limit" in err

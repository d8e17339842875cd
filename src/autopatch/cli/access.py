"""``autopatch token create | list | revoke`` and ``autopatch audit``: API access from the shell.

Whoever can run the CLI on the database already holds everything a token grants, so the CLI needs
no token itself; what it changes is audited all the same, with ``cli:<OS user>`` as the actor, so
the log answers "who made this admin token" whichever way it was made. A token is printed once, on
stdout (JSON or table); the warning that it cannot be shown again goes to stderr.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console

from autopatch.access import RESULT_OK, audit, create_token, revoke_token
from autopatch.cli.context import CliContext
from autopatch.cli.output import OutputFormat, render
from autopatch.cli.views import short_time
from autopatch.domain.access import AuditEntry, TokenRecord
from autopatch.errors import ExecutionError, InputError

app = typer.Typer(help="API tokens: create, list, revoke.", no_args_is_help=True)
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, json or csv")]
AUDIT_PAGE_LIMIT = 1000


def cli_actor() -> str:
    """``cli:<OS user>``, the audit actor of a change made from the command line."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no USER/LOGNAME and no passwd entry (a bare container)
        return "cli"
    return f"cli:{user}" if user else "cli"


@dataclass
class AuditNote:
    """What the audited block adds to its entry once it knows (the role a token was given)."""

    detail: str = ""


@contextmanager
def audited(context: CliContext, action: str, target: str) -> Iterator[AuditNote]:
    """Audit the change made in the block like the API does: ``ok``, or ``error: <why>`` when refused."""
    note = AuditNote()
    try:
        yield note
    except InputError as exc:
        # Nothing changed; if even the refusal cannot be written (a read-only copy of the database),
        # the caller learns why the command was refused rather than why the log could not be written.
        with suppress(ExecutionError):
            audit(context.store, cli_actor(), action, target, "error: " + " ".join(str(exc).split()), note.detail)
        raise
    audit(context.store, cli_actor(), action, target, RESULT_OK, note.detail)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def token_row(record: TokenRecord) -> dict[str, Any]:
    """A token as listed: never the token or its digest."""
    return {
        "name": record.name,
        "role": str(record.role),
        "status": "active" if record.active else "revoked",
        "created_at": _iso(record.created_at),
        "last_used_at": _iso(record.last_used_at),
        "revoked_at": _iso(record.revoked_at),
    }


def audit_row(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": _iso(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "result": entry.result,
        "detail": entry.detail,
    }


@app.command("create")
def create_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="unique among live tokens: letters, digits, . _ -")],
    role: Annotated[str, typer.Option("--role", help="viewer, operator or admin")],
    output: FormatOption = OutputFormat.table,
) -> None:
    """Create an API token and print it once: only its digest is stored."""
    context: CliContext = ctx.obj
    with audited(context, "token.create", name) as note:
        record, token = create_token(context.store, name, role)
        note.detail = f"role {record.role}"
    row = {"name": record.name, "role": str(record.role), "token": token, "created_at": _iso(record.created_at)}
    render(row, output)
    context.console.print("Copy the token now: it will not be shown again.")


@app.command("list")
def list_command(ctx: typer.Context, output: FormatOption = OutputFormat.table) -> None:
    """Every token, live and revoked: name, role, when created, last used and revoked."""
    context: CliContext = ctx.obj
    rows = [token_row(record) for record in context.store.list_tokens()]
    if output is not OutputFormat.table:
        render(rows, output)
        return
    shown = [row | {key: short_time(row[key]) for key in ("created_at", "last_used_at", "revoked_at")} for row in rows]
    headers = {"created_at": "created", "last_used_at": "last used", "revoked_at": "revoked"}
    columns = ("name", "role", "status", "created_at", "last_used_at", "revoked_at")
    render(shown, output, columns=columns, title="API tokens", headers=headers)


@app.command("revoke")
def revoke_command(ctx: typer.Context, name: str) -> None:
    """Revoke a token: the next request that bears it is refused."""
    context: CliContext = ctx.obj
    with audited(context, "token.revoke", name):
        revoke_token(context.store, name)
    Console().print(f"Token {name} revoked", markup=False)


def audit_command(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=AUDIT_PAGE_LIMIT, help="entries to show")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="newest entries to skip")] = 0,
    output: FormatOption = OutputFormat.table,
) -> None:
    """The audit log, newest first: who changed what, on which target, and how it ended."""
    context: CliContext = ctx.obj
    entries, total = context.store.list_audit(limit, offset)
    rows = [audit_row(entry) for entry in entries]
    if output is not OutputFormat.table:
        render(rows, output)
        return
    shown = [row | {"at": short_time(row["at"])} for row in rows]
    first = offset + 1 if rows else offset
    title = f"Audit log, newest first: {first}-{offset + len(rows)} of {total}"
    render(shown, output, columns=("at", "actor", "action", "target", "result", "detail"), title=title)

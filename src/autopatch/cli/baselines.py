"""``autopatch baseline create | list | show | update | delete``: patch baselines from the shell.

The same steps as ``/api/v1/baselines`` (``autopatch.baselines``), audited the same way with
``cli:<OS user>`` as the actor. KB lists take repeated options or comma lists (``--approve
KB5034439,KB5035857``); ``--classifications all`` means every classification.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console

from autopatch.baselines import (
    create_baseline,
    delete_baseline,
    list_baseline_views,
    new_baseline,
    show_baseline,
    update_baseline,
)
from autopatch.cli.access import FormatOption, audited
from autopatch.cli.context import CliContext
from autopatch.cli.output import OutputFormat, render
from autopatch.domain.baselines import CLASSIFICATIONS, BaselineChange, parse_classifications, parse_groups

app = typer.Typer(
    help="Patch baselines: approval rules, KBs approved or rejected by name, and the servers they apply to.",
    no_args_is_help=True,
)
KbsOption = Annotated[list[str] | None, typer.Option(help="KB ids (repeatable, or comma-separated)")]
CLASSES_HELP = f"comma list of {', '.join(CLASSIFICATIONS)}, or all"


def _split(values: Iterable[str] | None) -> list[str]:
    return [part.strip() for value in values or () for part in value.split(",") if part.strip()]


def _classes(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return () if value.strip().lower() == "all" else parse_classifications([value])


def print_held(rows: Sequence[dict[str, Any]]) -> None:
    """After a plan's table: each KB a baseline or an advisory held back, with the rule that held it."""
    held = [
        {"server": row["name"], "baseline": row.get("baseline") or "(none)", "kb": kb["kb"], "rule": kb["rule"]}
        for row in rows
        for kb in row.get("held") or ()
    ]
    if held:
        render(held, OutputFormat.table, title="Held back (approve by name, or wait for the rule)")


@app.command("create")
def create_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="1-64 letters, digits, '.', '_' or '-'")],
    min_severity: Annotated[str | None, typer.Option(help="Critical, Important, Moderate or Low")] = None,
    classifications: Annotated[str | None, typer.Option(help=CLASSES_HELP)] = None,
    approve_after_days: Annotated[int, typer.Option(help="days after its release before a KB is approved")] = 0,
    approve: KbsOption = None,
    reject: KbsOption = None,
    reason: Annotated[str | None, typer.Option(help="why the --reject KBs are rejected")] = None,
    exploited_first: Annotated[
        bool, typer.Option("--exploited-first", help="KBs fixing an exploited CVE: no waiting, installed first")
    ] = False,
    group: Annotated[list[str] | None, typer.Option(help="Tag=Value: servers with it use this (repeatable)")] = None,
    rings: Annotated[str | None, typer.Option(help="rollout rings for runs with this baseline (kept as text)")] = None,
    snapshot: Annotated[bool, typer.Option("--snapshot", help="snapshot servers before patching (kept)")] = False,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Create a baseline; servers whose tags match a --group use it, and `patch --baseline NAME` names it."""
    context: CliContext = ctx.obj
    with audited(context, "baseline.create", name):
        baseline = new_baseline(
            name,
            min_severity=min_severity,
            classifications=_classes(classifications) or (),
            approve_after_days=approve_after_days,
            approve=_split(approve),
            reject=_split(reject),
            reason=reason,
            exploited_first=exploited_first,
            groups=group or (),
            rings=rings,
            snapshot=snapshot,
        )
        view = create_baseline(context.store, baseline)
    _print_one(view, output)


@app.command("update")
def update_command(
    ctx: typer.Context,
    name: str,
    min_severity: Annotated[str | None, typer.Option(help="Critical, Important, Moderate or Low")] = None,
    any_severity: Annotated[bool, typer.Option("--any-severity", help="drop the minimum severity")] = False,
    classifications: Annotated[str | None, typer.Option(help=CLASSES_HELP)] = None,
    approve_after_days: Annotated[int | None, typer.Option(help="days after its release before approval")] = None,
    approve: KbsOption = None,
    unapprove: KbsOption = None,
    reject: KbsOption = None,
    reason: Annotated[str | None, typer.Option(help="why the --reject KBs are rejected")] = None,
    unreject: KbsOption = None,
    exploited_first: Annotated[bool | None, typer.Option("--exploited-first/--no-exploited-first")] = None,
    group: Annotated[list[str] | None, typer.Option(help="Tag=Value: replaces the groups (repeatable)")] = None,
    no_groups: Annotated[bool, typer.Option("--no-groups", help="attach it to no server by tag")] = False,
    rings: Annotated[str | None, typer.Option(help="rollout rings (kept as text; '' clears)")] = None,
    snapshot: Annotated[bool | None, typer.Option("--snapshot/--no-snapshot")] = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Change some fields of a baseline; what is not given stays as it is."""
    context: CliContext = ctx.obj
    with audited(context, "baseline.update", name):
        groups = () if no_groups else (parse_groups(group) if group else None)
        change = BaselineChange(
            min_severity=min_severity,
            clear_min_severity=any_severity,
            classifications=_classes(classifications),
            approve_after_days=approve_after_days,
            approve=tuple(_split(approve)),
            unapprove=tuple(_split(unapprove)),
            reject=tuple(_split(reject)),
            reason=reason,
            unreject=tuple(_split(unreject)),
            exploited_first=exploited_first,
            groups=groups,
            rings=rings,
            snapshot=snapshot,
        )
        view = update_baseline(context.store, name, change)
    _print_one(view, output)


@app.command("list")
def list_command(ctx: typer.Context, output: FormatOption = OutputFormat.table) -> None:
    """Every baseline: its rules in short, and the servers its groups reach now."""
    context: CliContext = ctx.obj
    views = list_baseline_views(context.store)
    if output is OutputFormat.json:
        render(views, output)
        return
    rows = [
        {
            "name": view["name"],
            "min_severity": view["min_severity"] or "any",
            "classifications": view["classifications"] or ["all"],
            "approve_after_days": view["approve_after_days"],
            "approved": len(view["approved"]),
            "rejected": len(view["rejected"]),
            "exploited_first": view["exploited_first"],
            "groups": view["groups"],
            "servers": len(view["servers"]),
        }
        for view in views
    ]
    headers = {"min_severity": "severity", "approve_after_days": "days", "exploited_first": "exploited first"}
    render(rows, output, title="Baselines", headers=headers)


@app.command("show")
def show_command(ctx: typer.Context, name: str, output: FormatOption = OutputFormat.table) -> None:
    """One baseline: its rules in words, its KBs approved and rejected by name, the servers it applies to."""
    context: CliContext = ctx.obj
    _print_one(show_baseline(context.store, name), output)


@app.command("delete")
def delete_command(ctx: typer.Context, name: str) -> None:
    """Forget a baseline (runs already planned with it keep their plans)."""
    context: CliContext = ctx.obj
    with audited(context, "baseline.delete", name):
        delete_baseline(context.store, name)
    Console().print(f"Baseline {name} deleted", markup=False)


def _print_one(view: dict[str, Any], output: OutputFormat) -> None:
    if output is OutputFormat.json:
        render(view, output)
        return
    if output is OutputFormat.csv:
        render({key: value for key, value in view.items() if key not in ("rejected", "servers")}, output)
        return
    console = Console()
    console.print(f"Baseline {view['name']} (updated {view['updated_at'][:16].replace('T', ' ')})", markup=False)
    for line in view["rules"]:
        console.print(f"  {line}", markup=False)
    servers = ", ".join(f"{s['name']} ({s['instance_id']})" for s in view["servers"]) or "none known now"
    console.print(f"  matching servers: {servers}", markup=False)

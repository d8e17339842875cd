"""``autopatch snapshots list | prune``, and the snapshot lines of ``autopatch run show``.

``patch --snapshot`` takes an EBS snapshot of each server's volumes before its first KB (see
``engine/snapshots.py``); these commands show AutoPatch's snapshots and delete the old ones. Only
snapshots tagged ``AutoPatch:Run`` are ever listed or deleted.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

from autopatch.access import RESULT_OK, audit
from autopatch.cli.access import cli_actor
from autopatch.cli.context import CliContext
from autopatch.cli.output import OutputFormat, render
from autopatch.domain.snapshots import RETENTION_RULE
from autopatch.snapshot_operations import prune_snapshots, snapshot_rows

app = typer.Typer(help="EBS snapshots taken before patching (patch --snapshot): list, prune.", no_args_is_help=True)
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, json or csv")]
_COLUMNS = ("snapshot_id", "instance_id", "run_id", "state", "started_at", "age_days")
_HEADERS = {"snapshot_id": "snapshot", "instance_id": "instance", "run_id": "run", "age_days": "age (days)"}


@app.command("list")
def list_command(ctx: typer.Context, output: FormatOption = OutputFormat.table) -> None:
    """AutoPatch's snapshots (tagged AutoPatch:Run), newest first, with their age."""
    context: CliContext = ctx.obj
    listing = snapshot_rows(context.fleet)
    if output is OutputFormat.json:
        render(listing, output)
        return
    title = f"{len(listing['items'])} AutoPatch snapshot(s), newest first (as of {listing['as_of']})"
    render(listing["items"], output, columns=_COLUMNS, title=title, headers=_HEADERS)


@app.command("prune")
def prune_command(
    ctx: typer.Context,
    older_than: Annotated[str, typer.Option("--older-than", help=f"retention: {RETENTION_RULE}")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would be deleted, delete nothing")] = False,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Delete AutoPatch's snapshots older than the retention (never those of an unfinished run)."""
    context: CliContext = ctx.obj
    result = prune_snapshots(context.fleet, context.store, older_than, dry_run)
    if not dry_run:
        outcome = RESULT_OK if not result["errors"] else f"error: {len(result['errors'])} not deleted"
        detail = f"{len(result['deleted'])} deleted: {', '.join(s['snapshot_id'] for s in result['deleted'])}"
        audit(context.store, cli_actor(), "snapshots.prune", f"older than {result['older_than']}", outcome, detail)
    if output is OutputFormat.json:
        render(result, output)
    else:
        verb = "would delete" if dry_run else "deleted"
        title = f"{verb} {len(result['deleted'])} snapshot(s) older than {result['older_than']}; {result['kept']} kept"
        render(result["deleted"], output, columns=_COLUMNS, title=title, headers=_HEADERS)
    for error in result["errors"]:
        context.console.print(f"[yellow]not deleted[/] {error['snapshot_id']}: {error['error']}", highlight=False)
    if result["errors"]:
        raise typer.Exit(1)


def print_snapshots(console: Console, view: dict[str, Any]) -> None:
    """``run show``: each server's snapshots, and how to roll back to them."""
    shown = [server for server in view["servers"] if server.get("snapshot")]
    if shown:
        console.print("EBS snapshots taken before patching:", markup=False)
    for server in shown:
        snapshot = server["snapshot"]
        ids = ", ".join(snapshot["snapshot_ids"]) or "none"
        state = snapshot["phase"] + (f" ({snapshot['reason']})" if snapshot["reason"] else "")
        console.print(f"{server['name']} {server['instance_id']}: snapshots {ids} — {state}", markup=False)
        if snapshot["pruned_at"]:
            console.print(f"  pruned at {snapshot['pruned_at']}: nothing left to roll back to", markup=False)
        for hint in snapshot["rollback"]:
            console.print(f"  to roll back the {hint}", markup=False)

"""``autopatch patch | runs | run show | status | retry | reboot | cancel | resume``.

Every input is checked before anything is written: a command that exits 2 leaves the database as it
was, and a dry run writes nothing. A run is started by claiming its servers (``start_run``), then
scanned and planned, then executed by this process as the run's one driver.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from autopatch.cli.baselines import print_held
from autopatch.cli.context import CliContext
from autopatch.cli.output import OutputFormat, render
from autopatch.cli.progress import progress_bar
from autopatch.cli.rings import print_rings, print_server_ring, read_health_script
from autopatch.cli.snapshots import print_snapshots
from autopatch.cli.views import short_time
from autopatch.domain.fleet import Instance
from autopatch.domain.identifiers import parse_run_id
from autopatch.domain.instance_ids import parse_instance_id
from autopatch.domain.patching import KbState, RebootPolicy, RunStatus
from autopatch.engine.driving import begin_patch, drive_run, plan_if_unplanned, plan_patch, prepare_retry
from autopatch.engine.options import EventCallback, RunOptions
from autopatch.engine.ownership import RunLease
from autopatch.engine.planning import RunPlan
from autopatch.engine.report import build_summary, run_view
from autopatch.maintenance_windows import continues_at
from autopatch.notify.render import render_text
from autopatch.operations import (
    cancel_run,
    plan_dry_run,
    plan_rows,
    prepare_patch,
    reboot_instance,
    run_rows,
    server_status,
)
from autopatch.rollout import CLI_FIELDS, Rollout, apply_rollout, parse_rollout, with_rings
from autopatch.wiring import fleet_poll

FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, json or csv")]
run_app = typer.Typer(help="One run in detail.", no_args_is_help=True)


@contextmanager
def live_view(console: Console, plan: RunPlan) -> Iterator[EventCallback]:
    """A progress bar per server, advancing KB by KB, fed by the engine's events."""
    columns = (
        TextColumn("{task.description:<24}"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, TaskID] = {}
        for server in plan.servers:
            pending = len(plan.pending(server.instance_id))
            if pending:
                tasks[server.instance_id] = progress.add_task(server.name[:24], total=pending, detail="waiting")

        def on_event(instance_id: str, kb: str, state: str, detail: str) -> None:
            task = tasks.get(instance_id)
            if task is None:
                return
            terminal = state in {str(s) for s in KbState if s.is_terminal}
            progress.update(task, advance=1 if terminal else 0, detail=f"{kb} {state}".strip())

        yield on_event


def _execute(context: CliContext, run_id: str, plan: RunPlan | None, lease: RunLease) -> RunStatus:
    """Drive the run as its lease holder, then notify once it is over (the summary is stored states)."""
    poll = fleet_poll(context.settings)
    if plan is not None:
        with live_view(context.console, plan) as on_event:
            status, results = drive_run(context.store, context.fleet, run_id, lease, context.notifiers, poll, on_event)
    else:
        status, results = drive_run(context.store, context.fleet, run_id, lease, context.notifiers, poll)
    if status is RunStatus.PAUSED:
        context.console.print(f"Run {run_id} paused: its window closed; `autopatch scheduler` continues it then.")
        return status
    if not status.is_terminal:
        context.console.print(f"Run {run_id} is now driven by another process; it continues there.")
        return status
    for result in results:
        if not result.ok:
            context.console.print(f"[yellow]notifier {result.notifier} failed[/]: {result.error}")
    if not any(n.name == "console" for n in context.notifiers):
        Console().print(render_text(build_summary(context.store, run_id)), markup=False, highlight=False)
    return status


def _exit_for(status: RunStatus) -> None:
    raise typer.Exit(0 if status is RunStatus.SUCCEEDED else 1)


def patch_command(
    ctx: typer.Context,
    all_servers: Annotated[bool, typer.Option("--all", help="every managed server")] = False,
    instance: Annotated[list[str] | None, typer.Option(help="instance id (repeatable)")] = None,
    tag: Annotated[str | None, typer.Option(help="only servers with this tag, KEY=VALUE")] = None,
    kb: Annotated[list[str] | None, typer.Option(help="only these KBs (repeatable)")] = None,
    severity: Annotated[str | None, typer.Option(help="minimum severity: Critical, Important, …")] = None,
    concurrency: Annotated[str, typer.Option(help="servers patched at once: a count, or a share such as 10%")] = "10",
    max_errors: Annotated[
        str | None, typer.Option(help="stop starting servers after N failed (a count, or a share such as 5%)")
    ] = None,
    rings: Annotated[
        str | None, typer.Option(help='ring by ring, a health gate after each: "canary=Ring=canary,10%;rest=*"')
    ] = None,
    health_script: Annotated[
        Path | None, typer.Option("--health-script", help="PowerShell run on each server of a ring; exit 0 = healthy")
    ] = None,
    soak: Annotated[str | None, typer.Option(help="after a ring passes: wait (30m, 2h), then check it again")] = None,
    reboot: Annotated[
        RebootPolicy, typer.Option(help="never, if-required or always-at-end")
    ] = RebootPolicy.IF_REQUIRED,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan, install nothing")] = False,
    snapshot: Annotated[
        bool, typer.Option("--snapshot", help="EBS snapshots of each server's volumes before its first KB")
    ] = False,
    baseline: Annotated[
        str | None, typer.Option(help="judge every server by this baseline (default: those its tags match)")
    ] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="with --dry-run: plan as on this date, YYYY-MM-DD")
    ] = None,
    exploited_only: Annotated[
        bool, typer.Option("--exploited-only", help="only KBs closing CVEs exploited (MSRC) or listed in CISA's KEV")
    ] = False,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Patch servers: scan, classify, then install Pending KBs one at a time per server (exploited exposure first)."""
    context: CliContext = ctx.obj
    rollout = parse_rollout(
        CLI_FIELDS,
        concurrency=concurrency,
        max_errors=max_errors,
        rings=rings,
        health_script=read_health_script(health_script),
        soak=soak,
    )
    request = prepare_patch(
        context.fleet,
        context.store,
        all_servers=all_servers,
        instance_ids=[parse_instance_id(value, "instance") for value in instance or []],
        tag=tag,
        kbs=kb or [],
        severity=severity,
        options=RunOptions(reboot=reboot, snapshot=snapshot),
        targets_rule="give exactly one of --all, --instance ID…, --tag K=V",
        baseline=baseline,
        as_of=as_of,
        dry_run=dry_run,
        as_of_field="--as-of",
        exploited_only=exploited_only,
    )
    request = apply_rollout(request, rollout)  # percentages resolved, rings checked against the targets
    if dry_run:
        with progress_bar(context.console, "Scanning") as on_progress:
            plan = plan_dry_run(context.fleet, context.store, request, on_progress)
        _print_plan(plan, output, rollout, request.targets)
        return
    run, lease = begin_patch(context.store, request)
    context.console.print(f"Run [bold]{run.run_id}[/]")
    with lease:
        with progress_bar(context.console, "Scanning") as on_progress:
            plan = plan_patch(context.store, context.fleet, run, request, on_progress)
        status = _execute(context, run.run_id, plan, lease)
    _exit_for(status)


def _print_plan(plan: RunPlan, output: OutputFormat, rollout: Rollout, targets: list[Instance]) -> None:
    rows = with_rings(plan_rows(plan), rollout, targets)
    total = sum(len(plan.pending(s.instance_id)) for s in plan.servers)
    headers = {"instance_id": "instance", "kbs_in_order": "KBs in order", "expected_reboots": "reboots"}
    render(rows, output, title=f"Plan (dry run): {total} KBs to install", headers=headers)
    if output is OutputFormat.table:
        print_held(rows)


def runs_command(ctx: typer.Context, output: FormatOption = OutputFormat.table) -> None:
    """Recent runs, newest first."""
    context: CliContext = ctx.obj
    rows = run_rows(context.store)
    if output is not OutputFormat.table:
        render(rows, output)
        return
    shown = [row | {"created_at": short_time(row["created_at"])} for row in rows]
    columns = ("run_id", "kind", "status", "created_at", "reason")
    render(
        shown, output, columns=columns, title="Runs, newest first", headers={"run_id": "run", "created_at": "created"}
    )


@run_app.command("show")
def run_show_command(ctx: typer.Context, run_id: str, output: FormatOption = OutputFormat.table) -> None:
    """One run: servers, KBs, attempts (command ids, exit codes, timings) and transitions."""
    context: CliContext = ctx.obj
    view = run_view(context.store, parse_run_id(run_id))
    if output is OutputFormat.json:
        render(view, output)
        return
    if output is OutputFormat.csv:  # one row per (server, KB), its latest attempt inline
        render([_run_csv_row(view, server, kb) for server in view["servers"] for kb in server["kbs"]], output)
        return
    console = Console()
    console.print(f"{view['run_id']} {view['kind']} {view['status']} {view['reason']}", markup=False)
    if (resumes := continues_at(context.store, context.store.get_run(view["run_id"]), datetime.now(UTC))) is not None:
        console.print(f"continues when its window opens: {short_time(resumes)} UTC", markup=False)
    console.print(exposure_line(view["exposure"]), markup=False)
    rows = [
        {"server": s["name"], "kb": k["kb"], "state": k["state"], "tries": len(k["attempts"]), "reason": k["reason"]}
        for s in view["servers"]
        for k in s["kbs"]
        if k["state"] not in ("Superseded", "Already Installed")
    ]
    render(rows, output, title="KBs (Superseded and Already Installed hidden; --format json shows all)")
    print_snapshots(console, view)
    print_rings(view["rings"])


def exposure_line(exposure: dict[str, Any]) -> str:
    """``open Critical/Important/all: 12/40/180 before → 0/2/31 after`` (``?`` where a phase is not stored yet)."""

    def counts(totals: dict[str, Any] | None) -> str:
        if totals is None:
            return "?"
        return f"{totals['open_critical']}/{totals['open_important']}/{totals['open_total']}"

    return f"open Critical/Important/all: {counts(exposure['before'])} before → {counts(exposure['after'])} after"


def _run_csv_row(view: dict[str, Any], server: dict[str, Any], kb: dict[str, Any]) -> dict[str, Any]:
    last = kb["attempts"][-1] if kb["attempts"] else {}
    return {
        "run_id": view["run_id"],
        "run_status": view["status"],
        "instance_id": server["instance_id"],
        "name": server["name"],
        "server_status": server["status"],
        "kb": kb["kb"],
        "state": kb["state"],
        "reason": kb["reason"],
        "attempts": len(kb["attempts"]),
        "command_id": last.get("command_id"),
        "exit_code": last.get("exit_code"),
        "hresult": last.get("hresult"),
        "updated_at": kb["updated_at"],
    }


def status_command(ctx: typer.Context, instance_id: str, output: FormatOption = OutputFormat.table) -> None:
    """A server's patch status: KBs done out of those that needed work, and each KB's latest state."""
    context: CliContext = ctx.obj
    target = parse_instance_id(instance_id)
    view = server_status(context.fleet, context.store, target)
    if output is OutputFormat.json:
        render(view, output)
        return
    if output is OutputFormat.csv:
        render([{"instance_id": target} | kb for kb in view["kbs"]], output)
        return
    others = ", ".join(f"{count} {state}" for state, count in view["not_counted"].items())
    progress = (
        f"{view['completed']}/{view['total']} KBs done ({view['percentage']}%)"
        if view["total"]
        else "nothing to install"
    )
    Console().print(f"{target}: {progress}" + (f"; not counted: {others}" if others else ""), markup=False)
    print_server_ring(context.store, target, view["kbs"])
    worked = [kb for kb in view["kbs"] if kb["state"] not in ("Already Installed", "Superseded")]
    title = "KBs (Already Installed and Superseded hidden; --format json shows all)"
    render(worked, output, columns=("kb", "state", "run_id", "reason"), title=title, headers={"run_id": "run"})


def retry_command(ctx: typer.Context, instance_id: str, kb: str) -> None:
    """Retry one KB on one server (a run of its own, with its own summary)."""
    context: CliContext = ctx.obj
    plan, lease = prepare_retry(context.store, context.fleet, parse_instance_id(instance_id), kb)
    run_id = plan.run.run_id
    context.console.print(f"Retry run [bold]{run_id}[/]")
    with lease:
        status = _execute(context, run_id, plan, lease)
    _exit_for(status)


def reboot_command(ctx: typer.Context, instance_id: str) -> None:
    """Reboot a server now (refused while it is offline or a run is patching it)."""
    context: CliContext = ctx.obj
    target = parse_instance_id(instance_id)
    reboot_instance(context.fleet, context.store, target)
    Console().print(f"Reboot requested for {target}")


def cancel_command(ctx: typer.Context, run_id: str) -> None:
    """Cancel a run: KBs not started become Cancelled at once; a KB being installed finishes first."""
    context: CliContext = ctx.obj
    run_id = parse_run_id(run_id)
    status = cancel_run(context.store, run_id)
    if status is RunStatus.CANCELLED:
        Console().print(f"Run {run_id} cancelled")
    else:
        Console().print(f"Run {run_id} cancelling: KBs not started are Cancelled; installs in flight finish first")


def resume_command(ctx: typer.Context) -> None:
    """Resume every unfinished run nobody drives (after a crash or a kill of the orchestrator)."""
    context: CliContext = ctx.obj
    unfinished = context.store.unfinished_runs()
    if not unfinished:
        Console().print("No unfinished runs.")
        return
    worst = RunStatus.SUCCEEDED
    for run in unfinished:
        if run.status is RunStatus.PAUSED:  # its maintenance window continues it, not resume
            context.console.print(f"Run {run.run_id} is paused until its window opens again (`autopatch scheduler`)")
            continue
        lease = RunLease.claim(context.store, run.run_id)
        if lease is None:
            held = context.store.get_run(run.run_id)
            context.console.print(f"Run {run.run_id} is driven by {held.owner}: left to it")
            continue
        context.console.print(f"Resuming [bold]{run.run_id}[/]")
        with lease:
            plan = None
            if not run.planned:
                with progress_bar(context.console, "Scanning") as on_progress:
                    plan = plan_if_unplanned(context.store, context.fleet, run, on_progress)
            status = _execute(context, run.run_id, plan, lease)
        if status is not RunStatus.SUCCEEDED:
            worst = status
    _exit_for(worst)

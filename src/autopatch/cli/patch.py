"""``autopatch patch | runs | run show | status | retry | reboot | cancel | resume``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from autopatch.catalog.queries import parse_severities
from autopatch.cli.context import CliContext
from autopatch.cli.output import OutputFormat, render
from autopatch.cli.progress import progress_bar
from autopatch.domain.exposure import severity_rank
from autopatch.domain.identifiers import parse_kb
from autopatch.domain.instance_ids import parse_instance_id
from autopatch.domain.patching import KbState, RebootPolicy, RunStatus
from autopatch.domain.polling import PollPolicy
from autopatch.engine.planning import RunPlan, plan_retry, plan_run, store_plan
from autopatch.engine.report import build_summary, instance_status, run_view, send_summary
from autopatch.engine.runner import Engine, EventCallback, RunOptions
from autopatch.errors import ValidationError
from autopatch.notify.render import render_text
from autopatch.scanning import discover_instances, identify, resolve_targets

FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, json or csv")]
SIMULATOR_POLL = PollPolicy(first_delay=0.05, factor=1.5, max_delay=2.0, timeout=600.0)
run_app = typer.Typer(help="One run in detail.", no_args_is_help=True)


def _tag_filter(tag: str) -> tuple[str, str]:
    key, sep, value = tag.partition("=")
    if not sep or not key:
        raise ValidationError("tag", tag, "a tag filter is KEY=VALUE, e.g. Environment=prod")
    return key, value


@contextmanager
def live_view(console: Console, plan: RunPlan) -> Iterator[EventCallback]:
    """A progress bar per server, advancing KB by KB, fed by the engine's events."""
    columns = (
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=console) as progress:
        tasks: dict[str, TaskID] = {}
        for server in plan.servers:
            pending = len(plan.pending(server.instance_id))
            if pending:
                tasks[server.instance_id] = progress.add_task(server.name[:28], total=pending, detail="waiting")

        def on_event(instance_id: str, kb: str, state: str, detail: str) -> None:
            task = tasks.get(instance_id)
            if task is None:
                return
            terminal = state in {str(s) for s in KbState if s.is_terminal}
            progress.update(task, advance=1 if terminal else 0, detail=f"{kb} {state}".strip())

        yield on_event


def _execute(context: CliContext, run_id: str, plan: RunPlan | None, options: RunOptions | None) -> RunStatus:
    console = Console()
    if options is None and context.settings.fleet == "simulator":
        options = replace(RunOptions.from_dict(context.store.get_run(run_id).options), poll=SIMULATOR_POLL)
    if plan is not None:
        with live_view(context.console, plan) as on_event:
            status = Engine(context.store, context.fleet, on_event=on_event).execute(run_id, options)
    else:
        status = Engine(context.store, context.fleet).execute(run_id, options)
    for result in send_summary(context.store, run_id, context.notifiers):
        if not result.ok:
            context.console.print(f"[yellow]notifier {result.notifier} failed[/]: {result.error}")
    if not any(n.name == "console" for n in context.notifiers):
        console.print(render_text(build_summary(context.store, run_id)))
    return status


def patch_command(
    ctx: typer.Context,
    all_servers: Annotated[bool, typer.Option("--all", help="every managed server")] = False,
    instance: Annotated[list[str] | None, typer.Option(help="instance id (repeatable)")] = None,
    tag: Annotated[str | None, typer.Option(help="only servers with this tag, KEY=VALUE")] = None,
    kb: Annotated[list[str] | None, typer.Option(help="only these KBs (repeatable)")] = None,
    severity: Annotated[str | None, typer.Option(help="minimum severity: Critical, Important, …")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=1000, help="servers patched at once")] = 10,
    max_errors: Annotated[int | None, typer.Option(min=1, help="stop starting servers after N failed")] = None,
    reboot: Annotated[
        RebootPolicy, typer.Option(help="never, if-required or always-at-end")
    ] = RebootPolicy.IF_REQUIRED,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan, install nothing")] = False,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Patch servers: scan, classify, then install Pending KBs one at a time per server."""
    context: CliContext = ctx.obj
    if sum((all_servers, bool(instance), tag is not None)) != 1:
        raise ValidationError("targets", None, "give exactly one of --all, --instance ID…, --tag K=V")
    ids = [parse_instance_id(value, "instance") for value in instance or []]
    kbs = [parse_kb(value) for value in kb or []]
    # "Critical,Important" reads as "Important and above": the least severe one named is the floor.
    minimum = max(parse_severities([severity]), key=severity_rank) if severity else None
    discover_instances(context.fleet, context.store)
    targets = resolve_targets(context.store, ids)
    if tag is not None:
        key, value = _tag_filter(tag)
        targets = [t for t in targets if t.tags.get(key) == value]
    options = RunOptions(concurrency=concurrency, max_errors=max_errors, reboot=reboot)
    if context.settings.fleet == "simulator":  # simulated servers answer in (scaled) seconds
        options = replace(options, poll=SIMULATOR_POLL)
    with progress_bar(context.console, "Scanning") as on_progress:
        plan = plan_run(context.store, context.fleet, targets, kbs, minimum, options.as_dict(), on_progress)
    if dry_run:
        rows: list[dict[str, object]] = [
            {
                "instance_id": s.instance_id,
                "name": s.name,
                "product": s.product,
                "build": s.build_before,
                "kbs_in_order": [i.kb for i in plan.pending(s.instance_id)],
                "expected_reboots": plan.expected_reboots(s.instance_id),
                "note": s.reason,
            }
            for s in plan.servers
        ]
        total = sum(len(plan.pending(s.instance_id)) for s in plan.servers)
        render(rows, output, title=f"Plan (dry run): {total} KBs to install")
        return
    run_id = store_plan(context.store, plan)
    context.console.print(f"Run [bold]{run_id}[/]")
    status = _execute(context, run_id, plan, options)
    raise typer.Exit(0 if status is RunStatus.SUCCEEDED else 1)


def runs_command(ctx: typer.Context, output: FormatOption = OutputFormat.table) -> None:
    """Recent runs, newest first."""
    context: CliContext = ctx.obj
    rows = [
        {
            "run_id": r.run_id,
            "kind": r.kind,
            "status": str(r.status),
            "created_at": r.created_at,
            "finished_at": r.finished_at,
            "reason": r.reason,
        }
        for r in context.store.list_runs()
    ]
    render(rows, output, title="Runs")


@run_app.command("show")
def run_show_command(ctx: typer.Context, run_id: str, output: FormatOption = OutputFormat.table) -> None:
    """One run: servers, KBs, attempts (command ids, exit codes, timings) and transitions."""
    context: CliContext = ctx.obj
    view = run_view(context.store, run_id)
    if output is not OutputFormat.table:
        render(view, output)
        return
    Console().print(f"[bold]{view['run_id']}[/] {view['kind']} {view['status']} {view['reason']}")
    rows = [
        {"server": s["name"], "kb": k["kb"], "state": k["state"], "attempts": len(k["attempts"]), "reason": k["reason"]}
        for s in view["servers"]
        for k in s["kbs"]
        if k["state"] not in ("Superseded", "Already Installed")
    ]
    render(rows, output, title="KBs (Superseded and Already Installed hidden; --format json shows all)")


def status_command(ctx: typer.Context, instance_id: str, output: FormatOption = OutputFormat.table) -> None:
    """A server's patch status: total, completed, percentage and each KB's latest state."""
    context: CliContext = ctx.obj
    view = instance_status(context.store, parse_instance_id(instance_id))
    if output is not OutputFormat.table:
        render(view, output)
        return
    Console().print(f"{view['instance_id']}: {view['completed']}/{view['total']} completed ({view['percentage']}%)")
    render(view["kbs"], output, title="KBs")


def retry_command(ctx: typer.Context, instance_id: str, kb: str) -> None:
    """Retry one KB on one server (a run of its own, with its own summary)."""
    context: CliContext = ctx.obj
    target = parse_instance_id(instance_id)
    kb_id = parse_kb(kb)
    if context.store.get_instance(target) is None:
        discover_instances(context.fleet, context.store)
    [instance] = resolve_targets(context.store, [target])
    scan = context.store.latest_scans([target]).get(target)
    identity = identify(instance, scan)
    plan = plan_retry(context.store, instance, kb_id, identity.product, scan.build if scan else None)
    run_id = store_plan(context.store, plan)
    context.console.print(f"Retry run [bold]{run_id}[/]")
    status = _execute(context, run_id, plan, None)
    raise typer.Exit(0 if status is RunStatus.SUCCEEDED else 1)


def reboot_command(ctx: typer.Context, instance_id: str) -> None:
    """Reboot a server now."""
    context: CliContext = ctx.obj
    target = parse_instance_id(instance_id)
    if context.store.get_instance(target) is None:
        discover_instances(context.fleet, context.store)
    resolve_targets(context.store, [target])  # an unknown instance is an input error
    context.fleet.reboot(target)
    Console().print(f"Reboot requested for {target}")


def cancel_command(ctx: typer.Context, run_id: str) -> None:
    """Cancel a run: KBs not started become Cancelled; a KB being installed finishes first."""
    context: CliContext = ctx.obj
    run = context.store.get_run(run_id)
    if run.status.is_terminal:
        raise ValidationError("run", run_id, f"is already {run.status}; only Pending or Running runs can be cancelled")
    context.store.set_run_status(run_id, RunStatus.CANCELLED, "cancelled by the operator")
    Console().print(f"Run {run_id} cancelled")


def resume_command(ctx: typer.Context) -> None:
    """Resume every unfinished run (after a crash or a kill of the orchestrator)."""
    context: CliContext = ctx.obj
    unfinished = context.store.unfinished_runs()
    if not unfinished:
        Console().print("No unfinished runs.")
        return
    worst = RunStatus.SUCCEEDED
    for run in unfinished:
        context.console.print(f"Resuming [bold]{run.run_id}[/]")
        status = _execute(context, run.run_id, None, None)
        worst = status if status is not RunStatus.SUCCEEDED else worst
    raise typer.Exit(0 if worst is RunStatus.SUCCEEDED else 1)

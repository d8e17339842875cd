"""``autopatch window create | update | list | show | delete | next`` and ``autopatch scheduler``.

The same steps as ``/api/v1/windows`` (``autopatch.maintenance_windows``); changes are audited
with ``cli:<OS user>`` as the actor, as settings are. ``scheduler`` runs the passes that start
each window's run and continue paused ones (``engine/scheduler.py``), in the foreground until
interrupted, or once (``--once``, for cron and tests: it drives what it started until each run
ends or its window pauses it).
"""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console

from autopatch.admin_settings import effective_settings
from autopatch.cli.access import FormatOption, audited
from autopatch.cli.context import CliContext
from autopatch.cli.output import OutputFormat, render
from autopatch.cli.views import short_time
from autopatch.engine.scheduler import SCHEDULER_INTERVAL_SECONDS, LocalScheduler, ScheduledAction
from autopatch.maintenance_windows import (
    create_window,
    delete_window,
    next_rows,
    update_window,
    window_detail,
    window_rows,
)
from autopatch.notify.factory import notifiers_from_settings
from autopatch.wiring import fleet_poll, open_store

app = typer.Typer(
    help="Maintenance windows: when scheduled runs patch a group of servers (`autopatch scheduler` starts them).",
    no_args_is_help=True,
)
CronOption = Annotated[str, typer.Option(help="five cron fields, read in --timezone, e.g. '0 2 * * SAT'")]
DurationOption = Annotated[str, typer.Option(help="how long each occurrence lasts: 4h, 90m, 1h30m")]
CutoffOption = Annotated[str, typer.Option(help="no new KB starts this long before the end (0m: until the end)")]
GroupOption = Annotated[str, typer.Option(help="the servers patched: tag KEY=VALUE, e.g. PatchGroup=web")]
BaselineOption = Annotated[str | None, typer.Option(help="the baseline the runs plan with (`autopatch baseline`)")]
ZoneOption = Annotated[str, typer.Option(help="IANA time zone of the cron expression, e.g. Europe/Berlin")]
CountOption = Annotated[int, typer.Option(min=1, max=100, help="how many occurrences")]
_COLUMNS = ("name", "cron", "timezone", "duration", "cutoff", "group", "baseline", "next_start")


def _now() -> datetime:
    return datetime.now(UTC)


def _table_row(row: dict[str, Any]) -> dict[str, Any]:
    upcoming = row["next"][0]["starts_local"] if row["next"] else None
    return row | {"next_start": "open now" if row["accepting_new_kbs"] else upcoming}


def _render_windows(rows: list[dict[str, Any]], output: OutputFormat, title: str) -> None:
    if output is OutputFormat.table:
        render([_table_row(row) for row in rows], output, columns=_COLUMNS, title=title)
    elif output is OutputFormat.csv:  # one flat row per window: the next start only
        render([{key: _table_row(row)[key] for key in (*_COLUMNS, "created_at", "updated_at")} for row in rows], output)
    else:
        render(rows, output)


@app.command("create")
def create_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="1 to 64 letters, digits, '.', '_' or '-'")],
    cron: CronOption,
    duration: DurationOption,
    group: GroupOption,
    cutoff: CutoffOption = "0m",
    baseline: BaselineOption = None,
    timezone: ZoneOption = "UTC",
    output: FormatOption = OutputFormat.table,
) -> None:
    """A window: a patch run of GROUP in each occurrence; no new KB after the cutoff, the rest waits."""
    context: CliContext = ctx.obj
    with audited(context, "window.create", name):
        row = create_window(
            context.store,
            _now(),
            name=name,
            cron=cron,
            duration=duration,
            cutoff=cutoff,
            group=group,
            baseline=baseline,
            timezone=timezone,
        )
    _render_windows([row], output, f"Window {name} created")


@app.command("update")
def update_command(
    ctx: typer.Context,
    name: str,
    cron: Annotated[str | None, typer.Option(help="five cron fields")] = None,
    duration: Annotated[str | None, typer.Option(help="4h, 90m, 1h30m")] = None,
    cutoff: Annotated[str | None, typer.Option(help="0m, 30m, 1h")] = None,
    group: Annotated[str | None, typer.Option(help="tag KEY=VALUE")] = None,
    baseline: Annotated[str | None, typer.Option(help="a baseline's name; '' for none")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA time zone")] = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Change some of a window's settings; a run under way keeps the times it started with."""
    context: CliContext = ctx.obj
    with audited(context, "window.update", name):
        row = update_window(
            context.store,
            name,
            _now(),
            cron=cron,
            duration=duration,
            cutoff=cutoff,
            group=group,
            baseline=baseline,
            timezone=timezone,
        )
    _render_windows([row], output, f"Window {name} updated")


@app.command("list")
def list_command(ctx: typer.Context, output: FormatOption = OutputFormat.table) -> None:
    """Every window with its schedule, group and next start (JSON: the next three occurrences)."""
    context: CliContext = ctx.obj
    rows = window_rows(context.store, _now())
    if not rows and output is OutputFormat.table:
        Console().print("No windows yet: `autopatch window create NAME --cron … --duration … --group K=V`.")
        return
    _render_windows(rows, output, "Maintenance windows")


@app.command("show")
def show_command(
    ctx: typer.Context, name: str, count: CountOption = 5, output: FormatOption = OutputFormat.table
) -> None:
    """One window: its next occurrences and the runs its past occurrences started or continued."""
    context: CliContext = ctx.obj
    detail = window_detail(context.store, name, _now(), count)
    if output is OutputFormat.json:
        render(detail, output)
        return
    if output is OutputFormat.csv:
        render(detail["occurrences"], output)
        return
    _render_windows([detail], output, f"Window {name}")
    render(detail["next"], output, columns=("starts_local", "starts_at", "cutoff_at", "closes_at"), title="Next")
    if not detail["occurrences"]:
        Console().print("No occurrence acted on yet (`autopatch scheduler` starts them).")
        return
    shown = [row | {"starts_at": short_time(row["starts_at"])} for row in detail["occurrences"]]
    columns = ("starts_at", "run_id", "run_status", "run_reason", "note")
    render(shown, output, columns=columns, title="Occurrences acted on, newest first")


@app.command("delete")
def delete_command(ctx: typer.Context, name: str) -> None:
    """Forget a window (refused while one of its runs is unfinished: cancel it first)."""
    context: CliContext = ctx.obj
    with audited(context, "window.delete", name):
        delete_window(context.store, name)
    Console().print(f"Window {name} deleted")


@app.command("next")
def next_command(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="one window (all windows when omitted)")] = None,
    count: CountOption = 5,
    output: FormatOption = OutputFormat.table,
) -> None:
    """The next occurrences: start (UTC and the window's own time), cutoff, close."""
    context: CliContext = ctx.obj
    rows = next_rows(context.store, name, _now(), count)
    columns = ("window", "starts_local", "starts_at", "cutoff_at", "closes_at")
    render(rows, output, columns=columns if output is OutputFormat.table else None, title="Next occurrences")


def scheduler_command(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="one pass, then drive what it started; for cron")] = False,
    interval: Annotated[
        float, typer.Option(min=0.05, max=3600, help="seconds between passes")
    ] = SCHEDULER_INTERVAL_SECONDS,
) -> None:
    """Start each window's run when it opens and continue paused runs, until interrupted (or --once)."""
    context: CliContext = ctx.obj
    settings = context.settings
    scheduler = LocalScheduler(
        lambda: open_store(settings),
        lambda _store: context.fleet,  # one fleet adapter for every run (built on the first pass)
        lambda store: notifiers_from_settings(effective_settings(settings, store).notify),
        poll=fleet_poll(settings),
        interval=interval,
    )
    console = Console()

    def say(action: ScheduledAction) -> None:
        text = f"window {action.window}: {action.action} {action.run_id or ''} {action.detail}"
        console.print(" ".join(text.split()), markup=False, highlight=False)

    scheduler.on_action = say
    if once:
        try:
            actions = scheduler.run_pass()
            scheduler.wait()
        finally:
            scheduler.shutdown()
        if not actions:
            console.print("Nothing due.")
        return
    stop = threading.Event()

    def interrupted(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, interrupted)
    context.console.print(f"Scheduler: a pass every {interval:g} s; Ctrl-C stops it (runs stop between KBs)")
    scheduler.start()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        scheduler.shutdown()

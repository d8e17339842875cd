"""``autopatch sla show | set``: the days an open CVE may stay open, per severity (``domain/sla.py``).

The same steps as ``GET``/``PUT /api/v1/sla`` (``autopatch.sla_policy``); a change is audited
(``sla.set``, actor ``cli:<OS user>``) like the API's, refused ones included.
"""

from __future__ import annotations

from typing import Annotated

import typer

from autopatch.cli.access import FormatOption, audited
from autopatch.cli.context import CliContext
from autopatch.cli.output import OutputFormat, render
from autopatch.sla_policy import set_sla_policy, sla_rows, sla_view

app = typer.Typer(help="Remediation deadlines: days per severity from a CVE's release.", no_args_is_help=True)
Days = Annotated[int | None, typer.Option(help="days from the CVE's release (1-3650)")]


@app.command("show")
def show_command(ctx: typer.Context, output: FormatOption = OutputFormat.table) -> None:
    """Days per severity now, and whether they are stored or the defaults (15, 30, 90, 180)."""
    context: CliContext = ctx.obj
    view = sla_view(context.store)
    if output is OutputFormat.json:
        render(view, output)
        return
    render(
        sla_rows(view), output, title="SLA: days from a CVE's release to its deadline (an earlier KEV due date wins)"
    )


@app.command("set")
def set_command(
    ctx: typer.Context,
    critical: Days = None,
    important: Days = None,
    moderate: Days = None,
    low: Days = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Change the days of some severities (the others keep theirs); applies to every listing from now on."""
    context: CliContext = ctx.obj
    changes = {"critical": critical, "important": important, "moderate": moderate, "low": low}
    with audited(context, "sla.set", "sla") as note:
        note.detail = ", ".join(f"{name}={value}" for name, value in changes.items() if value is not None)
        view = set_sla_policy(context.store, changes)
    if output is OutputFormat.json:
        render(view, output)
        return
    render(sla_rows(view), output, title="SLA stored")

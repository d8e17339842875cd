"""``autopatch report compliance | sla | cve | trend``: the reports of ``autopatch.reports``, from the shell.

``--format table`` (the default) prints the summary and the tables; ``json``, ``csv`` and ``html``
go to stdout unless ``--output FILE`` is given; ``pdf`` goes to ``--output`` or, without it, to a
file in the current folder named after the report and the time (``compliance_20260128T1042Z.pdf``),
whose name is printed: PDF bytes are not for a terminal.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from autopatch.catalog.queries import parse_severities
from autopatch.cli.context import CliContext
from autopatch.cli.output import OutputFormat, render
from autopatch.domain.instance_ids import parse_instance_id
from autopatch.engine.policy import parse_as_of
from autopatch.errors import ValidationError
from autopatch.reports.compliance import compliance_report
from autopatch.reports.cve import cve_report
from autopatch.reports.formats import ReportFormat, render_report
from autopatch.reports.model import Report
from autopatch.reports.sla import sla_report
from autopatch.reports.trend import trend_report

app = typer.Typer(
    help="Reports: compliance per baseline, overdue CVEs, one CVE across the fleet, trends. "
    "Formats: table, json, csv, html, pdf.",
    no_args_is_help=True,
)
FormatOption = Annotated[ReportFormat, typer.Option("--format", "-f", help="table, json, csv, html or pdf")]
OutputOption = Annotated[
    Path | None, typer.Option("--output", "-o", help="write to this file (pdf default: ./<report>_<time>.pdf)")
]


def emit(context: CliContext, report: Report, fmt: ReportFormat, output: Path | None) -> None:
    """Print or write the report in ``fmt``."""
    if fmt is ReportFormat.table:
        _print_table(report)
        return
    body, rendering = render_report(report, fmt)
    target = (
        output
        if output is not None
        else Path(report.filename(rendering.extension))
        if fmt is ReportFormat.pdf
        else None
    )
    if target is None or str(target) == "-":
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
        return
    try:
        target.write_bytes(body)
    except OSError as exc:
        raise ValidationError("output", str(target), f"must be a writable file ({exc.strerror})") from exc
    context.console.print(f"{report.title}: {len(body):,} bytes written to {target}", markup=False, highlight=False)


def _print_table(report: Report) -> None:
    lines = [report.title, *(f"{label}: {value}" for label, value in report.summary)]
    sys.stdout.write("\n".join(lines) + "\n\n")
    for table in report.tables:
        if not table.rows:
            sys.stdout.write(f"{table.title}: {table.empty}\n\n")
            continue
        headers = {column.key: column.header for column in table.columns}
        rows = [dict(row) for row in table.rows]
        render(rows, OutputFormat.table, columns=table.terminal_keys(), title=table.title, headers=headers)
        sys.stdout.write("\n")
    sys.stdout.flush()


@app.command("compliance")
def compliance_command(
    ctx: typer.Context,
    baseline: Annotated[str | None, typer.Option(help="judge every server by this baseline")] = None,
    output_format: FormatOption = ReportFormat.table,
    output: OutputOption = None,
) -> None:
    """Compliant / non-compliant / unknown per server (Patch Manager's states), with the missing approved KBs."""
    context: CliContext = ctx.obj
    emit(context, compliance_report(context.store, baseline), output_format, output)


@app.command("sla")
def sla_command(
    ctx: typer.Context,
    severity: Annotated[list[str] | None, typer.Option(help="Critical,Important,… (default: all)")] = None,
    instance: Annotated[list[str] | None, typer.Option("--instance", help="only these servers")] = None,
    cves: Annotated[bool, typer.Option("--cves", help="one row per overdue (server, CVE)")] = False,
    output_format: FormatOption = ReportFormat.table,
    output: OutputOption = None,
) -> None:
    """Open CVEs past their deadline, by server and severity, oldest deadline first."""
    context: CliContext = ctx.obj
    wanted = parse_severities(severity) if severity else None
    ids = [parse_instance_id(value) for value in instance or []]
    emit(context, sla_report(context.store, wanted, ids, cves), output_format, output)


@app.command("cve")
def cve_command(
    ctx: typer.Context,
    cve: Annotated[str, typer.Argument(help="CVE-YYYY-NNNN")],
    output_format: FormatOption = ReportFormat.table,
    output: OutputOption = None,
) -> None:
    """Every server exposed to one CVE: since when, the KB that closes it, and whether Windows Update offers it."""
    context: CliContext = ctx.obj
    emit(context, cve_report(context.store, cve), output_format, output)


@app.command("trend")
def trend_command(
    ctx: typer.Context,
    days: Annotated[int, typer.Option(help="how many days (1-3650)")] = 90,
    until: Annotated[str | None, typer.Option(help="last day, YYYY-MM-DD (default: today, UTC)")] = None,
    output_format: FormatOption = ReportFormat.table,
    output: OutputOption = None,
) -> None:
    """Open and overdue CVEs per severity per day, and the mean time to remediate, from the exposure history."""
    context: CliContext = ctx.obj
    last: date | None = parse_as_of(until, "until") if until is not None else None
    emit(context, trend_report(context.store, days, last), output_format, output)

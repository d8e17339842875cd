"""``autopatch assess`` (typed-in facts) and ``autopatch exposure`` (the scanned fleet)."""

from __future__ import annotations

from typing import Annotated

import typer

from autopatch.assessment import assess_facts
from autopatch.catalog.queries import parse_severities
from autopatch.cli.context import CliContext
from autopatch.cli.output import OutputFormat, render
from autopatch.domain.identifiers import parse_month

FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, json or csv")]


def assess_command(
    ctx: typer.Context,
    product: Annotated[str, typer.Option(help="exact MSRC product name, e.g. 'Windows Server 2022'")],
    build: Annotated[str, typer.Option(help="full build, e.g. 10.0.20348.2227")],
    installed: Annotated[list[str] | None, typer.Option(help="installed KB (repeat the option)")] = None,
    month: Annotated[str | None, typer.Option(help="only CVEs of this MSRC month, YYYY-MM")] = None,
    severity: Annotated[list[str] | None, typer.Option(help="Critical,Important,…")] = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Exposure for facts typed in by hand (an air-gapped server): which CVEs are open, and why."""
    context: CliContext = ctx.obj
    result = assess_facts(context.store, product, build, installed or [], month=parse_month(month) if month else None)
    if severity:
        wanted = parse_severities(severity)
        result["cves"] = [cve for cve in result["cves"] if cve["severity"] in wanted]
        result["summary"] = {
            status: sum(1 for cve in result["cves"] if cve["status"] == status) for status in ("open", "fixed")
        }
    if output is OutputFormat.json:
        render(result, output)
        return
    columns = ("cve", "severity", "month", "status", "fixing_kbs", "reason")
    summary = result["summary"]
    title = f"{result['product']} at {result['build']}: {summary['open']} open, {summary['fixed']} fixed"
    render(result["cves"], output, columns=columns, title=title)

"""``autopatch kev update | import FILE | list``: CISA's Known Exploited Vulnerabilities catalog.

``update`` fetches the live feed (``AUTOPATCH_KEV_URL``, CISA's by default) with the same timeout,
retries and backoff as MSRC downloads; ``import`` reads CISA's JSON (plain or gzip) from a file,
for machines with no route out. Either replaces the stored catalog whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autopatch.catalog.kev import KevImportSummary, fetch_kev, import_kev_file, kev_status, list_kev
from autopatch.cli.context import CliContext
from autopatch.cli.output import OutputFormat, render
from autopatch.domain.identifiers import parse_cve
from autopatch.engine.policy import parse_as_of

app = typer.Typer(help="CISA's Known Exploited Vulnerabilities catalog (KEV).", no_args_is_help=True)
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, json or csv")]


def _print_summary(summary: KevImportSummary, output: OutputFormat) -> None:
    data = summary.as_dict()
    if output is OutputFormat.table:
        rows = [{"item": name.replace("_", " "), "value": value} for name, value in data.items()]
        render(rows, output, title="KEV import")
    else:
        render(data if output is OutputFormat.json else [data], output)


@app.command("update")
def update_command(ctx: typer.Context, output: FormatOption = OutputFormat.table) -> None:
    """Fetch CISA's live KEV feed (JSON) and store it in place of the stored catalog."""
    context: CliContext = ctx.obj
    _print_summary(fetch_kev(context.store, context.effective_settings), output)


@app.command("import")
def import_command(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CISA's known_exploited_vulnerabilities.json (or .json.gz)")],
    output: FormatOption = OutputFormat.table,
) -> None:
    """Import the KEV catalog from a file (offline, air-gapped)."""
    context: CliContext = ctx.obj
    _print_summary(import_kev_file(context.store, file), output)


@app.command("list")
def list_command(
    ctx: typer.Context,
    as_of: Annotated[str | None, typer.Option(help="only entries CISA had added by YYYY-MM-DD")] = None,
    vendor: Annotated[str | None, typer.Option(help="vendor name contains, e.g. Microsoft")] = None,
    cve: Annotated[list[str] | None, typer.Option(help="only these CVE ids")] = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Stored KEV entries, newest addition first, with CISA's due dates."""
    context: CliContext = ctx.obj
    cves = [parse_cve(value) for value in cve] if cve is not None else None
    rows = list_kev(context.store, parse_as_of(as_of), vendor, cves)
    if output is not OutputFormat.table:
        render(rows, output)
        return
    status = kev_status(context.store)
    if status is None:
        context.console.print("No KEV catalog: `autopatch kev update` (online) or `autopatch kev import FILE`.")
        return
    columns = ("cveID", "dateAdded", "dueDate", "vendorProject", "product", "knownRansomwareCampaignUse")
    headers = {
        "cveID": "cve",
        "dateAdded": "added",
        "dueDate": "due",
        "vendorProject": "vendor",
        "knownRansomwareCampaignUse": "ransomware",
    }
    title = f"KEV {status['catalog_version']}: {len(rows)} of {status['count']} entries"
    render(rows, output, columns=columns, title=title, headers=headers)

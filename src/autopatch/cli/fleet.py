"""``autopatch fleet …`` (discover, scan) and ``autopatch exposure``."""

from __future__ import annotations

from typing import Annotated

import typer

from autopatch.assessment import fleet_exposure
from autopatch.catalog.queries import parse_severities
from autopatch.cli.context import CliContext
from autopatch.cli.output import OutputFormat, render
from autopatch.cli.progress import progress_bar
from autopatch.cli.views import exposure_csv_rows, print_exposure, risk_flags, short_product, short_time
from autopatch.domain.instance_ids import parse_instance_id
from autopatch.engine.policy import parse_as_of
from autopatch.operations import fleet_rows, scan_fleet

app = typer.Typer(help="The fleet: discover and scan Windows servers.", no_args_is_help=True)
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, json or csv")]


@app.command("list")
def list_command(ctx: typer.Context, output: FormatOption = OutputFormat.table) -> None:
    """Discover the fleet: id, name, product, build, online, last scan."""
    context: CliContext = ctx.obj
    rows = fleet_rows(context.fleet, context.store)
    if output is not OutputFormat.table:
        flat = rows if output is OutputFormat.json else [row | {"tags": _tags(row["tags"])} for row in rows]
        render(flat, output)
        return
    shown = [
        {
            "server": f"{row['name']} {row['instance_id']}",
            "product": short_product(row["product"]),
            "build": row["build"],
            "online": "yes" if row["online"] else f"no, since {short_time(row['offline_since'])}",
            # Name and OS repeat the server and product columns; JSON and CSV carry every tag.
            "tags": _tags({k: v for k, v in row["tags"].items() if k not in ("Name", "OS")}),
        }
        for row in rows
    ]
    render(shown, output, title=f"Fleet ({context.settings.fleet}): {len(rows)} servers")


def _tags(tags: dict[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in sorted(tags.items())]


@app.command("scan")
def scan_command(
    ctx: typer.Context,
    instance_ids: Annotated[list[str] | None, typer.Argument(help="instance ids (default: all)")] = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Scan servers: build, installed hotfixes, updates Windows Update offers, pending reboot."""
    context: CliContext = ctx.obj
    ids = [parse_instance_id(value) for value in instance_ids or []]
    with progress_bar(context.console, "Scanning") as on_progress:
        rows = scan_fleet(context.fleet, context.store, ids, on_progress=on_progress)
    scanned = sum(1 for row in rows if row["result"] == "scanned")
    render(rows, output, title=f"Scan: {scanned} scanned, {len(rows) - scanned} failed")


def exposure_command(
    ctx: typer.Context,
    instance: Annotated[list[str] | None, typer.Option(help="only these instance ids")] = None,
    severity: Annotated[list[str] | None, typer.Option(help="Critical,Important,…")] = None,
    as_of: Annotated[
        str | None, typer.Option(help="evaluate on YYYY-MM-DD: later CVEs, KBs and KEV entries do not exist")
    ] = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Per server: open Critical/Important CVEs and the KBs that close them (per-CVE detail with --instance)."""
    context: CliContext = ctx.obj
    ids = [parse_instance_id(value, "instance") for value in instance or []]
    severities = parse_severities(severity) if severity is not None else None
    with_cves = bool(ids) or output is not OutputFormat.table
    rows = fleet_exposure(context.store, ids, severities, with_cves=with_cves, as_of=parse_as_of(as_of))
    if output is OutputFormat.json:
        render(rows, output)
        return
    if output is OutputFormat.csv:
        render(exposure_csv_rows(rows), output)
        return
    if not rows:
        context.console.print("No servers known yet: run `autopatch fleet list` (and `fleet scan`) first.")
        return
    print_exposure(rows, output, title="Exposure: open CVEs per server, from the latest scans ('?' = unknown)")
    for row in rows if ids else []:
        open_cves = [cve | {"flags": risk_flags(cve)} for cve in row.get("cves") or [] if cve["status"] == "open"]
        render(
            open_cves,
            output,
            columns=("cve", "severity", "due", "flags", "fix", "fixing_kbs", "reason"),
            title=f"Open CVEs on {row['name']}: {row['status']}",
            headers={"fixing_kbs": "KBs", "severity": "sev"},
        )

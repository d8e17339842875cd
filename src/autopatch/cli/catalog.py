"""``autopatch catalog …``: import, update and query the MSRC catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autopatch.catalog import queries
from autopatch.catalog.ingest import ImportSummary, import_paths
from autopatch.cli.context import CliContext
from autopatch.cli.output import OutputFormat, render
from autopatch.cli.progress import progress_bar
from autopatch.cli.views import risk_flags
from autopatch.cve_deadlines import add_catalog_fields
from autopatch.domain.identifiers import parse_cve, parse_month
from autopatch.engine.policy import parse_as_of

app = typer.Typer(help="The MSRC catalog: CVE → product → KB.", no_args_is_help=True)

FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, json or csv")]
SUMMARY_COLUMNS = ("documents", "cves", "products", "kbs", "entries")


def _context(ctx: typer.Context) -> CliContext:
    context: CliContext = ctx.obj
    return context


def print_import_summary(context: CliContext, summary: ImportSummary, output: OutputFormat) -> None:
    data = summary.as_dict()
    if output is OutputFormat.json:
        render(data, output)
        return
    facts = {
        "documents imported": data["documents_imported"],
        "unchanged": data["documents_unchanged"],
        "older (skipped)": data["documents_skipped_older"],
        **{name: summary.totals.get(name, 0) for name in SUMMARY_COLUMNS},
        "entries added": data["entries_added"],
        "entries updated": data["entries_updated"],
        "seconds": data["seconds"],
    }
    rows = [{"item": name, "value": value} for name, value in facts.items()]
    render(rows if output is OutputFormat.table else [facts], output, title="Catalog import")


@app.command("import")
def import_command(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="MSRC files or folders (.xml, .json, .gz)")],
    output: FormatOption = OutputFormat.table,
) -> None:
    """Import CVRF XML/JSON documents or SUG pages from files (offline, air-gapped)."""
    context = _context(ctx)
    with progress_bar(context.console, "Importing") as on_progress:
        summary = import_paths(context.store, paths, on_progress, workers=context.effective_settings.import_workers)
    print_import_summary(context, summary, output)


@app.command("update")
def update_command(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(help="first month, YYYY-MM")] = None,
    until: Annotated[str | None, typer.Option(help="last month, YYYY-MM")] = None,
    source: Annotated[str, typer.Option(help="cvrf or sug")] = "cvrf",
    output: FormatOption = OutputFormat.table,
) -> None:
    """Fetch monthly documents live from the MSRC API (default: the last three months)."""
    from datetime import date

    from autopatch.catalog.update import default_months, fetch_months

    context = _context(ctx)
    first, last = default_months(date.today())
    first = parse_month(since, "since") if since else first
    last = parse_month(until, "until") if until else last
    with progress_bar(context.console, "Fetching") as on_progress:
        summary = fetch_months(context.store, context.effective_settings, first, last, source, on_progress)
    print_import_summary(context, summary, output)


@app.command("products")
def products_command(ctx: typer.Context, output: FormatOption = OutputFormat.table) -> None:
    """Every product with its MSRC ids and counts of CVEs and KBs."""
    rows = queries.list_products(_context(ctx).store)
    if not rows and output is OutputFormat.table:
        _context(ctx).console.print(f"No products: {queries.EMPTY_CATALOG}.", markup=False)
        return
    # The family column would push the table past 80 columns (Azure Linux package names are long).
    if output is not OutputFormat.table:
        render(rows, output)
        return
    columns = ("product_id", "product", "cves", "kbs")
    render(rows, output, columns=columns, title=f"Products ({len(rows)})", headers={"product_id": "id"})


@app.command("cves")
def cves_command(
    ctx: typer.Context,
    product: Annotated[str, typer.Option(help="exact MSRC product name, e.g. 'Windows Server 2022'")],
    month: Annotated[str | None, typer.Option(help="MSRC monthly release, YYYY-MM")] = None,
    severity: Annotated[list[str] | None, typer.Option(help="Critical,Important,…")] = None,
    cve: Annotated[list[str] | None, typer.Option(help="only these CVE ids")] = None,
    as_of: Annotated[str | None, typer.Option(help="deadlines and KEV on YYYY-MM-DD; later CVEs left out")] = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """CVEs affecting a product, one row per (CVE, product), with the KBs that fix them and their deadlines."""
    day = parse_as_of(as_of)
    rows = queries.find_cves(
        _context(ctx).store,
        product,
        month=parse_month(month) if month is not None else None,
        severities=queries.parse_severities(severity) if severity is not None else None,
        cves=[parse_cve(value) for value in cve] if cve is not None else None,
    )
    rows = add_catalog_fields(_context(ctx).store, rows, day)
    if output is OutputFormat.table:
        rows = [row | {"flags": risk_flags(row, with_overdue=False)} for row in rows]
        columns = ("cve", "month", "severity", "due", "flags", "kbs", "title")
        render(rows, output, columns=columns, title=f"CVEs of {product}: {len(rows)}", headers={"cvss_base": "cvss"})
    else:
        render(rows, output)


@app.command("kb")
def kb_command(
    ctx: typer.Context,
    kb: Annotated[str, typer.Argument(help="KB id, e.g. KB5034129")],
    output: FormatOption = OutputFormat.table,
) -> None:
    """One KB: products and fixed builds, CVEs, month, and its supersedence chain both ways."""
    view = queries.describe_kb(_context(ctx).store, kb)
    if output is OutputFormat.json:
        render(view, output)
        return
    if output is OutputFormat.csv:  # one row per (KB, product): flat, every list joined
        facts = {key: view[key] for key in ("kb", "month", "subtype", "restart_required", "url")}
        chains = {key: view[key] for key in ("supersedes", "superseded_by")}
        cves = [cve["cve"] for cve in view["cves"]]
        render([facts | product | chains | {"cves": cves} for product in view["products"]], output)
        return
    console = _context(ctx).console.__class__()
    console.print(
        f"{view['kb']} {view['subtype'] or ''} · month {view['month']} · "
        f"restart {view['restart_required'] or '?'} · {view['url']}",
        markup=False,
    )
    render(view["products"], output, title="Products", console=console)
    render(view["cves"], output, title="CVEs", console=console)
    console.print(f"supersedes: {', '.join(view['supersedes']) or '—'}")
    console.print(f"supersedes (chain): {', '.join(view['supersedes_chain']) or '—'}")
    console.print(f"superseded by: {', '.join(view['superseded_by']) or '—'}")
    console.print(f"superseded by (chain): {', '.join(view['superseded_by_chain']) or '—'}")

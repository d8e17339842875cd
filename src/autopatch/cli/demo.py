"""``autopatch demo``: the main job end to end on the embedded defaults.

Online it fetches the last few months from Microsoft; offline (no route to the MSRC API) it
imports the documents in ``AUTOPATCH_CATALOG_DIR`` and says so. Then it prints what the catalog
knows about the Windows Server products that AutoPatch patches.
"""

from __future__ import annotations

from datetime import date

import typer
from rich.console import Console

from autopatch.catalog import queries
from autopatch.catalog.ingest import ImportSummary, import_paths
from autopatch.cli.catalog import print_import_summary
from autopatch.cli.context import CliContext
from autopatch.cli.output import OutputFormat, render
from autopatch.cli.progress import progress_bar
from autopatch.errors import SourceUnavailableError, ValidationError

SERVER_PRODUCTS = (
    "Windows Server 2016",
    "Windows Server 2019",
    "Windows Server 2022",
    "Windows Server 2022, 23H2 Edition (Server Core installation)",
    "Windows Server 2025",
)


def _build_catalog(context: CliContext, out: Console) -> ImportSummary:
    from autopatch.catalog.client import MsrcClient
    from autopatch.catalog.update import default_months, update_catalog

    settings = context.settings
    try:
        with MsrcClient(settings.msrc_base_url, timeout=5, retries=1) as client:
            first, last = default_months(date.today())
            with progress_bar(context.console, "Fetching from MSRC") as on_progress:
                summary = update_catalog(context.store, client, first, last, "cvrf", on_progress)
            out.print(f"Fetched {first}…{last} live from {settings.msrc_base_url}.")
            return summary
    except SourceUnavailableError as exc:
        out.print(f"[yellow]Offline[/]: {exc}")
    folder = settings.catalog_dir
    if folder is None or not folder.is_dir():
        raise ValidationError(
            "AUTOPATCH_CATALOG_DIR",
            str(folder) if folder else None,
            "offline, the demo needs a folder of MSRC documents",
        )
    out.print(f"Importing the monthly documents in {folder} instead.")
    with progress_bar(context.console, "Importing") as on_progress:
        return import_paths(context.store, [folder], on_progress, workers=settings.import_workers)


def demo_command(ctx: typer.Context) -> None:
    """Build the catalog (live, or offline from AUTOPATCH_CATALOG_DIR) and print a summary."""
    context: CliContext = ctx.obj
    out = Console()
    out.rule("AutoPatch demo: the MSRC catalog")
    summary = _build_catalog(context, out)
    print_import_summary(context, summary, OutputFormat.table)
    store = context.store
    products = {row["product"]: row for row in queries.list_products(store)}
    render(
        [products[name] for name in SERVER_PRODUCTS if name in products],
        OutputFormat.table,
        columns=("product", "product_id", "cves", "kbs"),
        title="Windows Server products in the catalog",
        console=out,
    )
    if "Windows Server 2022" in products:
        critical = queries.find_cves(store, "Windows Server 2022", severities={"Critical"})
        latest = critical[-1]["month"] if critical else None
        recent = [row for row in critical if row["month"] == latest]
        render(
            recent,
            OutputFormat.table,
            columns=("cve", "month", "severity", "cvss_base", "kbs", "title"),
            title=f"Critical CVEs on Windows Server 2022 in {latest}",
            console=out,
        )
        if recent and recent[0]["kbs"]:
            kb = queries.describe_kb(store, recent[0]["kbs"][0]["kb"])
            out.print(
                f"{kb['kb']} ({kb['subtype']}, restart {kb['restart_required']}) supersedes "
                f"{', '.join(kb['supersedes']) or 'nothing'}; {len(kb['supersedes_chain'])} KBs in its chain."
            )
    out.print(f"Database: {context.settings.db}")

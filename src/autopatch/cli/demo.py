"""``autopatch demo``: the main job end to end on the embedded defaults.

Online it fetches the last few months from Microsoft; offline (no route to the MSRC API) it
imports the documents in ``AUTOPATCH_CATALOG_DIR`` and says so. Then, on the configured fleet
(the simulator by default): discovery and scan, exposure before, a patch run with live progress,
exposure after, and the run's summary — every step the same function the CLI commands call.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import date

import typer
from rich.console import Console

from autopatch.access import RESULT_OK, audit, create_token, revoke_token
from autopatch.assessment import fleet_exposure
from autopatch.catalog import queries
from autopatch.catalog.ingest import ImportSummary, import_paths
from autopatch.cli.access import cli_actor
from autopatch.cli.catalog import print_import_summary
from autopatch.cli.context import CliContext
from autopatch.cli.output import OutputFormat, render
from autopatch.cli.patch import live_view
from autopatch.cli.progress import progress_bar
from autopatch.cli.views import print_exposure, short_product
from autopatch.domain.access import Role
from autopatch.domain.summary import ServerSummary
from autopatch.engine.driving import begin_patch, drive_run, plan_patch
from autopatch.engine.options import RunOptions
from autopatch.engine.report import build_summary
from autopatch.errors import DocumentFormatError, NotFoundError, SourceUnavailableError, ValidationError
from autopatch.operations import PatchRequest
from autopatch.scanning import discover_instances, scan_instances
from autopatch.wiring import fleet_poll

DEMO_TOKEN_NAME = "demo-admin"
SERVER_PRODUCTS = (
    "Windows Server 2016",
    "Windows Server 2019",
    "Windows Server 2022",
    "Windows Server 2022, 23H2 Edition (Server Core installation)",
    "Windows Server 2025",
)


def _build_catalog(context: CliContext, out: Console) -> tuple[ImportSummary, bool]:
    """The catalog, and whether Microsoft answered (online)."""
    from autopatch.catalog.client import MsrcClient
    from autopatch.catalog.update import default_months, update_catalog

    settings = context.settings
    try:
        with MsrcClient(settings.msrc_base_url, timeout=5, retries=1) as client:
            first, last = default_months(date.today())
            with progress_bar(context.console, "Fetching from MSRC") as on_progress:
                summary = update_catalog(context.store, client, first, last, "cvrf", on_progress)
            out.print(f"Fetched {first}…{last} live from {settings.msrc_base_url}.")
            return summary, True
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
        return import_paths(context.store, [folder], on_progress, workers=settings.import_workers), False


def _build_kev(context: CliContext, out: Console, online: bool) -> None:
    """CISA's KEV catalog: the file in ``AUTOPATCH_KEV_FILE`` (``make demo`` points it at the team's copy),
    else the live feed when Microsoft answered; without either, exploited-first rests on MSRC's flags."""
    from autopatch.catalog.client import MsrcClient
    from autopatch.catalog.kev import fetch_kev, import_kev_file

    settings = context.settings
    try:
        if settings.kev_file is not None and settings.kev_file.is_file():
            summary = import_kev_file(context.store, settings.kev_file)
        elif not online:
            out.print("No KEV catalog offline (AUTOPATCH_KEV_FILE is not set): exploited-first uses MSRC's flags only.")
            return
        else:
            with MsrcClient(settings.msrc_base_url, timeout=5, retries=1) as client:
                summary = fetch_kev(context.store, settings, client)
    except (SourceUnavailableError, DocumentFormatError, ValidationError) as exc:
        out.print(f"[yellow]No KEV catalog[/] ({exc}): exploited-first uses MSRC's flags only.")
        return
    out.print(
        f"CISA's KEV catalog {summary.catalog_version}: {summary.entries} known exploited CVEs "
        f"(from {summary.source}); an open one is due by CISA's date when that is earlier than the SLA's.",
        markup=False,
    )


def demo_command(ctx: typer.Context) -> None:
    """The whole job on the simulator: catalog, fleet, exposure before, a patch run, exposure after."""
    context: CliContext = ctx.obj
    out = Console()
    out.rule("1. The MSRC catalog")
    summary, online = _build_catalog(context, out)
    print_import_summary(context, summary, OutputFormat.table)
    _print_catalog_facts(context, out)
    _build_kev(context, out, online)

    out.rule(f"2. The fleet ({context.settings.fleet})")
    instances = discover_instances(context.fleet, context.store)
    with progress_bar(context.console, "Scanning") as on_progress:
        scans = scan_instances(context.fleet, context.store, instances, on_progress=on_progress)
    out.print(
        f"{len(instances)} servers discovered, {len(scans.reports)} scanned, {len(scans.failures)} not reachable."
    )

    out.rule("3. Exposure before patching")
    before = _print_exposure(context, out)

    out.rule("4. Patch run (one KB at a time per server, 8 servers at once, reboot if required)")
    options = RunOptions(concurrency=8)
    request = PatchRequest(instances, instances, kbs=[], minimum_severity=None, options=options.as_dict())
    run, lease = begin_patch(context.store, request)
    run_id = run.run_id
    with lease:
        with progress_bar(context.console, "Planning") as on_progress:
            plan = plan_patch(context.store, context.fleet, run, request, on_progress)
        notifiers = [n for n in context.notifiers if n.name != "console"]  # the table below is the console's summary
        with live_view(context.console, plan) as on_event:
            status, _ = drive_run(
                context.store, context.fleet, run_id, lease, notifiers, fleet_poll(context.settings), on_event
            )
    run_summary = build_summary(context.store, run_id)
    render(
        [
            {
                "server": server.name,
                "result": _result(server),
                "KBs": [*server.installed_now, *(f"{kb.kb} failed: {kb.reason}" for kb in server.failed)],
                "reboots": server.reboots,
                "build now": server.build_after or server.build_before,
            }
            for server in run_summary.servers
        ],
        OutputFormat.table,
        title=f"Run {run_id}: {status}. {context.store.get_run(run_id).reason}".strip(),
        console=out,
    )

    out.rule("5. Exposure after patching (servers rescanned)")
    scan_instances(context.fleet, context.store, discover_instances(context.fleet, context.store))
    after = _print_exposure(context, out)
    out.print(
        f"Open Critical+Important (server, CVE) pairs: {before['open']} before, {after['open']} after "
        f"({after['offered']} fix offered, {after['not offered']} fix not offered, {after['no KB']} no KB; "
        f"{after['unknown']} servers not assessed).",
        markup=False,
    )
    out.print(
        f"Database: {context.settings.db}. Try: AUTOPATCH_DB={context.settings.db} .venv/bin/autopatch runs",
        markup=False,
    )
    _print_dashboard_hint(context, out)


def _print_dashboard_hint(context: CliContext, out: Console) -> None:
    """A fresh admin token for the dashboard: shown once here, stored only as its digest."""
    with suppress(NotFoundError):  # a demo run again on the same database replaces its token
        revoke_token(context.store, DEMO_TOKEN_NAME)
    record, token = create_token(context.store, DEMO_TOKEN_NAME, Role.ADMIN)
    audit(context.store, cli_actor(), "token.create", record.name, RESULT_OK, "role admin (demo)")
    out.print(
        "Dashboard: run `make serve`, open http://127.0.0.1:8080/ and sign in with this admin token (shown once):",
        markup=False,
    )
    out.print(token, markup=False, highlight=False, soft_wrap=True)  # never broken across lines: it is copied


def _result(server: ServerSummary) -> str:
    if server.status == "Skipped":
        return f"not patched: {server.reason.removeprefix('not scanned: ')}"
    if server.failed:
        return "failed"
    return "patched" if server.installed_now else "up to date"


def _print_catalog_facts(context: CliContext, out: Console) -> None:
    store = context.store
    products = {row["product"]: row for row in queries.list_products(store)}
    render(
        [products[name] | {"product": short_product(name)} for name in SERVER_PRODUCTS if name in products],
        OutputFormat.table,
        columns=("product", "product_id", "cves", "kbs"),
        headers={"product_id": "MSRC id"},
        title="Windows Server products in the catalog",
        console=out,
    )


def _print_exposure(context: CliContext, out: Console) -> dict[str, int]:
    rows = fleet_exposure(context.store, severities={"Critical", "Important"})
    print_exposure(rows, OutputFormat.table, "Open Critical/Important CVEs per server ('?' = unknown)", out)
    assessed = [row for row in rows if row["status"] == "assessed"]
    return {
        "open": sum(row["open_total"] for row in assessed),
        "offered": sum(row["open_fix_offered"] for row in assessed),
        "not offered": sum(row["open_fix_not_offered"] for row in assessed),
        "no KB": sum(row["open_no_fix"] for row in assessed),
        "unknown": len(rows) - len(assessed),
    }

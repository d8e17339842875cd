"""``autopatch assess``: exposure for facts typed in by hand or read from ``systeminfo`` (air-gapped servers)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autopatch.assessment import assess_facts
from autopatch.catalog.queries import parse_severities
from autopatch.cli.context import CliContext
from autopatch.cli.output import OutputFormat, render
from autopatch.cli.views import risk_flags
from autopatch.domain.identifiers import parse_kb, parse_month
from autopatch.domain.os_identity import CORE_SUFFIX, identify_product
from autopatch.domain.systeminfo import MAX_BYTES, SystemInfo, parse_systeminfo
from autopatch.engine.policy import parse_as_of
from autopatch.errors import ValidationError

FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, json or csv")]


def read_systeminfo(path: Path) -> SystemInfo:
    """Read at most a megabyte: systeminfo output is a few kilobytes."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ValidationError("systeminfo", str(path), f"must be a readable file ({exc.strerror})") from exc
    return parse_systeminfo(raw, str(path))


def facts_from_systeminfo(info: SystemInfo, product: str | None) -> tuple[str, list[str]]:
    """The product to assess and the warnings about how it was chosen."""
    identity = identify_product(info.os_name, info.os_version)
    if product is None:
        if identity.product is None:
            raise ValidationError("systeminfo", info.os_name, f"names no Windows Server product: {identity.reason}")
        return identity.product, [
            f"systeminfo does not say whether this is Server Core: assumed {identity.product!r}; "
            f"if it is Core, pass --product '{identity.product}{CORE_SUFFIX}'"
        ]
    if identity.product is not None and identity.product.removesuffix(CORE_SUFFIX) != product.removesuffix(CORE_SUFFIX):
        raise ValidationError("product", product, f"contradicts the systeminfo OS {info.os_name!r} ({info.os_version})")
    return product, []


def assess_command(
    ctx: typer.Context,
    product: Annotated[str | None, typer.Option(help="exact MSRC product name, e.g. 'Windows Server 2022'")] = None,
    build: Annotated[str | None, typer.Option(help="build, e.g. 10.0.20348.2227 (10.0.20348 is accepted)")] = None,
    installed: Annotated[list[str] | None, typer.Option(help="installed KBs, repeated or comma-separated")] = None,
    systeminfo: Annotated[Path | None, typer.Option(help="a file with the server's systeminfo output")] = None,
    month: Annotated[str | None, typer.Option(help="only CVEs of this MSRC month, YYYY-MM")] = None,
    severity: Annotated[list[str] | None, typer.Option(help="Critical,Important,…")] = None,
    as_of: Annotated[
        str | None, typer.Option(help="evaluate on YYYY-MM-DD: later CVEs, KBs and KEV entries do not exist")
    ] = None,
    output: FormatOption = OutputFormat.table,
) -> None:
    """Exposure for an air-gapped server: typed-in facts or its systeminfo output; which CVEs are open, and why."""
    context: CliContext = ctx.obj
    typed = [parse_kb(kb.strip(), "installed") for value in installed or [] for kb in value.split(",")]
    wanted_month = parse_month(month) if month is not None else None
    wanted = parse_severities(severity) if severity is not None else None
    on = parse_as_of(as_of)
    warnings: list[str] = []
    if systeminfo is not None:
        info = read_systeminfo(systeminfo)
        product, warnings = facts_from_systeminfo(info, product)
        build = build if build is not None else info.os_version
        typed = [*info.hotfixes, *typed]
    if product is None or build is None:
        missing = "--product" if product is None else "--build"
        raise ValidationError(missing.removeprefix("--"), None, f"give {missing} (or --systeminfo FILE)")
    result = assess_facts(
        context.store, product, build, typed, month=wanted_month, severities=wanted, warnings=warnings, as_of=on
    )
    if output is OutputFormat.json:
        render(result, output)
        return
    if output is OutputFormat.csv:
        render([{"product": result["product"], "build": result["build"]} | cve for cve in result["cves"]], output)
        return
    for warning in result["warnings"]:
        context.console.print(f"warning: {warning}", markup=False, highlight=False)
    summary = result["summary"]
    title = (
        f"{result['product']} at {result['build']}: {summary['open']} open ({summary['overdue_total']} overdue),"
        f" {summary['fixed']} fixed" + (f", as of {on}" if on else "")
    )
    columns = ("cve", "severity", "month", "status", "due", "flags", "fixing_kbs", "reason")
    rows = [cve | {"flags": risk_flags(cve)} for cve in result["cves"]]
    render(rows, output, columns=columns, title=title)

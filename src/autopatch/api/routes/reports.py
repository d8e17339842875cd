"""``/reports``: the reports of ``autopatch report``, as JSON, CSV, HTML or PDF downloads (viewers and up).

``?format=json`` (the default) answers the report's JSON; ``csv``, ``html`` and ``pdf`` answer the
file with its media type and ``Content-Disposition: attachment`` naming it after the report and
the time (``compliance_20260128T1042Z.pdf``), so a browser saves it under that name.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from autopatch.api.deps import StoreDep, require
from autopatch.catalog.queries import parse_severities
from autopatch.domain.access import Role
from autopatch.domain.instance_ids import parse_instance_id
from autopatch.engine.policy import parse_as_of
from autopatch.reports.compliance import compliance_report
from autopatch.reports.cve import cve_report
from autopatch.reports.formats import ReportFormat, render_report
from autopatch.reports.model import Report
from autopatch.reports.sla import sla_report
from autopatch.reports.trend import MAX_DAYS, trend_report

router = APIRouter(prefix="/reports", tags=["reports"], dependencies=[Depends(require(Role.VIEWER))])


class FileFormat(StrEnum):
    json = "json"
    csv = "csv"
    html = "html"
    pdf = "pdf"


FormatQuery = Annotated[FileFormat, Query(alias="format", description="json (default), csv, html or pdf")]
FILE_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "the report in the format asked for",
        "content": {
            "application/json": {},
            "text/csv": {"schema": {"type": "string"}},
            "text/html": {"schema": {"type": "string"}},
            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def answer(report: Report, fmt: FileFormat) -> Response:
    """The report's bytes with their media type; files (not JSON) as an attachment with the report's name."""
    body, rendering = render_report(report, ReportFormat(fmt.value))
    headers = {}
    if fmt is not FileFormat.json:
        headers["Content-Disposition"] = f'attachment; filename="{report.filename(rendering.extension)}"'
    return Response(body, media_type=rendering.media_type, headers=headers)


@router.get("/compliance", responses=FILE_RESPONSES, response_class=Response)
def compliance(
    store: StoreDep,
    output: FormatQuery = FileFormat.json,
    baseline: Annotated[str | None, Query(max_length=64, description="judge every server by this baseline")] = None,
) -> Response:
    """Compliant / non-compliant / unknown per server (Patch Manager's states), per baseline, with missing KBs."""
    return answer(compliance_report(store, baseline), output)


@router.get("/sla", responses=FILE_RESPONSES, response_class=Response)
def sla(
    store: StoreDep,
    output: FormatQuery = FileFormat.json,
    severity: Annotated[str | None, Query(max_length=200, description="Critical,Important,… (default: all)")] = None,
    instance_id: Annotated[list[str] | None, Query(max_length=1000, description="only these servers")] = None,
    cves: Annotated[bool, Query(description="one row per overdue (server, CVE)")] = False,
) -> Response:
    """Open CVEs past their deadline, by server and severity, oldest deadline first."""
    wanted = parse_severities([severity]) if severity else None
    ids = [parse_instance_id(value) for value in instance_id or []]
    return answer(sla_report(store, wanted, ids, cves), output)


@router.get("/cve/{cve}", responses=FILE_RESPONSES, response_class=Response)
def cve(store: StoreDep, cve: str, output: FormatQuery = FileFormat.json) -> Response:
    """Every server exposed to one CVE now, since when, the closing KB and whether Windows Update offers it."""
    return answer(cve_report(store, cve), output)


@router.get("/trend", responses=FILE_RESPONSES, response_class=Response)
def trend(
    store: StoreDep,
    output: FormatQuery = FileFormat.json,
    days: Annotated[int, Query(ge=1, le=MAX_DAYS, description="how many days")] = 90,
    until: Annotated[str | None, Query(max_length=10, description="last day, YYYY-MM-DD (default: today, UTC)")] = None,
) -> Response:
    """Open and overdue CVEs per severity per day, and the mean time to remediate, from the exposure history."""
    last: date | None = parse_as_of(until, "until") if until is not None else None
    return answer(trend_report(store, days, last), output)

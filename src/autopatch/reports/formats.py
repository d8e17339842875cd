"""Report formats: how each is rendered, its media type and its file extension (CLI, API and dashboard alike)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from autopatch.reports.model import Report, report_header
from autopatch.reports.render_csv import render_csv
from autopatch.reports.render_html import render_html
from autopatch.reports.render_pdf import render_pdf


class ReportFormat(StrEnum):
    table = "table"  # the terminal's: the CLI lays it out (``cli/reports.py``)
    json = "json"
    csv = "csv"
    html = "html"
    pdf = "pdf"


def render_json(report: Report) -> bytes:
    return json.dumps(report_header(report) | dict(report.data), indent=2, ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Rendering:
    media_type: str
    extension: str
    render: Callable[[Report], bytes]


RENDERINGS: dict[ReportFormat, Rendering] = {
    ReportFormat.json: Rendering("application/json", "json", render_json),
    ReportFormat.csv: Rendering("text/csv; charset=utf-8", "csv", render_csv),
    ReportFormat.html: Rendering("text/html; charset=utf-8", "html", render_html),
    ReportFormat.pdf: Rendering("application/pdf", "pdf", render_pdf),
}


def render_report(report: Report, fmt: ReportFormat) -> tuple[bytes, Rendering]:
    """The report's bytes in ``fmt`` (any but ``table``) and how to serve them."""
    rendering = RENDERINGS[fmt]
    return rendering.render(report), rendering

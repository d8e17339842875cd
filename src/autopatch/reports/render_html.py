"""A report as one self-contained HTML page: inline CSS and SVG charts, nothing fetched from elsewhere.

Every value goes through ``html.escape``; tables are real tables with a caption and header cells
(a screen reader and a spreadsheet paste both read them); numbers are right-aligned.
"""

from __future__ import annotations

from html import escape

from autopatch.reports.charts import chart_svg
from autopatch.reports.model import Cell, Report, Table

STYLE = """
body { font-family: Helvetica, Arial, sans-serif; color: #222; margin: 2rem auto; max-width: 1100px; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .25rem; }
.meta { color: #555; margin-top: 0; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: .25rem 1rem; }
dl.summary dt { font-weight: bold; }
dl.summary dd { margin: 0; }
figure { margin: 1.5rem 0; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0 2rem; font-size: .9rem; }
caption { text-align: left; font-weight: bold; font-size: 1.05rem; padding: .5rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: .3rem .5rem; text-align: left; vertical-align: top; }
td:first-child { white-space: nowrap; }
th { background: #f2f2f2; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
p.empty { color: #555; font-style: italic; }
@media print { body { margin: 0; max-width: none; } figure, tr { break-inside: avoid; } }
"""


def _cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return escape(value)


def _numeric(numeric: bool) -> str:
    return ' class="num"' if numeric else ""


def _table(table: Table) -> str:
    if not table.rows:
        return f'<h2>{escape(table.title)}</h2><p class="empty">{escape(table.empty)}</p>'
    head = "".join(
        f'<th scope="col"{_numeric(column.numeric)}>{escape(column.header)}</th>' for column in table.columns
    )
    body = "".join(
        "<tr>" + "".join(f"<td{_numeric(c.numeric)}>{_cell(row.get(c.key))}</td>" for c in table.columns) + "</tr>"
        for row in table.rows
    )
    caption = f"<caption>{escape(table.title)}</caption>"
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: Report) -> bytes:
    parameters = ", ".join(f"{key} {value}" for key, value in report.parameters.items())
    generated = report.generated_at.strftime("%Y-%m-%d %H:%M UTC")
    summary = "".join(f"<dt>{escape(label)}</dt><dd>{escape(value)}</dd>" for label, value in report.summary)
    charts = "".join(f"<figure>{chart_svg(chart)}</figure>" for chart in report.charts)
    tables = "".join(_table(table) for table in report.tables)
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(report.title)}</title><style>{STYLE}</style></head><body><main>"
        f"<h1>{escape(report.title)}</h1>"
        f'<p class="meta">Generated {generated} by AutoPatch{escape(" — " + parameters) if parameters else ""}</p>'
        f'<dl class="summary">{summary}</dl>{charts}{tables}</main></body></html>'
    )
    return page.encode("utf-8")

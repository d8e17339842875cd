"""A report as PDF with fpdf2 (pure Python: no browser, no system library): A4 landscape, title,
parameters, summary, the charts (the same SVG as the HTML report) and the tables, paged.

fpdf2's core fonts speak Latin-1 only, so text is folded to it (an em dash becomes "-", anything
else unknown "?"): Microsoft's CVE titles are English, and server names are ASCII in practice.
"""

from __future__ import annotations

import io

from fpdf import FPDF
from fpdf.fonts import FontFace

from autopatch.reports.charts import chart_svg
from autopatch.reports.model import Cell, Report, Table

# Typographic characters folded to what Latin-1 has (written as escapes: they look like ASCII ones).
_FOLD = str.maketrans(
    {
        "\u2014": "-",
        "\u2013": "-",
        "\u2026": "...",
        "\u2019": "'",
        "\u2018": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2713": "v",
        "\u2717": "x",
        "\u2192": "->",
    }
)
_MAX_CELL = 90  # characters of one cell in a PDF table: a list of 40 KBs would make a row a page long


def _latin1(text: str) -> str:
    return text.translate(_FOLD).encode("latin-1", "replace").decode("latin-1")


def _cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    text = _latin1(value)
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 3] + "..."


class _Document(FPDF):
    def __init__(self, report: Report) -> None:
        super().__init__(orientation="landscape", format="A4")
        self.report = report
        self.set_auto_page_break(auto=True, margin=14)
        self.set_title(_latin1(report.title))
        self.set_creator("AutoPatch")

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font("Helvetica", size=8)
        self.set_text_color(90, 90, 90)
        stamp = self.report.generated_at.strftime("%Y-%m-%d %H:%M UTC")
        self.cell(0, 5, _latin1(f"{self.report.title} - generated {stamp} - page {self.page_no()}"), align="C")


def _table(pdf: _Document, table: Table) -> None:
    pdf.set_font("Helvetica", "B", 12)
    pdf.set_text_color(0, 0, 0)
    pdf.cell(0, 8, _latin1(table.title), new_x="LMARGIN", new_y="NEXT")
    if not table.rows:
        pdf.set_font("Helvetica", "I", 10)
        pdf.cell(0, 6, _latin1(table.empty), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
        return
    pdf.set_font("Helvetica", size=8)
    align = tuple("RIGHT" if column.numeric else "LEFT" for column in table.columns)
    with pdf.table(
        text_align=align,
        headings_style=FontFace(emphasis="BOLD", fill_color=(235, 235, 235)),
        line_height=4.6,
        first_row_as_headings=True,
        repeat_headings=1,
    ) as grid:
        grid.row([_latin1(column.header) for column in table.columns])
        for row in table.rows:
            grid.row([_cell(row.get(column.key)) for column in table.columns])
    pdf.ln(4)


def render_pdf(report: Report) -> bytes:
    pdf = _Document(report)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 10, _latin1(report.title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    pdf.set_text_color(80, 80, 80)
    parameters = ", ".join(f"{key} {value}" for key, value in report.parameters.items())
    stamp = report.generated_at.strftime("%Y-%m-%d %H:%M UTC")
    pdf.cell(0, 5, _latin1(f"Generated {stamp} by AutoPatch" + (f" - {parameters}" if parameters else "")))
    pdf.ln(8)
    pdf.set_text_color(0, 0, 0)
    for label, value in report.summary:
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(70, 6, _latin1(label))
        pdf.set_font("Helvetica", size=10)
        pdf.multi_cell(0, 6, _latin1(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    width = pdf.epw
    for chart in report.charts:
        svg = chart_svg(chart).encode("utf-8")
        if pdf.get_y() > pdf.h - 80:
            pdf.add_page()
        image = pdf.image(io.BytesIO(svg), x=pdf.l_margin, w=min(width, 230))
        pdf.set_y(pdf.get_y() + 2 if image is None else pdf.get_y())
        pdf.ln(3)
    for table in report.tables:
        _table(pdf, table)
    return bytes(pdf.output())

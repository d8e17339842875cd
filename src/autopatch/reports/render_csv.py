"""A report as CSV: its main table, one header row, one flat row per item (UTF-8, ISO UTC times).

Cells are scalars by construction (``model.Cell``); a list-valued field is written joined with
``;`` by the report that builds the row, never as nested JSON.
"""

from __future__ import annotations

import csv
import io

from autopatch.reports.model import Cell, Report


def _cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_csv(report: Report) -> bytes:
    table = report.main
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([column.header for column in table.columns])
    writer.writerows([_cell(row.get(column.key)) for column in table.columns] for row in table.rows)
    return out.getvalue().encode("utf-8")

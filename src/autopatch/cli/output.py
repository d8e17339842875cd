"""Rendering of listing results as a plain-text table, JSON or CSV (``--format`` on every listing).

JSON keeps the nested structure. A table flattens each cell to text (lists joined with "; ",
nested objects as one-line JSON) and is laid out by :mod:`autopatch.cli.table` to the console's
width without splitting a word. CSV cells must be flat: a nested object has no faithful CSV form,
so it is refused rather than written as a JSON blob a spreadsheet cannot use.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.segment import Segment, Segments

from autopatch.cli.table import ASCII_RULE, RULE, layout


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, dict | list | tuple)


def _kb_list(value: list[Any]) -> list[str] | None:
    """The KB ids of a list of KB objects (``[{"kb": "KB5034129", …}]``), else None."""
    if value and all(isinstance(item, dict) and "kb" in item for item in value):
        return [str(item["kb"]) for item in value]
    return None


def table_cell(value: Any) -> str:
    """A value as table text: None empty, lists of scalars or KB objects joined, anything else nested as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        # Windows command output ends lines with CR LF, and a bare CR would overwrite the line.
        text = "\n".join(value.splitlines()) if "\r" in value else value
        return text.expandtabs(4)
    if isinstance(value, list | tuple):
        if all(_is_scalar(item) for item in value):
            return "; ".join("" if item is None else str(item) for item in value)
        if (kbs := _kb_list(list(value))) is not None:
            return "; ".join(kbs)
    if isinstance(value, dict | list | tuple):
        # The default ", " and ": " separators keep a nested value wrappable at spaces.
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def csv_cell(column: str, value: Any) -> str:
    """A value as a CSV field: None empty, lists of scalars joined with ';'; nested values raise ValueError."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        if all(_is_scalar(item) for item in value):
            return ";".join("" if item is None else str(item) for item in value)
        # Kept until every caller flattens: ``catalog cves`` and ``status`` pass KB objects.
        if (kbs := _kb_list(list(value))) is not None:
            return ";".join(kbs)
    if isinstance(value, dict | list | tuple):
        raise ValueError(
            f"column {column!r} holds a nested {type(value).__name__}: flatten rows before writing CSV "
            "(one row per nested item, or pick scalar columns)"
        )
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def render(
    rows: Sequence[dict[str, Any]] | dict[str, Any],
    output: OutputFormat,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    console: Console | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Print ``rows`` (or one object) in the chosen format; JSON keeps the full nested structure.

    ``columns`` picks and orders the keys of a table or CSV (default: the first row's keys);
    ``headers`` maps a key to the header shown for it (``{"open_critical": "crit"}``), in both.
    The table goes through ``console`` (default: a new stdout console) at its width, which rich
    takes from the terminal, the COLUMNS variable, or 80 when stdout is not a terminal; markup in
    values is printed literally. CSV raises ValueError for a nested cell (see :func:`csv_cell`).
    """
    if output is OutputFormat.json:
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return
    items = [rows] if isinstance(rows, dict) else list(rows)
    names = list(columns or (items[0].keys() if items else []))
    shown = [(headers or {}).get(name, name) for name in names]
    if output is OutputFormat.csv:
        # Every cell is converted before the first line is written: a refused row leaves no half file.
        lines = [[csv_cell(name, item.get(name)) for name in names] for item in items]
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(shown)
        writer.writerows(lines)
        return
    cells = [[table_cell(item.get(name)) for name in names] for item in items]
    right_aligned = [_is_numeric_column(items, name) for name in names]
    out = console or Console()
    rule = ASCII_RULE if out.options.ascii_only else RULE
    text = layout(shown, cells, out.width, right_aligned=right_aligned, title=title, rule=rule)
    if text:
        # One plain segment: no markup, emoji or highlighting, no re-wrapping or cropping, and none of
        # rich's per-line text rendering (Console.out alone costs more than laying the table out).
        # It still goes through the console, so its capture, recording and live display see it.
        out.print(Segments([Segment("\n".join(text) + "\n")]), crop=False)


def _is_numeric_column(items: Sequence[Mapping[str, Any]], name: str) -> bool:
    """True when every value of the column is a number or missing, and at least one is a number."""
    values = [item.get(name) for item in items]
    return any(_is_number(value) for value in values) and all(value is None or _is_number(value) for value in values)

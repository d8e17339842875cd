"""Rendering of listing results as a rich table, JSON or CSV (``--format`` on every listing)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from rich.console import Console
from rich.table import Table


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def _cell(value: Any) -> str:
    """Flatten for table/CSV cells: lists of scalars join with ';', anything nested becomes JSON."""
    if value is None:
        return ""
    if isinstance(value, list):
        if all(not isinstance(item, dict | list) for item in value):
            return ";".join(str(item) for item in value)
        if all(isinstance(item, dict) and "kb" in item for item in value):
            return ";".join(str(item["kb"]) for item in value)
        return json.dumps(value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def render(
    rows: Sequence[dict[str, Any]] | dict[str, Any],
    output: OutputFormat,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    console: Console | None = None,
) -> None:
    """Print ``rows`` (or one object) in the chosen format; JSON keeps the full nested structure."""
    if output is OutputFormat.json:
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return
    items = [rows] if isinstance(rows, dict) else list(rows)
    names = list(columns or (items[0].keys() if items else []))
    if output is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([_cell(item.get(name)) for name in names] for item in items)
        return
    table = Table(title=title, show_lines=False)
    for name in names:
        table.add_column(name, overflow="fold")
    for item in items:
        table.add_row(*(_cell(item.get(name)) for name in names))
    (console or Console()).print(table)

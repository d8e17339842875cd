"""What a report is, whatever it is rendered as: tables of flat rows, charts, a summary, and its JSON.

Each report module (``compliance``, ``sla``, ``cve``, ``trend``) builds a ``Report``; each output
module (``render_csv``, ``render_html``, ``render_pdf``, and the CLI's table) only lays one out.
Cells are scalars so that every table is one CSV (one header row, no nested values); the JSON
form (``data``) keeps the structure an API client wants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Cell = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    header: str
    numeric: bool = False


@dataclass(frozen=True)
class Table:
    """A titled table of flat rows; ``empty`` is what to say when it has none (never an empty grid)."""

    title: str
    columns: tuple[Column, ...]
    rows: Sequence[Mapping[str, Cell]]
    empty: str = "Nothing to show."
    terminal: tuple[str, ...] = ()  # the keys a terminal shows (default: every column); files keep them all

    def keys(self) -> list[str]:
        return [column.key for column in self.columns]

    def terminal_keys(self) -> list[str]:
        return list(self.terminal) or self.keys()


@dataclass(frozen=True, slots=True)
class Series:
    """One line or bar series: its name (shown in the legend and beside the values) and its values."""

    name: str
    values: tuple[float | None, ...]


@dataclass(frozen=True)
class LineChart:
    """Values over days (``labels`` are ISO dates), one line per series."""

    title: str
    labels: tuple[str, ...]
    series: tuple[Series, ...]
    unit: str = ""


@dataclass(frozen=True)
class BarChart:
    """Horizontal bars: one group per label, one bar per series in each group."""

    title: str
    labels: tuple[str, ...]
    series: tuple[Series, ...]
    unit: str = ""


Chart = LineChart | BarChart


@dataclass(frozen=True)
class Report:
    """One report: what it is, when and how it was asked for, and its content."""

    kind: str  # "compliance" | "sla" | "cve" | "trend": also the download's file name
    title: str
    generated_at: datetime
    parameters: Mapping[str, str]
    summary: Sequence[tuple[str, str]]
    tables: Sequence[Table]
    charts: Sequence[Chart] = ()
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def main(self) -> Table:
        """The table a CSV holds and a terminal shows first."""
        return self.tables[0]

    def filename(self, extension: str) -> str:
        """``compliance_20260128T1042Z.pdf``: what it is and when, in UTC (sorts by time)."""
        stamp = self.generated_at.astimezone(UTC).strftime("%Y%m%dT%H%MZ")
        return f"{self.kind}_{stamp}.{extension}"


def generated_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def report_header(report: Report) -> dict[str, Any]:
    """The JSON every report starts with: what it is, when it was made, and with which parameters."""
    return {
        "report": report.kind,
        "title": report.title,
        "generated_at": report.generated_at.isoformat(),
        "parameters": dict(report.parameters),
    }

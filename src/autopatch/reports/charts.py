"""Charts as standalone SVG text: the HTML report inlines it, the PDF report draws it (fpdf2 reads SVG).

Hand-written rather than a charting library: two kinds of chart (lines over days, horizontal bars),
and the same SVG must render in a browser and in fpdf2's SVG reader, which takes shapes, paths and
text with presentation attributes but no CSS. A series never differs by colour alone: each has its
own dash pattern, and its name and last value are written beside it; bars carry their numbers.
"""

from __future__ import annotations

import math
from html import escape

from autopatch.reports.model import BarChart, Chart, LineChart, Series

FONT = "Helvetica"
INK = "#222222"
GRID = "#d0d0d0"
# Hues that also differ in lightness (the chart survives greyscale), then a dash pattern each.
STYLES: dict[str, tuple[str, str]] = {
    "Critical": ("#7f0000", ""),
    "Important": ("#d9480f", "7 3"),
    "Moderate": ("#9c7a00", "2 3"),
    "Low": ("#1f5fa8", "9 3 2 3"),
    "Unrated": ("#666666", "1 3"),
    # Compliance states: the words are written beside each bar too.
    "compliant": ("#2b7a3d", ""),
    "non-compliant": ("#a3171f", ""),
    "unknown": ("#7a7f87", ""),
}
EXTRA_STYLES = (("#2b7a3d", ""), ("#5b3a8c", "6 3"), ("#444444", "2 2"))


def style(name: str, index: int) -> tuple[str, str]:
    """The colour and dash pattern of a series (severities have their own)."""
    return STYLES.get(name, EXTRA_STYLES[index % len(EXTRA_STYLES)])


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _ticks(top: float) -> list[float]:
    """Round gridline values from 0 to at least ``top`` (4 or 5 steps)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [step * i for i in range(math.ceil(top / step) + 1)]


def _text(x: float, y: float, content: str, size: int = 11, anchor: str = "start", weight: str = "normal") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-family="{FONT}" font-size="{size}" fill="{INK}" '
        f'text-anchor="{anchor}" font-weight="{weight}">{escape(content)}</text>'
    )


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>' + "".join(body) + "</svg>"
    )


def line_chart_svg(chart: LineChart, width: int = 760, height: int = 300) -> str:
    """Lines over days, a y grid with values, the first, middle and last day on the x axis."""
    left, right, top, bottom = 56, 170, 34, 42
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for series in chart.series for v in series.values if v is not None]
    ticks = _ticks(max(values, default=0.0))
    high = ticks[-1] or 1.0
    count = max(1, len(chart.labels) - 1)

    def x(index: int) -> float:
        return left + plot_w * index / count

    def y(value: float) -> float:
        return top + plot_h * (1 - value / high)

    body = [_text(left, 20, chart.title, 13, weight="bold")]
    for tick in ticks:
        body.append(
            f'<line x1="{left}" y1="{y(tick):.1f}" x2="{left + plot_w}" y2="{y(tick):.1f}" stroke="{GRID}" '
            'stroke-width="1"/>'
        )
        body.append(_text(left - 6, y(tick) + 4, _number(tick), 10, "end"))
    if chart.labels:
        for index in sorted({0, len(chart.labels) // 2, len(chart.labels) - 1}):
            anchor = "start" if index == 0 else "end" if index == len(chart.labels) - 1 else "middle"
            body.append(_text(x(index), top + plot_h + 18, chart.labels[index], 10, anchor))
    if chart.unit:
        body.append(_text(left, top + plot_h + 34, chart.unit, 10))
    placed: list[float] = []
    for index, series in enumerate(chart.series):
        colour, dash = style(series.name, index)
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        for segment in _segments(series):
            points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in segment)
            if len(segment) == 1:
                i, v = segment[0]
                body.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"/>')
            else:
                body.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2.2"{dashes}/>')
        last = next(((i, v) for i, v in reversed(list(enumerate(series.values))) if v is not None), None)
        label_y = y(last[1]) + 4 if last else top + 14 * index
        while any(abs(label_y - other) < 13 for other in placed):  # labels of close lines must not overlap
            label_y += 13
        placed.append(label_y)
        body.append(
            f'<line x1="{left + plot_w + 6}" y1="{label_y - 4:.1f}" x2="{left + plot_w + 24}" y2="{label_y - 4:.1f}" '
            f'stroke="{colour}" stroke-width="2.2"{dashes}/>'
        )
        value = _number(last[1]) if last else "no data"
        body.append(_text(left + plot_w + 28, label_y, f"{series.name} {value}", 11))
    body.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="{INK}" '
        'stroke-width="1"/>'
    )
    return _svg(width, height, chart.title, body)


def _segments(series: Series) -> list[list[tuple[int, float]]]:
    """Runs of consecutive known values (a gap in the data is a gap in the line)."""
    segments: list[list[tuple[int, float]]] = [[]]
    for index, value in enumerate(series.values):
        if value is None:
            if segments[-1]:
                segments.append([])
        else:
            segments[-1].append((index, value))
    return [segment for segment in segments if segment]


def bar_chart_svg(chart: BarChart, width: int = 760) -> str:
    """Horizontal bars per group, each labelled with its number (and its series when there are several)."""
    label_w, value_w, top, bar_h, gap = 150, 150, 34, 18, 12
    plot_w = width - label_w - value_w
    high = max((v for s in chart.series for v in s.values if v is not None), default=0.0) or 1.0
    height = top + len(chart.labels) * (len(chart.series) * (bar_h + 4) + gap) + 10
    body = [_text(0, 20, chart.title, 13, weight="bold")]
    y = top
    for group, label in enumerate(chart.labels):
        body.append(_text(label_w - 8, y + bar_h - 4, label, 11, "end"))
        for index, series in enumerate(chart.series):
            value = series.values[group]
            colour, _ = style(
                series.name if len(chart.series) > 1 else label, index if len(chart.series) > 1 else group
            )
            length = 0.0 if not value else max(2.0, plot_w * value / high)
            body.append(f'<rect x="{label_w}" y="{y}" width="{length:.1f}" height="{bar_h}" fill="{colour}"/>')
            text = "none" if value is None else _number(value) + (f" {chart.unit}" if chart.unit else "")
            if len(chart.series) > 1:
                text += f" {series.name}"
            body.append(_text(label_w + length + 6, y + bar_h - 4, text, 11))
            y += bar_h + 4
        y += gap
    return _svg(width, height, chart.title, body)


def chart_svg(chart: Chart) -> str:
    return line_chart_svg(chart) if isinstance(chart, LineChart) else bar_chart_svg(chart)

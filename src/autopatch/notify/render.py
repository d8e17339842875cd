"""Pure rendering of a ``RunSummary``: the subject line, plain text, HTML and a JSON-ready dict.

Every channel renders through these functions so an e-mail, a Slack message and an SNS message
about the same run say the same thing. No I/O here; the adapters only carry the result.
Server names, reasons and ids come from Windows hosts and command output, so the HTML escapes
every one of them: a server named ``<script>`` must not run in a mail client or a dashboard.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from autopatch.domain.summary import KbOutcome, RunSummary, ServerSummary

_NONE = "none"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def format_duration(seconds: float) -> str:
    """``3723.4`` → ``"1h 02m 03s"``: short and unambiguous in a subject line or a table cell."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def run_duration_seconds(summary: RunSummary) -> float:
    return max(0.0, (summary.finished_at - summary.started_at).total_seconds())


def totals_line(summary: RunSummary) -> str:
    """``"12 KBs installed on 5 servers, 1 failed"``: the run's outcome in one clause.

    "failed" counts servers with at least one failed KB (``RunSummary.failed_servers``), because
    the question a reader asks first is which machines need attention.
    """
    installed = _plural(summary.installed_count, "KB")
    servers = _plural(len(summary.servers), "server")
    return f"{installed} installed on {servers}, {summary.failed_servers} failed"


def subject(summary: RunSummary) -> str:
    """The e-mail/SNS subject: ``"AutoPatch run r-42 Succeeded: 12 KBs installed on 5 servers, 1 failed"``.

    Whitespace (newlines included) is collapsed so a strange run id can never inject a header line.
    """
    text = f"AutoPatch run {summary.run_id} {summary.status}: {totals_line(summary)}"
    return " ".join(text.split())


def header_line(summary: RunSummary) -> str:
    return (
        f"Run {summary.run_id} ({summary.kind}) {summary.status}: {totals_line(summary)}; "
        f"duration {format_duration(run_duration_seconds(summary))}"
    )


def reason_line(summary: RunSummary) -> str:
    """``"Halted: ring canary failed its health gate: …"``: the run's status and why it ended so."""
    return f"{summary.status}: {' '.join(summary.reason.split())}"


def _server_title(server: ServerSummary) -> str:
    product = f" — {server.product}" if server.product else ""
    return f"{server.name} ({server.instance_id}){product}"


def _build_change(server: ServerSummary) -> str:
    return f"{server.build_before or 'unknown'} → {server.build_after or 'unknown'}"


def _outcomes_text(outcomes: Sequence[KbOutcome]) -> list[str]:
    return [f"{outcome.kb}: {outcome.reason}" if outcome.reason else outcome.kb for outcome in outcomes]


def _server_rows(server: ServerSummary) -> list[tuple[str, list[str]]]:
    """The table both renderers print, as (label, values) with empty lists meaning "none"."""
    if server.status == "Skipped":  # never touched: no KB rows, no build change to report
        return [("Not patched", [server.reason or "skipped"]), ("Build", [server.build_before or "not scanned"])]
    return [
        ("Already installed", list(server.already_installed)),
        ("Installed now", list(server.installed_now)),
        ("Failed", _outcomes_text(server.failed)),
        ("Skipped", _outcomes_text(server.skipped)),
        ("Reboots", [str(server.reboots)]),
        ("Duration", [format_duration(server.duration_seconds)]),
        ("Build", [_build_change(server)]),
    ]


def render_text(summary: RunSummary) -> str:
    """A plain-text report: one header line, then one indented block per server."""
    lines = [header_line(summary)]
    if summary.reason:
        lines.append(reason_line(summary))
    if not summary.servers:
        lines.append("No servers were part of this run.")
    for server in summary.servers:
        lines.append("")
        lines.append(_server_title(server))
        for label, values in _server_rows(server):
            if label in ("Failed", "Skipped") and len(values) > 1:
                # One KB per line: failure reasons are long (HRESULT text) and read badly joined.
                lines.append(f"  {label}:")
                lines.extend(f"    - {value}" for value in values)
            else:
                lines.append(f"  {label}: {', '.join(values) if values else _NONE}")
    return "\n".join(lines) + "\n"


def _html_cell(values: list[str]) -> str:
    if not values:
        return f"<td>{_NONE}</td>"
    if len(values) == 1:
        return f"<td>{escape(values[0])}</td>"
    items = "".join(f"<li>{escape(value)}</li>" for value in values)
    return f'<td><ul style="margin:0;padding-left:1.2em">{items}</ul></td>'


def render_html(summary: RunSummary) -> str:
    """An HTML report (for mail clients): a header, then a small two-column table per server."""
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>',
        escape(subject(summary)),
        "</title></head><body>",
        f"<h2>{escape(header_line(summary))}</h2>",
    ]
    if summary.reason:
        parts.append(f"<p>{escape(reason_line(summary))}</p>")
    if not summary.servers:
        parts.append("<p>No servers were part of this run.</p>")
    for server in summary.servers:
        parts.append(f"<h3>{escape(_server_title(server))}</h3>")
        parts.append('<table border="1" cellspacing="0" cellpadding="4">')
        for label, values in _server_rows(server):
            parts.append(f'<tr><th align="left">{escape(label)}</th>{_html_cell(values)}</tr>')
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _outcomes_dicts(outcomes: Sequence[KbOutcome]) -> list[dict[str, str]]:
    return [{"kb": outcome.kb, "reason": outcome.reason} for outcome in outcomes]


def summary_to_dict(summary: RunSummary) -> dict[str, Any]:
    """The summary as JSON-ready data (snake_case keys, ISO 8601 datetimes) for webhooks.

    Totals are included precomputed so a receiver (a chat bot, a ticketing rule) need not
    re-derive them, and the subject is included so it can be shown as-is.
    """
    return {
        "run_id": summary.run_id,
        "kind": summary.kind,
        "status": summary.status,
        "reason": summary.reason,
        "subject": subject(summary),
        "started_at": summary.started_at.isoformat(),
        "finished_at": summary.finished_at.isoformat(),
        "duration_seconds": run_duration_seconds(summary),
        "totals": {
            "servers": len(summary.servers),
            "installed": summary.installed_count,
            "failed_servers": summary.failed_servers,
            "failed_kbs": sum(len(server.failed) for server in summary.servers),
            "skipped_kbs": sum(len(server.skipped) for server in summary.servers),
            "reboots": sum(server.reboots for server in summary.servers),
        },
        "servers": [
            {
                "instance_id": server.instance_id,
                "name": server.name,
                "product": server.product,
                "already_installed": list(server.already_installed),
                "installed_now": list(server.installed_now),
                "failed": _outcomes_dicts(server.failed),
                "skipped": _outcomes_dicts(server.skipped),
                "reboots": server.reboots,
                "duration_seconds": server.duration_seconds,
                "build_before": server.build_before,
                "build_after": server.build_after,
            }
            for server in summary.servers
        ],
    }

"""How listings look to a person: short product names, flat CSV rows, exposure tables that fit 80 columns.

JSON keeps the full documented shapes; these helpers only shape what a table or a CSV file shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from autopatch.cli.output import OutputFormat, render
from autopatch.domain.os_identity import CORE_SUFFIX

EXPOSURE_HEADERS = {
    "name": "server",
    "open_critical": "crit",
    "open_important": "imp",
    "overdue_total": "overdue",
    "closing": "closing KBs",
}
CVE_COLUMNS = (
    "cve",
    "severity",
    "month",
    "status",
    "fix",
    "fixing_kbs",
    "kev",
    "exploited",
    "publicly_disclosed",
    "due",
    "overdue",
    "reason",
    "title",
)


def short_product(name: str | None) -> str | None:
    """``Windows Server 2022, 23H2 Edition (Server Core installation)`` → ``Windows Server 23H2 (Core)``."""
    if name is None:
        return None
    text = name.replace(CORE_SUFFIX, " (Core)")
    if ", " in text and " Edition" in text:  # "Windows Server 2022, 23H2 Edition" is known by its version
        head, _, rest = text.partition(", ")
        text = head.rsplit(" ", 1)[0] + " " + rest.replace(" Edition", "")
    return text


def short_time(text: str | None) -> str:
    """``2026-11-28T12:45:34+00:00`` → ``2026-11-28 12:45`` (UTC, as stored)."""
    return text[:16].replace("T", " ") if text else ""


def risk_flags(cve: dict[str, Any], with_overdue: bool = True) -> list[str]:
    """A CVE row's badges as words: ``overdue``, ``KEV``, ``exploited``, ``disclosed``.

    A catalog row has no server: its ``overdue`` (the deadline has passed) is left to JSON and CSV.
    """
    names = (("overdue", "overdue"), ("kev", "KEV"), ("exploited", "exploited"), ("publicly_disclosed", "disclosed"))
    return [label for key, label in names if cve.get(key) and (with_overdue or key != "overdue")]


def closing_text(closing: Iterable[dict[str, Any]] | None) -> list[str]:
    return [kb["kb"] + (" (manual)" if kb["delivery"] == "manual" else "") for kb in closing or ()]


def exposure_table_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per server; a server whose exposure is unknown says why where the KBs would be."""
    shown = []
    for row in rows:
        known = row["status"] == "assessed"
        status = row["status"] or ""
        if status.startswith("offline since "):
            status = "offline since " + short_time(status.removeprefix("offline since "))
        shown.append(
            {
                "name": row["name"],
                "product": short_product(row["product"]),
                "build": row["build"],
                "open_critical": row["open_critical"] if known else "?",
                "open_important": row["open_important"] if known else "?",
                "overdue_total": row.get("overdue_total") if known else "?",
                "closing": closing_text(row["closing_kbs"]) if known else status,
            }
        )
    return shown


def exposure_csv_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (server, CVE); a server without CVE detail (unknown exposure) is one row of its own."""
    flat = []
    for row in rows:
        server = {
            "instance_id": row["instance_id"],
            "name": row["name"],
            "product": row["product"],
            "build": row["build"],
            "server_status": row["status"],
        }
        cves = row.get("cves") or []
        if not cves:
            flat.append(server | dict.fromkeys(CVE_COLUMNS))
        flat.extend(server | {column: cve.get(column) for column in CVE_COLUMNS} for cve in cves)
    return flat


def print_exposure(rows: list[dict[str, Any]], output: OutputFormat, title: str, console: Any = None) -> None:
    columns = ("name", "product", "build", "open_critical", "open_important", "overdue_total", "closing")
    render(exposure_table_rows(rows), output, columns=columns, title=title, console=console, headers=EXPOSURE_HEADERS)

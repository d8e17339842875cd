"""Rings on the command line: reading ``--health-script``, and the rings of ``run show`` and ``status``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from autopatch.cli.output import OutputFormat, render
from autopatch.domain.rings import HEALTH_SCRIPT_MAX_BYTES, format_duration
from autopatch.engine.rings import ring_view
from autopatch.errors import ValidationError
from autopatch.store.base import RunStore

_FIELD = "--health-script"


def read_health_script(path: Path | None) -> str | None:
    """The script file's text (UTF-8, a byte-order mark dropped); its rules are checked by ``parse_rollout``."""
    if path is None:
        return None
    try:
        if path.stat().st_size > 4 * HEALTH_SCRIPT_MAX_BYTES:  # refused before reading a huge file
            raise ValidationError(
                _FIELD, str(path), f"the health-check script is at most {HEALTH_SCRIPT_MAX_BYTES} bytes"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ValidationError(_FIELD, str(path), f"cannot be read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError(_FIELD, str(path), "the health-check script must be UTF-8 text") from None


def gate_detail(ring: dict[str, Any]) -> str:
    """What a ring's gate is waiting for, or why it ended as it did."""
    if ring["soak_remaining_seconds"] is not None:
        return f"soak: {format_duration(ring['soak_remaining_seconds'])} left (until {ring['soak_until']})"
    return str(ring["reason"])


def print_rings(rings: list[dict[str, Any]]) -> None:
    """``run show``: one row per ring with its gate, then the servers that failed a gate's check."""
    if not rings:
        return
    rows = [
        {
            "ring": ring["name"],
            "selector": ring["selector"],
            "gate": ring["status"],
            "servers": ring["counts"]["servers"],
            "checks": ", ".join(f"{count} {key}" for key, count in ring["counts"].items() if key != "servers"),
            "detail": gate_detail(ring),
        }
        for ring in rings
    ]
    render(rows, OutputFormat.table, title="Rings, in order, with their health gates")
    failed = [
        {"ring": ring["name"], "server": server["name"], "check": server["check"], "detail": server["detail"]}
        for ring in rings
        for server in ring["servers"]
        if server["check"] == "Failed"
    ]
    if failed:
        render(failed, OutputFormat.table, title="Servers that failed a gate")


def print_server_ring(store: RunStore, instance_id: str, kbs: list[dict[str, Any]]) -> None:
    """``status``: the server's ring in its latest run, and that ring's gate (nothing for a run without rings)."""
    if not kbs:
        return
    run_id = max(kbs, key=lambda kb: kb["updated_at"])["run_id"]
    for ring in ring_view(store, run_id):
        for server in ring["servers"]:
            if server["instance_id"] == instance_id:
                line = f"Ring {ring['name']} of run {run_id}: gate {ring['status']}; this server: {server['check']}"
                detail = server["detail"] or gate_detail(ring)
                Console().print(line + (f" ({detail})" if detail else ""), markup=False)
                return

"""``autopatch serve``: the HTTP API (``/api/v1``, docs at ``/api/docs``) on uvicorn.

One process serves the API and the dashboard and drives the runs started through it (see
``api/run_worker.py``); runs started by ``autopatch patch`` show up at once (the same database).
It also runs the maintenance-window scheduler (``api/window_scheduler.py``) unless ``--no-scheduler``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from autopatch.cli.context import CliContext


def serve_command(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0 for every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 8080,
    access_log: Annotated[
        bool, typer.Option(help="log every request (costs ~10% of throughput; the audit log keeps every change)")
    ] = False,
    scheduler: Annotated[
        bool, typer.Option(help="run the maintenance-window scheduler here (as `autopatch scheduler` does)")
    ] = True,
) -> None:
    """Serve the HTTP API until interrupted; every request but /api/v1/health needs a token."""
    import uvicorn

    from autopatch.api.app import create_app

    context: CliContext = ctx.obj
    context.console.print(f"AutoPatch API on http://{host}:{port}/api/v1 (docs: http://{host}:{port}/api/docs)")
    app = create_app(context.settings, start_scheduler=scheduler)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log)

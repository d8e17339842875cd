"""``autopatch settings show | set KEY VALUE | unset KEY``: what an admin may change without a restart.

The same steps as ``/api/v1/settings`` (``autopatch.admin_settings``), audited the same way, with
``cli:<OS user>`` as the actor. Secret values (the notifier setting) are shown masked, and a
refused value is echoed only when it is not secret.
"""

from __future__ import annotations

from typing import Annotated

import typer

from autopatch.admin_settings import set_setting, settings_view, unset_setting
from autopatch.cli.access import FormatOption, audited
from autopatch.cli.context import CliContext
from autopatch.cli.output import OutputFormat, render

app = typer.Typer(help="Settings an admin changes at run time (stored in the database).", no_args_is_help=True)


@app.command("show")
def show_command(ctx: typer.Context, output: FormatOption = OutputFormat.table) -> None:
    """Each setting with its value now, where it comes from (environment, stored, default) and what it does."""
    context: CliContext = ctx.obj
    render(settings_view(context.settings, context.store), output, title="Settings (environment > stored > default)")


@app.command("set")
def set_command(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="notify, http_timeout, http_retries or import_workers")],
    value: Annotated[str, typer.Argument(help="the new value, checked like its AUTOPATCH_ variable")],
    output: FormatOption = OutputFormat.table,
) -> None:
    """Store a value; it applies to the next run, import or catalog update (CLI and server alike)."""
    context: CliContext = ctx.obj
    with audited(context, "settings.set", key):
        row = set_setting(context.settings, context.store, key, value)
    render([row], output)


@app.command("unset")
def unset_command(ctx: typer.Context, key: str, output: FormatOption = OutputFormat.table) -> None:
    """Forget a stored value: back to the environment's or the default."""
    context: CliContext = ctx.obj
    with audited(context, "settings.unset", key):
        row = unset_setting(context.settings, context.store, key)
    render([row], output)

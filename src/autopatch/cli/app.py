"""Entry point of the ``autopatch`` command: global options, sub-commands and error → exit code.

Input errors (bad value, unknown product, not MSRC data) exit with 2 and one line on stderr;
execution errors (MSRC unreachable, database failure) exit with 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from autopatch.cli import catalog, fleet, patch
from autopatch.cli.context import CliContext, load_settings
from autopatch.cli.demo import demo_command
from autopatch.cli.exposure import assess_command
from autopatch.errors import ExecutionError, InputError

app = typer.Typer(
    name="autopatch",
    help="CVE-driven patching for Windows servers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(catalog.app, name="catalog")
app.command("demo")(demo_command)
app.command("assess")(assess_command)
app.add_typer(fleet.app, name="fleet")
app.command("exposure")(fleet.exposure_command)
app.command("patch")(patch.patch_command)
app.command("runs")(patch.runs_command)
app.add_typer(patch.run_app, name="run")
app.command("status")(patch.status_command)
app.command("retry")(patch.retry_command)
app.command("reboot")(patch.reboot_command)
app.command("cancel")(patch.cancel_command)
app.command("resume")(patch.resume_command)


@app.callback()
def configure(
    ctx: typer.Context,
    db: Annotated[Path | None, typer.Option(help="SQLite database [env AUTOPATCH_DB]")] = None,
    msrc_base_url: Annotated[str | None, typer.Option(help="MSRC API root [env AUTOPATCH_MSRC_BASE_URL]")] = None,
) -> None:
    """Global options; every value also comes from an AUTOPATCH_* environment variable."""
    context = CliContext(load_settings(db=db, msrc_base_url=msrc_base_url))
    ctx.obj = context
    ctx.call_on_close(context.close)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and translate AutoPatch errors into one line on stderr and an exit code."""
    try:
        app(args=argv, standalone_mode=False)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ExecutionError as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors: unknown option, missing argument…
        show = getattr(exc, "show", None)
        show() if callable(show) else print(f"error: {exc.format_message()}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

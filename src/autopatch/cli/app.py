"""Entry point of the ``autopatch`` command: global options, sub-commands and error → exit code.

Input errors (bad value, unknown product, not MSRC data, a bad option) exit with 2 and one line on
stderr; execution errors (MSRC unreachable, database failure) and a patch run that ended Failed
exit with 1. Settings are checked before any command runs, so a bad one never follows real work.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from autopatch.cli import access, admin, catalog, fleet, patch, snapshots
from autopatch.cli import kev as kev_cli
from autopatch.cli import sla as sla_cli
from autopatch.cli.baselines import app as baseline_app
from autopatch.cli.context import CliContext, load_settings
from autopatch.cli.demo import demo_command
from autopatch.cli.exposure import assess_command
from autopatch.cli.reports import app as report_app
from autopatch.cli.serve import serve_command
from autopatch.cli.windows import app as window_app
from autopatch.cli.windows import scheduler_command
from autopatch.errors import ExecutionError, InputError, shorten

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
app.command("serve")(serve_command)
app.add_typer(access.app, name="token")
app.command("audit")(access.audit_command)
app.add_typer(admin.app, name="settings")
app.add_typer(baseline_app, name="baseline")
app.add_typer(window_app, name="window")
app.command("scheduler")(scheduler_command)
app.add_typer(snapshots.app, name="snapshots")
app.add_typer(kev_cli.app, name="kev")
app.add_typer(sla_cli.app, name="sla")
app.add_typer(report_app, name="report")


@app.callback()
def configure(
    ctx: typer.Context,
    db: Annotated[Path | None, typer.Option(help="SQLite database [env AUTOPATCH_DB]")] = None,
    msrc_base_url: Annotated[str | None, typer.Option(help="MSRC API root [env AUTOPATCH_MSRC_BASE_URL]")] = None,
) -> None:
    """Global options; every value also comes from an AUTOPATCH_* environment variable."""
    context = CliContext(load_settings(db=db, msrc_base_url=msrc_base_url))
    context.notifiers  # noqa: B018 — validated now: AUTOPATCH_NOTIFY=ftp://x must fail before a run, not after
    ctx.obj = context
    ctx.call_on_close(context.close)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and translate AutoPatch errors into one line on stderr and an exit code."""
    try:
        # Outside standalone mode typer *returns* the code of a ``typer.Exit`` raised by a command.
        result = app(args=argv, standalone_mode=False)
    except InputError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except ExecutionError as exc:
        print(f"failed: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # usage errors: unknown option, missing argument, bad value…
        print(f"error: {_one_line(exc.format_message())} (see --help)", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


def _one_line(message: str) -> str:
    """One line whatever the message holds (a hostile value may carry newlines)."""
    return shorten(" ".join(message.split()), 240)


if __name__ == "__main__":
    sys.exit(main())

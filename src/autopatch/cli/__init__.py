"""The ``autopatch`` command line (typer + rich)."""

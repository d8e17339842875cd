"""A rich progress bar wired to the ``on_progress(done, total, label)`` callbacks of long steps."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from autopatch.catalog.ingest import ProgressCallback


@contextmanager
def progress_bar(console: Console, description: str) -> Iterator[ProgressCallback]:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[label]}"),
    )
    # Transient: a failing command leaves one line on stderr, its error, not a half-filled bar.
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=None, label="")

        def update(done: int, total: int, label: str) -> None:
            progress.update(task, completed=done, total=total, label=Path(label).name)

        yield update

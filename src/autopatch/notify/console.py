"""Console notifier: the text report on a stream, for the CLI and for local runs without a mail relay."""

from __future__ import annotations

import sys
from typing import TextIO

from autopatch.domain.summary import RunSummary
from autopatch.notify.base import NotificationError
from autopatch.notify.render import render_text


class ConsoleNotifier:
    """Writes ``render_text(summary)`` to ``stream`` (standard output by default)."""

    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        # None means "sys.stdout at send time", not at construction: pytest's capture and
        # contextlib.redirect_stdout swap sys.stdout after the notifier may have been built.
        self._stream = stream

    def send(self, summary: RunSummary) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        try:
            stream.write(render_text(summary))
            stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: write to a closed file
            raise NotificationError(f"console: cannot write the summary: {exc}") from exc

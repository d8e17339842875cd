"""The notifier port: how a finished run's summary reaches people.

A notifier is anything with a ``name`` and a ``send(summary)`` that raises ``NotificationError``
when delivery fails. Adapters (console, SMTP, webhook, SNS) live one per file next to this one and
translate their vendor errors (``smtplib``, ``httpx``, ``botocore``) into ``NotificationError``.

``notify_all`` is the only caller the engine needs: the original system ignored notification
failures silently; we keep "a notification never fails the run" but return what happened, so the
run record says which channel failed and why.

That record (``autopatch run show``), the logs and the CLI's messages must never carry a secret: an
SMTP password or an incoming-webhook URL (its path and query are the bearer token). A notifier's
``name`` and ``repr`` show only the kind, host and port, and every piece of outside text an error
repeats (a server's reply, a response body, a vendor exception's message) goes through ``echo``:
the notifier's secrets replaced by ``***``, one printable line, at most ``ECHO_LIMIT`` characters.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from autopatch.domain.summary import RunSummary
from autopatch.errors import ExecutionError

logger = logging.getLogger(__name__)

ECHO_LIMIT = 80
"""The most characters of outside text (a reply, a body, a setting's value) an error message repeats."""
MIN_SECRET_LENGTH = 4
"""Shorter pieces are not replaced inside a text (``"ab"`` would mangle every word); see ``redact``."""
REDACTED = "***"
WITHHELD = "(withheld: it may contain a secret)"


class NotificationError(ExecutionError):
    """A notifier could not deliver the summary (server down, refused, bad credentials...)."""


class Notifier(Protocol):
    """One delivery channel for run summaries."""

    @property
    def name(self) -> str:
        """A short label for records and logs; never contains a secret (password, webhook token)."""
        ...

    def send(self, summary: RunSummary) -> None:
        """Deliver the summary once, or raise ``NotificationError`` saying why it failed (no secret in it)."""
        ...


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What happened when one notifier was asked to deliver a summary."""

    notifier: str
    ok: bool
    error: str | None = None


def notify_all(notifiers: Iterable[Notifier], summary: RunSummary) -> list[DeliveryResult]:
    """Send the summary through every notifier and report each outcome, in order.

    Every ``Exception`` is caught, not only ``NotificationError``: a bug in one channel must not
    cost the other channels their message, nor fail a patch run whose servers are already patched.
    ``KeyboardInterrupt`` and ``SystemExit`` still propagate so an operator can stop the process.
    """
    results: list[DeliveryResult] = []
    for notifier in notifiers:
        try:
            notifier.send(summary)
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            logger.warning("notifier %s failed for run %s: %s", notifier.name, summary.run_id, error)
            results.append(DeliveryResult(notifier=notifier.name, ok=False, error=error))
        else:
            results.append(DeliveryResult(notifier=notifier.name, ok=True))
    return results


def one_line(text: str) -> str:
    """``text`` as one printable line: control characters and runs of white space become one space.

    A response body is shown by ``autopatch run show`` in a terminal, where an escape sequence or a
    forged second line would mislead the operator.
    """
    return " ".join("".join(char if char.isprintable() else " " for char in text).split())


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """``one_line(text)`` cut to at most ``limit`` characters, the cut marked with "…"."""
    line = one_line(text)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of every secret (any letter case) replaced by ``***``.

    Secrets of ``MIN_SECRET_LENGTH`` characters or more are replaced, longest first so that a URL
    goes before its path and the path before its segments. A shorter secret cannot be cut out of a
    text without mangling it, so a text that still contains one is withheld as a whole.
    """
    wanted = {secret for secret in secrets if secret}
    long = sorted((secret for secret in wanted if len(secret) >= MIN_SECRET_LENGTH), key=len, reverse=True)
    if long:
        text = re.compile("|".join(re.escape(secret) for secret in long), re.IGNORECASE).sub(REDACTED, text)
    folded = text.casefold()
    if any(secret.casefold() in folded for secret in wanted):
        return WITHHELD  # a short secret, or one that the replacements themselves put together again
    return text


def echo(text: str, secrets: Iterable[str] = ()) -> str:
    """Outside text made fit for an error message: secrets redacted, one line, at most ``ECHO_LIMIT``.

    The text is made one line before redacting (a secret that a server wrapped over two lines is
    whole again) and cut after (a cut must not leave the head of a secret behind).
    """
    wanted = [secret for secret in secrets if secret]
    return clip(redact(one_line(text), [*wanted, *map(one_line, wanted)]))

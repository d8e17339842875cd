"""The notifier port: how a finished run's summary reaches people.

A notifier is anything with a ``name`` and a ``send(summary)`` that raises ``NotificationError``
when delivery fails. Adapters (console, SMTP, webhook, SNS) live one per file next to this one and
translate their vendor errors (``smtplib``, ``httpx``, ``botocore``) into ``NotificationError``.

``notify_all`` is the only caller the engine needs: the original system ignored notification
failures silently; we keep "a notification never fails the run" but return what happened, so the
run record says which channel failed and why.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from autopatch.domain.summary import RunSummary
from autopatch.errors import ExecutionError

logger = logging.getLogger(__name__)


class NotificationError(ExecutionError):
    """A notifier could not deliver the summary (server down, refused, bad credentials...)."""


class Notifier(Protocol):
    """One delivery channel for run summaries."""

    @property
    def name(self) -> str:
        """A short label for records and logs; never contains a secret (password, webhook token)."""
        ...

    def send(self, summary: RunSummary) -> None:
        """Deliver the summary once, or raise ``NotificationError`` saying why it failed."""
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

"""Notifier port (``base.py``), pure rendering (``render.py``) and one adapter per file.

The engine calls ``notify_all(notifiers_from_settings(settings.notify), summary)`` after a run and
records the returned ``DeliveryResult`` list; a failed notification never fails the run.
"""

from autopatch.notify.base import DeliveryResult, NotificationError, Notifier, notify_all
from autopatch.notify.console import ConsoleNotifier
from autopatch.notify.factory import notifiers_from_settings
from autopatch.notify.render import render_html, render_text, subject, summary_to_dict
from autopatch.notify.smtp import SmtpNotifier
from autopatch.notify.sns import SnsNotifier
from autopatch.notify.webhook import WebhookNotifier

__all__ = [
    "ConsoleNotifier",
    "DeliveryResult",
    "NotificationError",
    "Notifier",
    "SmtpNotifier",
    "SnsNotifier",
    "WebhookNotifier",
    "notifiers_from_settings",
    "notify_all",
    "render_html",
    "render_text",
    "subject",
    "summary_to_dict",
]

"""Webhook notifier: POSTs the summary as JSON with httpx.

Two payload formats: ``"json"`` sends ``summary_to_dict`` for programs (ticketing, a dashboard);
``"slack"`` sends ``{"text": ...}``, the body Slack and Teams incoming webhooks accept.
Incoming-webhook URLs are bearer secrets (the path is the token), so names and error messages
show only the scheme and host.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

import httpx

from autopatch.domain.summary import RunSummary
from autopatch.errors import ValidationError
from autopatch.notify.base import NotificationError
from autopatch.notify.render import render_text, subject, summary_to_dict

WebhookFormat = Literal["json", "slack"]
WEBHOOK_FORMATS: tuple[WebhookFormat, ...] = ("json", "slack")


def webhook_payload(summary: RunSummary, format: WebhookFormat) -> dict[str, Any]:
    """The JSON body for one format (kept separate so tests and previews need no server)."""
    if format == "slack":
        return {"text": subject(summary) + "\n" + render_text(summary)}
    return summary_to_dict(summary)


class WebhookNotifier:
    """POSTs the summary to ``url``; any transport error or non-2xx answer is a ``NotificationError``."""

    def __init__(
        self,
        url: str,
        timeout: float = 10,
        transport: httpx.BaseTransport | None = None,
        format: WebhookFormat = "json",
    ) -> None:
        parts = _split(url)
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationError("url", redact_url(url), "must be an http:// or https:// URL with a host")
        if format not in WEBHOOK_FORMATS:
            raise ValidationError("format", format, f"must be one of {', '.join(WEBHOOK_FORMATS)}")
        if timeout <= 0:
            raise ValidationError("timeout", timeout, "must be a positive number of seconds")
        self.url = url
        self.timeout = timeout
        self.format: WebhookFormat = format
        self._transport = transport

    @property
    def name(self) -> str:
        label = "slack" if self.format == "slack" else "webhook"
        return f"{label}+{redact_url(self.url)}"

    def send(self, summary: RunSummary) -> None:
        payload = webhook_payload(summary, self.format)
        try:
            with httpx.Client(transport=self._transport, timeout=self.timeout) as client:
                response = client.post(self.url, json=payload)
        except httpx.HTTPError as exc:
            # httpx puts the full URL in some messages; name the host only.
            raise NotificationError(f"{self.name}: request failed: {type(exc).__name__}") from exc
        if not response.is_success:
            body = response.text[:200].strip()
            detail = f": {body}" if body else ""
            raise NotificationError(f"{self.name}: answered HTTP {response.status_code}{detail}")


def redact_url(url: str) -> str:
    """``https://hooks.slack.com/services/T0/B0/secret`` → ``https://hooks.slack.com/…``."""
    parts = _split(url)
    if parts is None:
        return "<unparsable URL>"
    try:
        port = parts.port
    except ValueError:  # "host:notaport" raises on access, not on split
        port = None
    suffix = f":{port}" if port is not None else ""
    return f"{parts.scheme}://{parts.hostname or '?'}{suffix}/…"


def _split(url: str) -> SplitResult | None:
    try:
        return urlsplit(url)
    except ValueError:  # "http://[::1" (unbalanced IPv6 bracket)
        return None

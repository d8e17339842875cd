"""Webhook notifier: POSTs the summary as JSON with httpx.

Two payload formats: ``"json"`` sends ``summary_to_dict`` for programs (ticketing, a dashboard);
``"slack"`` sends ``{"text": ...}``, the body Slack and Teams incoming webhooks accept.
Incoming-webhook URLs are bearer secrets (the path and the query are the token), so names and
error messages show only the scheme, host and port. Servers that refuse a request often quote it in
their answer ("no route for POST /hooks/T0/B0/xyz"), and httpx errors can quote the URL or what the
far end sent back, so any such text passes through ``echo`` with ``url_secrets(url)`` first.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlsplit

import httpx

from autopatch.domain.summary import RunSummary
from autopatch.errors import ValidationError
from autopatch.notify.base import MIN_SECRET_LENGTH, NotificationError, clip, echo
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
            raise ValidationError("url", clip(redact_url(url)), "must be an http:// or https:// URL with a host")
        if format not in WEBHOOK_FORMATS:
            raise ValidationError("format", clip(str(format)), f"must be one of {', '.join(WEBHOOK_FORMATS)}")
        if timeout <= 0:
            raise ValidationError("timeout", timeout, "must be a positive number of seconds")
        self._url = url
        self._secrets = url_secrets(url)
        self.timeout = timeout
        self.format: WebhookFormat = format
        self._transport = transport

    @property
    def url(self) -> str:
        """The full URL, token included: for sending, never for messages (use ``name``)."""
        return self._url

    @property
    def name(self) -> str:
        label = "slack" if self.format == "slack" else "webhook"
        return f"{label}+{redact_url(self._url)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def send(self, summary: RunSummary) -> None:
        payload = webhook_payload(summary, self.format)
        try:
            with httpx.Client(transport=self._transport, timeout=self.timeout) as client:
                response = client.post(self._url, json=payload)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # An httpx message can quote the URL (InvalidURL) or what the far end sent back (a
            # RemoteProtocolError quoting an "illegal status line" that echoes our request line), and
            # the exception holds the request, URL included: its text is redacted and it is not
            # chained, so no traceback or log of this error can print the token.
            text = echo(str(exc), self._secrets)
            detail = f": {text}" if text else ""
            raise NotificationError(f"{self.name}: request failed: {type(exc).__name__}{detail}") from None
        if not response.is_success:
            text = echo(response.text, self._secrets)
            detail = f": {text}" if text else ""
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


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that no message may repeat, in every form a server might echo them.

    The whole URL, its path, query and fragment, user name and password, each path segment and each
    query value; each as written, percent-decoded and percent-encoded (a JSON body that escapes "/"
    as "\\/" still contains every segment). Pieces shorter than ``MIN_SECRET_LENGTH`` ("v1", "1")
    are left out: they are not tokens, and cutting them out would mangle the rest of the message.
    """
    parts = _split(url)
    if parts is None:
        return [url]
    pieces = {url, parts.path, parts.query, parts.fragment, parts.username or "", parts.password or ""}
    pieces.update(parts.path.split("/"))
    pieces.update(value for _, value in parse_qsl(parts.query, keep_blank_values=True))
    pieces.update(pair.partition("=")[2] for pair in parts.query.split("&"))
    forms = {
        form for piece in pieces for form in (piece, unquote(piece), quote(piece, safe="/"), quote(piece, safe=""))
    }
    return sorted(form for form in forms if len(form) >= MIN_SECRET_LENGTH)


def _split(url: str) -> SplitResult | None:
    try:
        return urlsplit(url)
    except ValueError:  # "http://[::1" (unbalanced IPv6 bracket)
        return None

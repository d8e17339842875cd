"""Build notifiers from the ``AUTOPATCH_NOTIFY`` setting: one string, comma-separated entries.

    console
    smtp://user:pass@host:2525/?from=a@x&to=b@y,c@y&starttls=1&timeout=10
    webhook+https://hooks.example/x          (JSON body: summary_to_dict)
    slack+https://hooks.slack.com/services/… ({"text": ...}, also accepted by Teams)
    sns:arn:aws:sns:eu-west-1:123456789012:autopatch

``to=`` itself holds commas, so a piece that does not start a new entry continues the previous
URL entry. User names and passwords are percent-decoded (write ``@`` as ``%40``). Every error is
a ``ValidationError`` on ``AUTOPATCH_NOTIFY`` naming the entry (password masked) and the rule.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit

from autopatch.errors import ValidationError
from autopatch.notify.base import Notifier
from autopatch.notify.console import ConsoleNotifier
from autopatch.notify.smtp import SmtpNotifier
from autopatch.notify.sns import SnsNotifier
from autopatch.notify.webhook import WebhookNotifier, redact_url

SETTING = "AUTOPATCH_NOTIFY"
_URL_KINDS = ("smtp://", "webhook+", "slack+")
_ENTRY_STARTS = ("sns:", *_URL_KINDS)
_SMTP_PARAMETERS = {"from", "to", "starttls", "timeout"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def notifiers_from_settings(spec: str) -> list[Notifier]:
    """Parse the whole spec; an empty or blank spec means "no notifications" and gives ``[]``."""
    return [_notifier_from_entry(entry) for entry in split_entries(spec)]


def split_entries(spec: str) -> list[str]:
    """Split on commas, gluing back the pieces that belong to a URL entry (``to=b@y,c@y``)."""
    entries: list[str] = []
    for raw_piece in spec.split(","):
        piece = raw_piece.strip()
        if not piece:
            continue  # a trailing or doubled comma must not change the previous URL
        starts_entry = piece == "console" or piece.startswith(_ENTRY_STARTS)  # not "console@corp.example"
        if entries and entries[-1].startswith(_URL_KINDS) and not starts_entry:
            entries[-1] += "," + piece
        else:
            entries.append(piece)
    return entries


def _invalid(entry: str, rule: str) -> ValidationError:
    return ValidationError(SETTING, _mask_secrets(entry), rule)


def _notifier_from_entry(entry: str) -> Notifier:
    try:
        if entry == "console":
            return ConsoleNotifier()
        if entry.startswith("smtp://"):
            return _smtp(entry)
        if entry.startswith("webhook+"):
            return WebhookNotifier(entry.removeprefix("webhook+"), format="json")
        if entry.startswith("slack+"):
            return WebhookNotifier(entry.removeprefix("slack+"), format="slack")
        if entry.startswith("sns:"):
            return SnsNotifier(entry.removeprefix("sns:"))
    except ValidationError as exc:
        # The adapters own their rules (address, URL, ARN); report them against the setting.
        raise _invalid(entry, f"{exc.field} {exc.rule}") from exc
    raise _invalid(entry, "unknown notifier: use console, smtp://, webhook+https://, slack+https:// or sns:<topic ARN>")


def _smtp(entry: str) -> SmtpNotifier:
    try:
        parts = urlsplit(entry)
        port = parts.port
    except ValueError as exc:
        raise _invalid(entry, f"not a valid smtp:// URL ({exc})") from exc
    # parse_qsl turns "+" into a space, which would break "ops+patch@example.com".
    pairs = parse_qsl(parts.query.replace("+", "%2B"), keep_blank_values=True)
    unknown = sorted({key for key, _ in pairs} - _SMTP_PARAMETERS)
    if unknown:
        # A typo such as "startls=1" must not silently send a password in clear text.
        raise _invalid(entry, f"unknown smtp parameter(s) {', '.join(unknown)}; allowed: from, to, starttls, timeout")
    values: dict[str, list[str]] = {}
    for key, value in pairs:
        values.setdefault(key, []).append(value)
    senders = values.get("from", [])
    if len(senders) != 1:
        raise _invalid(entry, "smtp needs exactly one from=<address>")
    recipients = [address.strip() for value in values.get("to", []) for address in value.split(",") if address.strip()]
    if not recipients:
        raise _invalid(entry, "smtp needs to=<address>[,<address>...]")
    starttls = _flag(entry, "starttls", values.get("starttls", ["0"])[-1])
    timeout = _seconds(entry, values.get("timeout", ["10"])[-1])
    if not parts.hostname:
        raise _invalid(entry, "smtp needs a host: smtp://host[:port]/?from=...&to=...")
    return SmtpNotifier(
        host=parts.hostname,
        port=port if port is not None else (587 if starttls else 25),
        sender=senders[0],
        recipients=recipients,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
        starttls=starttls,
        timeout=timeout,
    )


def _flag(entry: str, name: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise _invalid(entry, f"{name} must be 1/0, true/false, yes/no or on/off")


def _seconds(entry: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 3600:  # also rejects nan and inf
        raise _invalid(entry, "timeout must be a number of seconds between 0 and 3600")
    return seconds


def _mask_secrets(entry: str) -> str:
    """Hide what an error message must not print: webhook paths (tokens) and passwords.

    ``slack+https://hooks.slack.com/services/T0/B0/x`` → ``slack+https://hooks.slack.com/…``;
    ``smtp://u:secret@h/?…`` → ``smtp://u:***@h/?…``.
    """
    for kind in ("webhook+", "slack+"):
        if entry.startswith(kind):
            return kind + redact_url(entry.removeprefix(kind))
    scheme, separator, rest = entry.partition("://")
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    if not separator or "@" not in authority:
        return entry
    credentials, _, _host = authority.rpartition("@")
    if ":" not in credentials:
        return entry
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@" + rest[len(credentials) + 1 :]

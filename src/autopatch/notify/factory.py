"""Build notifiers from the ``AUTOPATCH_NOTIFY`` setting: one string, comma-separated entries.

    console
    smtp://user:pass@host:2525/?from=a@x&to=b@y,c@y&starttls=1&timeout=10
    webhook+https://hooks.example/x          (JSON body: summary_to_dict)
    slack+https://hooks.slack.com/services/… ({"text": ...}, also accepted by Teams)
    sns:arn:aws:sns:eu-west-1:123456789012:autopatch

``to=`` itself holds commas, so a piece that does not start a new entry continues the previous
URL entry. An SMTP password may be typed raw, with any of ``@ / ? # :`` in it (users paste them),
or percent-encoded (``%40`` for ``@``); either way it is percent-decoded, so a raw ``%`` followed
by two hex digits must be written ``%25``, and a comma followed by a space ``%2C``. Raw ``@`` and
``:`` in a user name work too; ``/`` and ``?`` in a user name must be percent-encoded. See
``_find_host`` for how the host is told apart from the password.

Every error is a ``ValidationError`` on ``AUTOPATCH_NOTIFY`` naming the entry and the rule; the
entry is shown with its password (or, when the host cannot be found, its whole credential part)
and its webhook path masked, cut to ``ECHO_LIMIT`` characters.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote

from autopatch.errors import ValidationError
from autopatch.notify.base import Notifier, clip, redact
from autopatch.notify.console import ConsoleNotifier
from autopatch.notify.smtp import SmtpNotifier, is_email_address
from autopatch.notify.sns import SnsNotifier
from autopatch.notify.webhook import WebhookNotifier, redact_url

SETTING = "AUTOPATCH_NOTIFY"
_URL_KINDS = ("smtp://", "webhook+", "slack+")
_ENTRY_STARTS = ("sns:", *_URL_KINDS)
_SMTP_PARAMETERS = {"from", "to", "starttls", "timeout"}
_SMTP_FORM = "smtp://[user[:password]@]host[:port]/?from=<address>&to=<address>[,<address>...]"
# What follows the credentials: host[:port] (no "@", "/" or "?"), an optional path (rejected later,
# with its own message), then "?" and the query. Loose on purpose: a mistyped port must still be
# found here, so that the password before it is recognised as a password.
_SMTP_SHAPE = re.compile(r"(?P<hostport>[^@/?]*)(?P<path>/[^@?]*)?\?(?P<query>.*)", re.DOTALL)
_HOST_TAIL = re.compile(r"[^@/?&=,]*/?")  # "@mail.example:25/" ending an entry that has no query
_HOST_ALONE = re.compile(r"[^:@]*(?::[0-9]*)?/?")  # "mail.example:25", not "user:password"
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
    return ValidationError(SETTING, clip(_mask_secrets(entry)), rule)


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
        if exc.field == SETTING:
            raise  # ours, already masked
        # The adapters own their rules (address, URL, ARN); report them against the setting. Not
        # chained: the adapter's error quotes the value it rejected, unmasked.
        raise _invalid(entry, f"{exc.field} {exc.rule}") from None
    raise _invalid(entry, "unknown notifier: use console, smtp://, webhook+https://, slack+https:// or sns:<topic ARN>")


def _smtp(entry: str) -> SmtpNotifier:
    rest = entry.removeprefix("smtp://")
    shape = _find_host(rest)
    values = _smtp_values(shape["query"]) if shape is not None else {}
    if shape is None or not {"from", "to"} & set(values):
        # No query, or what looks like one is the end of a raw password ("p@ss?word@host").
        raise _invalid(entry, f"expected {_SMTP_FORM} (host[:port] followed by /? or ?)")
    start = shape.start()
    unknown = sorted(set(values) - _SMTP_PARAMETERS)
    if unknown:
        # A typo such as "startls=1" must not silently send a password in clear text. Only names
        # that the masked entry shows anyway are repeated: when the host was not found where the
        # user meant it, a "parameter" can be a piece of the password.
        shown = _mask_secrets(entry)
        named = [key for key in unknown if key in shown]
        listed = f" {clip(', '.join(named))}" if named else ""
        allowed = ", ".join(sorted(_SMTP_PARAMETERS))
        raise _invalid(entry, f"unknown smtp parameter(s){listed}; allowed: {allowed}")
    senders = values.get("from", [])
    if len(senders) != 1:
        raise _invalid(entry, "smtp needs exactly one from=<address>")
    recipients = _recipients(values)
    if not recipients:
        raise _invalid(entry, "smtp needs to=<address>[,<address>...]")
    starttls = _flag(entry, "starttls", values.get("starttls", ["0"])[-1])
    timeout = _seconds(entry, values.get("timeout", ["10"])[-1])
    if shape["path"] not in (None, "/"):
        raise _invalid(entry, f"an smtp URL has no path: {_SMTP_FORM}")
    host, port = _host_and_port(entry, shape["hostport"])
    credentials = rest[: start - 1] if start else None
    username, colon, password = (credentials or "").partition(":")
    return SmtpNotifier(
        host=host,
        port=port if port is not None else (587 if starttls else 25),
        sender=senders[0],
        recipients=recipients,
        username=unquote(username) if credentials is not None else None,
        password=unquote(password) if colon else None,
        starttls=starttls,
        timeout=timeout,
    )


def _find_host(rest: str) -> re.Match[str] | None:
    """``_SMTP_SHAPE`` matched where the host begins in ``rest`` (the entry after ``smtp://``).

    Passwords may be typed raw, so ``@ / ? # :`` can come before the host. The host part is what
    follows the LAST ``@`` that is followed by ``host[:port]``, an optional ``/`` and ``?``: the
    true end of the credentials is such an ``@`` whenever the entry has a query at all (a host has
    no ``@``), so the last one is never inside the password. It can only be later, inside a query
    value that itself holds ``@`` and then ``?``, which no address does. The host begins at 0 when
    no ``@`` comes before it; None when the entry has no ``?`` at all.
    """
    for start in reversed([0, *(index + 1 for index, char in enumerate(rest) if char == "@")]):
        shape = _SMTP_SHAPE.fullmatch(rest, start)
        if shape is not None:
            return shape
    return None


def _smtp_values(query: str) -> dict[str, list[str]]:
    # parse_qsl turns "+" into a space, which would break "ops+patch@example.com".
    values: dict[str, list[str]] = {}
    for key, value in parse_qsl(query.replace("+", "%2B"), keep_blank_values=True):
        values.setdefault(key, []).append(value)
    return values


def _recipients(values: dict[str, list[str]]) -> list[str]:
    return [address.strip() for value in values.get("to", []) for address in value.split(",") if address.strip()]


def _host_and_port(entry: str, hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):  # an IPv6 address: smtp://[::1]:2525/?...
        host, bracket, after = hostport[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise _invalid(entry, f"not a valid smtp:// URL (unbalanced [ ] around the host): {_SMTP_FORM}")
        port_text = after[1:]
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        raise _invalid(entry, f"smtp needs a host: {_SMTP_FORM}")
    if not port_text:
        return host.lower(), None
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 0 < int(port_text) < 65536:
        raise _invalid(entry, "not a valid smtp:// URL (the port must be a number from 1 to 65535)")
    return host.lower(), int(port_text)


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
    """The entry as an error message may show it: no password, no webhook path or query.

    ``slack+https://hooks.slack.com/services/T0/B0/x`` → ``slack+https://hooks.slack.com/…``;
    ``smtp://u:secret@h/?…`` → ``smtp://u:***@h/?…`` (see ``_mask_smtp``). An unknown entry may be
    a webhook URL without its ``slack+`` or a mistyped ``smtps://user:password@…``: only its scheme
    or first word is shown.
    """
    for kind in ("webhook+", "slack+"):
        if entry.startswith(kind):
            return kind + redact_url(entry.removeprefix(kind))
    if entry.startswith("smtp://"):
        return "smtp://" + _mask_smtp(entry.removeprefix("smtp://"))
    if entry == "console" or entry.startswith("sns:"):
        return entry  # a topic ARN is not a secret
    scheme, separator, _ = entry.partition("://")
    head = scheme + separator if separator else re.split(r"[/:@?#]", entry, maxsplit=1)[0]
    return head if head == entry else head + "…"


def _mask_smtp(rest: str) -> str:
    """``rest`` (an smtp entry after ``smtp://``) with everything that may be the password masked.

    Normally that is the password alone: ``user:***@host...``. But when the query does not name a
    sender and recipients and the entry ends in ``@host``, or there is no ``?`` at all, the entry
    may be one whose password holds ``@…?…`` and whose query was forgotten; then everything up to
    the last ``@`` is masked, the user name included: ``***@host``.
    """
    shape = _find_host(rest)
    last_at = rest.rfind("@") + 1  # 0 when there is no "@"
    if shape is None or (
        not _names_sender_and_recipients(shape["query"])
        and last_at > shape.start()
        and _HOST_TAIL.fullmatch(rest, last_at)
    ):
        cut, keep_user = last_at, False
    else:
        cut, keep_user = shape.start(), True
    if not cut and shape is None and not _HOST_ALONE.fullmatch(rest):
        return "***"  # no "@" and no query, yet a ":" that is not a port's: "user:password"
    credentials = rest[: cut - 1] if cut else ""
    if ":" not in credentials:
        return rest  # a user name alone is not a secret
    username, _, password = credentials.partition(":")
    shown = f"{username}:***@{rest[cut:]}" if keep_user else f"***@{rest[cut:]}"
    if redact(shown, [password, unquote(password)]) != shown:
        return "***"  # the password also appears elsewhere, say as the user name
    return shown


def _names_sender_and_recipients(query: str) -> bool:
    """Whether an smtp query is complete: known keys only, one sender, recipients, all well-formed."""
    values = _smtp_values(query)
    addresses = [*values.get("from", []), *_recipients(values)]
    return (
        set(values) <= _SMTP_PARAMETERS
        and len(values.get("from", [])) == 1
        and bool(_recipients(values))
        and all(is_email_address(address) for address in addresses)
    )


def masked_spec(spec: str) -> str:
    """The whole setting as a person may see it (``settings show``, the API): passwords and webhook paths masked."""
    return ",".join(_mask_secrets(entry) for entry in split_entries(spec))

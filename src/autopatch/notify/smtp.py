"""SMTP notifier: one multipart/alternative e-mail (plain text + HTML) per run, via ``smtplib``.

The original system could only mail through an SNS e-mail subscription (plain text, AWS only);
this adapter talks to any relay: a corporate Exchange, Postfix on localhost, or a test server.

The password never reaches a message: ``name`` and ``repr`` show host and port only, and a server's
reply is redacted of the password in the forms the client sent it (plain, and base64 inside
``AUTH PLAIN``/``AUTH LOGIN``) before it is repeated, because a relay may quote what it rejected.
"""

from __future__ import annotations

import base64
import re
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from urllib.parse import quote

from autopatch.domain.summary import RunSummary
from autopatch.errors import ValidationError
from autopatch.notify.base import NotificationError, clip, echo
from autopatch.notify.render import render_html, render_text, subject

# Deliberately simple: one "@", no whitespace, no header-breaking characters. The relay is the
# real judge of deliverability; this only catches typos and injection (CR/LF, commas, brackets).
_ADDRESS = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+$")


def is_email_address(text: str) -> bool:
    """True for one plausible address (``ops+patch@example.com``); see ``_ADDRESS`` for how loose."""
    return _ADDRESS.fullmatch(text) is not None


def _check_address(field: str, address: str) -> str:
    if not is_email_address(address):
        raise ValidationError(field, clip(address), "must be a single e-mail address like ops@example.com")
    return address


def build_email(summary: RunSummary, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """The message to send: text first, HTML second, so clients that can show HTML prefer it."""
    message = EmailMessage()
    message["Subject"] = subject(summary)
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message.set_content(render_text(summary))
    message.add_alternative(render_html(summary), subtype="html")
    return message


class SmtpNotifier:
    """Sends the summary by e-mail through an SMTP relay, optionally upgrading with STARTTLS."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: list[str],
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10,
    ) -> None:
        if not host or any(char.isspace() for char in host):
            raise ValidationError("host", clip(host), "must be a host name or IP address")
        if not 0 < port < 65536:
            raise ValidationError("port", port, "must be between 1 and 65535")
        if not recipients:
            raise ValidationError("recipients", recipients, "must name at least one address")
        if timeout <= 0:
            raise ValidationError("timeout", timeout, "must be a positive number of seconds")
        if password is not None and username is None:
            raise ValidationError("username", username, "is required when a password is given")
        for field, value in (("username", username), ("password", password)):
            if value is not None and not value.isascii():
                # smtplib encodes AUTH data as ASCII; failing at send time would raise a
                # UnicodeEncodeError that quotes the credentials, outside NotificationError.
                shown = clip(value) if field == "username" else "***"
                raise ValidationError(field, shown, "must be ASCII: SMTP AUTH in Python's smtplib sends ASCII only")
        self.host = host
        self.port = port
        self.sender = _check_address("sender", sender)
        self.recipients = [_check_address("recipients", address) for address in recipients]
        self.username = username
        self._password = password
        self.starttls = starttls
        self.timeout = timeout

    @property
    def name(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return f"smtp://{host}:{self.port}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def send(self, summary: RunSummary) -> None:
        message = build_email(summary, self.sender, self.recipients)
        failure = f"{self.name}: cannot send the summary e-mail"
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as client:
                if self.starttls:
                    # Certificate and host name are verified: credentials must not go to an impostor.
                    client.starttls(context=ssl.create_default_context())
                if self.username is not None:
                    client.login(self.username, self._password or "")
                refused = client.send_message(message, from_addr=self.sender, to_addrs=self.recipients)
        except smtplib.SMTPException as exc:
            # The reply is the relay's text and may quote our AUTH data; the exception keeps it
            # unredacted, so it is not chained (a traceback would print it).
            raise NotificationError(f"{failure}: {self._describe(exc)}") from None
        except OSError as exc:  # refused, unreachable, timed out, TLS: the local system's words
            raise NotificationError(f"{failure}: {self._describe(exc)}") from exc
        if refused:
            # send_message raises only when EVERY recipient is refused; a partial refusal is still
            # a failed delivery for those people, so it must show up in the run record.
            raise NotificationError(f"{self.name}: recipients refused: {echo(', '.join(sorted(refused)))}")

    def _describe(self, error: Exception) -> str:
        """``Type: text`` for an smtplib or socket error, the text redacted and cut by ``echo``."""
        if isinstance(error, smtplib.SMTPResponseException):
            reply = error.smtp_error
            text = f"{error.smtp_code} {reply.decode(errors='replace') if isinstance(reply, bytes) else reply}"
        elif isinstance(error, smtplib.SMTPRecipientsRefused):
            text = "every recipient refused: " + ", ".join(sorted(error.recipients))
        else:
            text = str(error)
        return f"{type(error).__name__}: {echo(text, self._password_forms())}"

    def _password_forms(self) -> list[str]:
        """The password as a reply could quote it: typed, percent-encoded, escaped, and base64 as sent."""
        if not self._password:
            return []
        password = self._password
        plain = f"\0{self.username or ''}\0{password}"  # the AUTH PLAIN initial response
        return [
            password,
            quote(password, safe=""),
            str(password.encode())[2:-1],  # inside the repr of a bytes reply
            base64.b64encode(password.encode()).decode(),  # AUTH LOGIN
            base64.b64encode(plain.encode()).decode(),
        ]

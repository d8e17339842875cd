"""SMTP notifier: one multipart/alternative e-mail (plain text + HTML) per run, via ``smtplib``.

The original system could only mail through an SNS e-mail subscription (plain text, AWS only);
this adapter talks to any relay: a corporate Exchange, Postfix on localhost, or a test server.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage

from autopatch.domain.summary import RunSummary
from autopatch.errors import ValidationError
from autopatch.notify.base import NotificationError
from autopatch.notify.render import render_html, render_text, subject

# Deliberately simple: one "@", no whitespace, no header-breaking characters. The relay is the
# real judge of deliverability; this only catches typos and injection (CR/LF, commas, brackets).
_ADDRESS = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+$")


def _check_address(field: str, address: str) -> str:
    if not _ADDRESS.fullmatch(address):
        raise ValidationError(field, address, "must be a single e-mail address like ops@example.com")
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
            raise ValidationError("host", host, "must be a host name or IP address")
        if not 0 < port < 65536:
            raise ValidationError("port", port, "must be between 1 and 65535")
        if not recipients:
            raise ValidationError("recipients", recipients, "must name at least one address")
        if timeout <= 0:
            raise ValidationError("timeout", timeout, "must be a positive number of seconds")
        if password is not None and username is None:
            raise ValidationError("username", username, "is required when a password is given")
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
        return f"smtp://{self.host}:{self.port}"

    def send(self, summary: RunSummary) -> None:
        message = build_email(summary, self.sender, self.recipients)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as client:
                if self.starttls:
                    # Certificate and host name are verified: credentials must not go to an impostor.
                    client.starttls(context=ssl.create_default_context())
                if self.username is not None:
                    client.login(self.username, self._password or "")
                refused = client.send_message(message, from_addr=self.sender, to_addrs=self.recipients)
        except (smtplib.SMTPException, OSError) as exc:
            raise NotificationError(f"{self.name}: cannot send the summary e-mail: {exc}") from exc
        if refused:
            # send_message raises only when EVERY recipient is refused; a partial refusal is still
            # a failed delivery for those people, so it must show up in the run record.
            raise NotificationError(f"{self.name}: recipients refused: {', '.join(sorted(refused))}")

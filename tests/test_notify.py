"""Notifier port: rendering, and each adapter against a real local server (SMTP, HTTP) or moto (SNS)."""

from __future__ import annotations

import base64
import email
import email.policy
import io
import json
import socket
import socketserver
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import boto3
import pytest
from aiosmtpd import smtp as aiosmtp
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from botocore.exceptions import ClientError
from moto import mock_aws

from autopatch.domain.summary import KbOutcome, RunSummary, ServerSummary
from autopatch.errors import ExecutionError, ValidationError
from autopatch.notify import (
    ConsoleNotifier,
    DeliveryResult,
    NotificationError,
    SmtpNotifier,
    SnsNotifier,
    WebhookNotifier,
    notifiers_from_settings,
    notify_all,
    render_html,
    render_text,
    subject,
    summary_to_dict,
)
from autopatch.notify.sns import SUBJECT_LIMIT

HOSTILE_NAME = "<script>alert('x')</script>"
TOPIC_NAME = "autopatch"
REGION = "eu-west-1"
# A password as users paste them: every character that splits a URL's authority. None of its
# four-character windows occurs in AutoPatch's own messages, so finding one in a text is a leak.
RAW_PASSWORD = "Zq/9?Kx#7@Wv:3"
WEBHOOK_SECRETS = ("/hooks/", "T000", "secret-token", "qs-secret-123")


def make_summary(run_id: str = "r-20240213-1") -> RunSummary:
    return RunSummary(
        run_id=run_id,
        kind="patch",
        status="Succeeded",
        started_at=datetime(2024, 2, 13, 22, 0, 0, tzinfo=UTC),
        finished_at=datetime(2024, 2, 13, 23, 2, 3, tzinfo=UTC),
        servers=(
            ServerSummary(
                instance_id="i-0123456789abcdef0",
                name="WIN-WEB-01",
                product="Windows Server 2022",
                already_installed=("KB5034439",),
                installed_now=("KB5034770", "KB5034862"),
                failed=(KbOutcome("KB5035000", "HRESULT 0x80070643 & rollback"),),
                skipped=(KbOutcome("KB5034129", "Superseded by KB5034770"),),
                reboots=2,
                duration_seconds=1834.0,
                build_before="20348.2227",
                build_after="20348.2322",
            ),
            ServerSummary(
                instance_id="i-0fedcba9876543210",
                name=HOSTILE_NAME,
                product=None,
                installed_now=("KB5034768",),
                reboots=1,
                duration_seconds=42.0,
            ),
        ),
    )


def leaks(secret: str, text: str) -> bool:
    """Whether ``text`` holds the secret, or any four consecutive characters of it, typed or decoded."""
    return any(form[i : i + 4] in text for form in {secret, unquote(secret)} for i in range(max(len(form) - 3, 1)))


def everything_printed_for(error: BaseException) -> str:
    """What a traceback or ``logger.exception`` prints of the error: its line and every chained one's."""
    printed: list[str] = []
    current: BaseException | None = error
    while current is not None:
        printed.extend(traceback.format_exception_only(current))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "".join(printed)


def closed_port() -> int:
    """A port nothing listens on: bound by the OS, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --- rendering -----------------------------------------------------------------------------------


def test_subject_states_run_status_installed_kbs_servers_and_failures() -> None:
    assert subject(make_summary()) == "AutoPatch run r-20240213-1 Succeeded: 3 KBs installed on 2 servers, 1 failed"


def test_subject_collapses_newlines_so_a_run_id_cannot_inject_a_header() -> None:
    assert "\n" not in subject(make_summary(run_id="r-1\nBcc: evil@example.com"))


def test_render_text_lists_every_servers_kbs_reasons_reboots_and_builds() -> None:
    text = render_text(make_summary())
    assert text.splitlines()[0] == (
        "Run r-20240213-1 (patch) Succeeded: 3 KBs installed on 2 servers, 1 failed; duration 1h 02m 03s"
    )
    for expected in (
        "WIN-WEB-01 (i-0123456789abcdef0) — Windows Server 2022",
        "Already installed: KB5034439",
        "Installed now: KB5034770, KB5034862",
        "Failed: KB5035000: HRESULT 0x80070643 & rollback",
        "Skipped: KB5034129: Superseded by KB5034770",
        "Reboots: 2",
        "Duration: 30m 34s",
        "Build: 20348.2227 → 20348.2322",
        "Installed now: KB5034768",
        "Build: unknown → unknown",
    ):
        assert expected in text


def test_render_html_tabulates_each_servers_kbs_and_reasons() -> None:
    page = render_html(make_summary())
    assert page.count("<table") == 2
    for expected in ("KB5034439", "KB5034770", "KB5034862", "KB5034768", "Superseded by KB5034770", "20348.2322"):
        assert expected in page
    assert "KB5035000: HRESULT 0x80070643 &amp; rollback" in page


def test_render_html_escapes_a_hostile_server_name() -> None:
    page = render_html(make_summary())
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page


def test_summary_to_dict_is_json_ready_with_iso_datetimes_and_totals() -> None:
    data = json.loads(json.dumps(summary_to_dict(make_summary())))
    assert data["run_id"] == "r-20240213-1"
    assert data["started_at"] == "2024-02-13T22:00:00+00:00"
    assert data["duration_seconds"] == 3723.0
    assert data["totals"] == {
        "servers": 2,
        "installed": 3,
        "failed_servers": 1,
        "failed_kbs": 1,
        "skipped_kbs": 1,
        "reboots": 3,
    }
    first = data["servers"][0]
    assert first["failed"] == [{"kb": "KB5035000", "reason": "HRESULT 0x80070643 & rollback"}]
    assert first["installed_now"] == ["KB5034770", "KB5034862"]
    assert data["servers"][1]["name"] == HOSTILE_NAME


def test_console_notifier_prints_the_text_report() -> None:
    stream = io.StringIO()
    ConsoleNotifier(stream).send(make_summary())
    assert stream.getvalue() == render_text(make_summary())


# --- SMTP against a real aiosmtpd server ---------------------------------------------------------


@dataclass
class MailSink:
    """aiosmtpd handler that keeps every envelope it accepts."""

    envelopes: list[Envelope] = field(default_factory=list)
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)
    password: bytes = b"s3cret"
    quote_rejected_credentials: bool = False  # like a chatty relay: "535 rejected user/password"

    async def handle_DATA(self, server: aiosmtp.SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.envelopes.append(envelope)
        return "250 OK"

    def authenticate(
        self, server: aiosmtp.SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        if auth_data.password == self.password:
            return AuthResult(success=True)
        if not self.quote_rejected_credentials:
            return AuthResult(success=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        plain = base64.b64encode(b"\0" + auth_data.login + b"\0" + auth_data.password).decode()
        return AuthResult(success=False, handled=False, message=f"535 5.7.8 {mechanism} {plain} {login}/{password}")


@dataclass
class SmtpServerFixture:
    sink: MailSink
    port: int


@pytest.fixture
def smtp_server() -> Iterator[SmtpServerFixture]:
    sink = MailSink()
    # aiosmtpd's Controller connects to its own port to check readiness, so port 0 cannot be used.
    port = closed_port()
    controller = Controller(
        sink, hostname="127.0.0.1", port=port, authenticator=sink.authenticate, auth_require_tls=False
    )
    controller.start()
    yield SmtpServerFixture(sink, port)
    controller.stop()


def parse_mail(envelope: Envelope) -> EmailMessage:
    assert isinstance(envelope.content, bytes)
    message = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_smtp_notifier_delivers_one_mail_with_subject_text_and_html_to_all_recipients(
    smtp_server: SmtpServerFixture,
) -> None:
    notifier = SmtpNotifier(
        "127.0.0.1", smtp_server.port, "autopatch@example.com", ["ops@example.com", "sec@example.com"]
    )
    notifier.send(make_summary())

    assert len(smtp_server.sink.envelopes) == 1
    envelope = smtp_server.sink.envelopes[0]
    assert envelope.mail_from == "autopatch@example.com"
    assert envelope.rcpt_tos == ["ops@example.com", "sec@example.com"]
    message = parse_mail(envelope)
    # An 86-character header is folded as "Subject:\r\n AutoPatch…"; mail clients drop the fold's
    # leading space, Python's parser keeps it.
    assert message["Subject"].strip() == subject(make_summary())
    assert message.get_content_type() == "multipart/alternative"
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    assert text_part is not None and html_part is not None
    assert "Failed: KB5035000: HRESULT 0x80070643 & rollback" in text_part.get_content()
    assert "&lt;script&gt;" in html_part.get_content()


def test_smtp_notifier_logs_in_with_the_configured_credentials(smtp_server: SmtpServerFixture) -> None:
    SmtpNotifier(
        "127.0.0.1", smtp_server.port, "a@example.com", ["b@example.com"], username="patcher", password="s3cret"
    ).send(make_summary())
    assert smtp_server.sink.logins == [(b"patcher", b"s3cret")]
    assert len(smtp_server.sink.envelopes) == 1


def test_smtp_notifier_raises_notification_error_on_rejected_credentials(smtp_server: SmtpServerFixture) -> None:
    notifier = SmtpNotifier(
        "127.0.0.1", smtp_server.port, "a@example.com", ["b@example.com"], username="patcher", password="wrong"
    )
    with pytest.raises(NotificationError, match="cannot send") as caught:
        notifier.send(make_summary())
    assert "wrong" not in str(caught.value)
    assert smtp_server.sink.envelopes == []


def test_smtp_notifier_refuses_to_continue_when_starttls_is_not_offered(smtp_server: SmtpServerFixture) -> None:
    notifier = SmtpNotifier("127.0.0.1", smtp_server.port, "a@example.com", ["b@example.com"], starttls=True)
    with pytest.raises(NotificationError, match="STARTTLS"):
        notifier.send(make_summary())
    assert smtp_server.sink.envelopes == []


def test_smtp_notifier_raises_notification_error_when_no_server_listens() -> None:
    notifier = SmtpNotifier("127.0.0.1", closed_port(), "a@example.com", ["b@example.com"], timeout=2)
    with pytest.raises(NotificationError) as caught:
        notifier.send(make_summary())
    assert isinstance(caught.value, ExecutionError)
    assert isinstance(caught.value.__cause__, OSError)


@pytest.mark.parametrize("address", ["not-an-address", "a@b.com\r\nBcc: x@y.com", "a@b.com, c@d.com"])
def test_smtp_notifier_rejects_a_malformed_recipient(address: str) -> None:
    with pytest.raises(ValidationError, match="recipients"):
        SmtpNotifier("127.0.0.1", 25, "a@example.com", [address])


# --- webhook against a real local HTTP server -----------------------------------------------------


@dataclass
class HookServer:
    """Records each POST (path, JSON body) and answers with ``status``."""

    status: int = 204
    posts: list[tuple[str, Any]] = field(default_factory=list)
    url: str = ""
    echo_url: bool = False  # answer errors with the request URL, as many servers do


@pytest.fixture
def hook_server() -> Iterator[HookServer]:
    state = HookServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            state.posts.append((self.path, json.loads(self.rfile.read(length))))
            self.send_response(state.status)
            body = b"boom" if state.status >= 400 else b""
            if state.status >= 400 and state.echo_url:
                target = urlsplit(self.path)
                url = f"http://{self.headers['Host']}{self.path}"
                echo = {"error": f"no route for POST {url}", "path": target.path, "query": unquote(target.query)}
                body = json.dumps(echo).replace("/", "\\/").encode()  # PHP-style escaped slashes
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    state.url = f"http://{host!s}:{port}/hooks/T000/secret-token"
    yield state
    server.shutdown()
    server.server_close()


def test_webhook_notifier_posts_the_summary_as_json(hook_server: HookServer) -> None:
    WebhookNotifier(hook_server.url).send(make_summary())
    assert len(hook_server.posts) == 1
    path, body = hook_server.posts[0]
    assert path == "/hooks/T000/secret-token"
    assert body["run_id"] == "r-20240213-1"
    assert body["status"] == "Succeeded"
    assert body["finished_at"] == "2024-02-13T23:02:03+00:00"
    assert [server["instance_id"] for server in body["servers"]] == ["i-0123456789abcdef0", "i-0fedcba9876543210"]
    assert body["servers"][0]["skipped"] == [{"kb": "KB5034129", "reason": "Superseded by KB5034770"}]


def test_webhook_notifier_in_slack_format_posts_subject_and_text(hook_server: HookServer) -> None:
    WebhookNotifier(hook_server.url, format="slack").send(make_summary())
    _, body = hook_server.posts[0]
    assert set(body) == {"text"}
    assert body["text"] == subject(make_summary()) + "\n" + render_text(make_summary())


def test_webhook_notifier_raises_notification_error_naming_a_500_without_the_token(hook_server: HookServer) -> None:
    hook_server.status = 500
    with pytest.raises(NotificationError, match="HTTP 500: boom") as caught:
        WebhookNotifier(hook_server.url).send(make_summary())
    assert "secret-token" not in str(caught.value)


def test_webhook_notifier_rejects_a_non_http_url() -> None:
    with pytest.raises(ValidationError, match="url"):
        WebhookNotifier("ftp://hooks.example/x")


# --- SNS on moto --------------------------------------------------------------------------------


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",  # not the topic's region: the notifier must use the ARN's
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


def subscribed_queue(topic_arn: str) -> str:
    sqs = boto3.client("sqs", region_name=REGION)
    queue_url: str = sqs.create_queue(QueueName="notify-test")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    boto3.client("sns", region_name=REGION).subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return queue_url


def received_notifications(queue_url: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name=REGION)
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


def test_sns_notifier_publishes_subject_and_text_report_to_the_topic(aws: None) -> None:
    topic_arn = boto3.client("sns", region_name=REGION).create_topic(Name=TOPIC_NAME)["TopicArn"]
    queue_url = subscribed_queue(topic_arn)

    SnsNotifier(topic_arn).send(make_summary())  # client created lazily, in the ARN's region

    notifications = received_notifications(queue_url)
    assert len(notifications) == 1
    assert notifications[0]["Subject"] == subject(make_summary())
    assert notifications[0]["Message"] == render_text(make_summary())


def test_sns_notifier_cuts_a_long_subject_to_the_sns_limit(aws: None) -> None:
    client = boto3.client("sns", region_name=REGION)
    topic_arn = client.create_topic(Name=TOPIC_NAME)["TopicArn"]
    queue_url = subscribed_queue(topic_arn)

    SnsNotifier(topic_arn, sns_client=client).send(make_summary(run_id="r-" + "x" * 120))

    sent_subject = received_notifications(queue_url)[0]["Subject"]
    assert len(sent_subject) == SUBJECT_LIMIT
    assert sent_subject.startswith("AutoPatch run r-xxx") and sent_subject.endswith("...")


def test_sns_notifier_turns_a_client_error_into_notification_error(aws: None) -> None:
    missing_topic = f"arn:aws:sns:{REGION}:123456789012:does-not-exist"
    with pytest.raises(NotificationError, match="publish failed") as caught:
        SnsNotifier(missing_topic).send(make_summary())
    assert type(caught.value.__cause__).__name__ == "NotFoundException"


def test_sns_notifier_rejects_a_malformed_topic_arn() -> None:
    with pytest.raises(ValidationError, match="topic_arn"):
        SnsNotifier("arn:aws:sqs:eu-west-1:123456789012:queue")


# --- notify_all ---------------------------------------------------------------------------------


@dataclass
class RecordingNotifier:
    name: str = "recording"
    received: list[RunSummary] = field(default_factory=list)

    def send(self, summary: RunSummary) -> None:
        self.received.append(summary)


class BrokenNotifier:
    name = "broken"

    def send(self, summary: RunSummary) -> None:
        raise RuntimeError("a bug, not a delivery failure")


def test_notify_all_delivers_to_the_others_when_one_notifier_fails() -> None:
    stream = io.StringIO()
    recorder = RecordingNotifier()
    dead_webhook = WebhookNotifier(f"http://127.0.0.1:{closed_port()}/hook", timeout=2)
    summary = make_summary()

    results = notify_all([ConsoleNotifier(stream), dead_webhook, BrokenNotifier(), recorder], summary)

    assert [(result.notifier, result.ok) for result in results] == [
        ("console", True),
        (dead_webhook.name, False),
        ("broken", False),
        ("recording", True),
    ]
    assert results[1].error is not None and "request failed: ConnectError" in results[1].error
    assert results[2] == DeliveryResult(notifier="broken", ok=False, error="a bug, not a delivery failure")
    assert recorder.received == [summary]
    assert "WIN-WEB-01" in stream.getvalue()


def test_notify_all_with_no_notifiers_reports_nothing() -> None:
    assert notify_all([], make_summary()) == []


# --- factory ------------------------------------------------------------------------------------


FULL_SPEC = (
    "console, smtp://patch%40corp:p%40ss@mail.example:2525/?from=autopatch@example.com"
    "&to=ops+patch@example.com,sec@example.com&starttls=1,"
    "webhook+https://hooks.example/x?a=1,2,"
    "slack+https://hooks.slack.com/services/T0/B0/xyz,"
    "sns:arn:aws:sns:eu-west-1:123456789012:autopatch"
)


def test_factory_builds_every_notifier_kind_from_one_spec() -> None:
    console, smtp, webhook, slack, sns = notifiers_from_settings(FULL_SPEC)
    assert isinstance(console, ConsoleNotifier)
    assert isinstance(smtp, SmtpNotifier)
    assert (smtp.host, smtp.port, smtp.sender, smtp.starttls) == ("mail.example", 2525, "autopatch@example.com", True)
    assert smtp.recipients == ["ops+patch@example.com", "sec@example.com"]
    assert smtp.username == "patch@corp"
    assert isinstance(webhook, WebhookNotifier)
    assert (webhook.url, webhook.format) == ("https://hooks.example/x?a=1,2", "json")
    assert isinstance(slack, WebhookNotifier)
    assert (slack.url, slack.format) == ("https://hooks.slack.com/services/T0/B0/xyz", "slack")
    assert isinstance(sns, SnsNotifier)
    assert (sns.topic_arn, sns.region) == ("arn:aws:sns:eu-west-1:123456789012:autopatch", "eu-west-1")


def test_factory_keeps_a_recipient_that_starts_like_a_notifier_kind_in_the_smtp_entry() -> None:
    (smtp,) = notifiers_from_settings("smtp://mail.example/?from=a@example.com&to=b@example.com,console@example.com")
    assert isinstance(smtp, SmtpNotifier)
    assert smtp.recipients == ["b@example.com", "console@example.com"]


def test_factory_treats_a_blank_spec_as_no_notifiers() -> None:
    assert notifiers_from_settings("  ") == []


def test_factory_defaults_the_smtp_port_to_587_with_starttls_and_25_without() -> None:
    with_tls, plain = notifiers_from_settings(
        "smtp://mail.example/?from=a@example.com&to=b@example.com&starttls=yes,"
        "smtp://mail.example/?from=a@example.com&to=b@example.com"
    )
    assert isinstance(with_tls, SmtpNotifier) and isinstance(plain, SmtpNotifier)
    assert (with_tls.port, plain.port) == (587, 25)


@pytest.mark.parametrize(
    ("spec", "rule"),
    [
        ("pigeon", "unknown notifier"),
        ("console,pigeon", "unknown notifier"),
        ("smtp://mail.example/?to=b@example.com", "exactly one from"),
        ("smtp://mail.example/?from=a@example.com", "needs to="),
        ("smtp://mail.example/?from=a@example.com&to=b@example.com&startls=1", "unknown smtp parameter"),
        ("smtp://mail.example/?from=a@example.com&to=b@example.com&starttls=maybe", "starttls must be"),
        ("smtp://mail.example/?from=a@example.com&to=b@example.com&timeout=0", "timeout must be"),
        ("smtp://mail.example:99999/?from=a@example.com&to=b@example.com", "not a valid smtp"),
        ("smtp://mail.example/?from=a@example.com&to=nobody", "recipients must be a single e-mail"),
        ("webhook+ftp://hooks.example/x", "url must be an http"),
        ("sns:arn:aws:sns:eu-west-1:123:autopatch", "topic_arn must be a standard SNS topic ARN"),
        ("sns:arn:aws:sns:eu-west-1:123456789012:orders.fifo", "topic_arn"),
    ],
)
def test_factory_rejects_an_invalid_entry_naming_the_setting_and_rule(spec: str, rule: str) -> None:
    with pytest.raises(ValidationError) as caught:
        notifiers_from_settings(spec)
    assert caught.value.field == "AUTOPATCH_NOTIFY"
    assert rule in caught.value.rule


def test_factory_errors_never_show_an_smtp_password_or_a_webhook_token() -> None:
    with pytest.raises(ValidationError) as smtp_error:
        notifiers_from_settings("smtp://user:hunter2@mail.example/?from=a@example.com&to=bad")
    assert "hunter2" not in str(smtp_error.value)
    assert "user:***@mail.example" in str(smtp_error.value)
    with pytest.raises(ValidationError) as webhook_error:
        notifiers_from_settings("slack+ftp://hooks.slack.com/services/T0/B0/xyz-token")
    assert "xyz-token" not in str(webhook_error.value)


# --- secrets: SMTP passwords and webhook tokens never reach a message, name, repr or traceback --------


SMTP_QUERY = "from=autopatch@example.com&to=ops@example.com,sec@example.com"


@pytest.mark.parametrize(
    ("typed_user", "typed_password", "user", "password"),
    [
        ("patcher", "pa/ss", "patcher", "pa/ss"),
        ("patcher", "pa?ss", "patcher", "pa?ss"),
        ("patcher", "pa#ss", "patcher", "pa#ss"),
        ("patcher", "p@ss", "patcher", "p@ss"),
        ("patcher", "p:ss", "patcher", "p:ss"),
        ("patcher", RAW_PASSWORD, "patcher", RAW_PASSWORD),
        ("patcher", "x@h?from=a@b.example&to=c@d.example", "patcher", "x@h?from=a@b.example&to=c@d.example"),
        ("patch@corp", "pa/ss#1", "patch@corp", "pa/ss#1"),
        ("patch%40corp", "p%40ss#1", "patch@corp", "p@ss#1"),
        ("patch%40corp", quote(RAW_PASSWORD, safe=""), "patch@corp", RAW_PASSWORD),
    ],
)
def test_factory_reads_a_raw_or_percent_encoded_smtp_password_and_logs_in_with_it(
    smtp_server: SmtpServerFixture, typed_user: str, typed_password: str, user: str, password: str
) -> None:
    entry = f"smtp://{typed_user}:{typed_password}@127.0.0.1:{smtp_server.port}/?{SMTP_QUERY}"
    (notifier,) = notifiers_from_settings(entry)
    assert isinstance(notifier, SmtpNotifier)
    assert (notifier.host, notifier.port, notifier.username) == ("127.0.0.1", smtp_server.port, user)
    assert (notifier.sender, notifier.recipients) == ("autopatch@example.com", ["ops@example.com", "sec@example.com"])

    smtp_server.sink.password = password.encode()
    notifier.send(make_summary())

    assert smtp_server.sink.logins == [(user.encode(), password.encode())]
    assert len(smtp_server.sink.envelopes) == 1
    for shown in (notifier.name, repr(notifier), str(notifier)):
        assert not leaks(password, shown)


def test_factory_finds_the_host_after_a_raw_password_with_ipv6_and_default_ports() -> None:
    with_tls, plain = notifiers_from_settings(
        f"smtp://patcher:{RAW_PASSWORD}@[::1]?{SMTP_QUERY}&starttls=1,smtp://patcher:{RAW_PASSWORD}@Mail.Example/?{SMTP_QUERY}"
    )
    assert isinstance(with_tls, SmtpNotifier) and isinstance(plain, SmtpNotifier)
    assert (with_tls.host, with_tls.port, with_tls.name) == ("::1", 587, "smtp://[::1]:587")
    assert (plain.host, plain.port, plain.recipients) == ("mail.example", 25, ["ops@example.com", "sec@example.com"])


@pytest.mark.parametrize("password", [RAW_PASSWORD, "Jf@k2?Qm/Lz#8:", quote(RAW_PASSWORD, safe="")])
@pytest.mark.parametrize(
    ("defect", "rule"),
    [
        ("@mail.example:99999/?from=a@example.com&to=b@example.com", "not a valid smtp"),
        ("@mail.example:x25/?from=a@example.com&to=b@example.com", "not a valid smtp"),
        ("@mail.example/?from=a@example.com&to=b@example.com&startls=1", "unknown smtp parameter"),
        ("@mail.example/?from=a@example.com", "needs to="),
        ("@mail.example/?to=b@example.com", "exactly one from"),
        ("@mail.example/?from=a@example.com&to=nobody", "recipients must be"),
        ("@mail.example/?from=a@example.com&to=b@example.com&starttls=maybe", "starttls must be"),
    ],
)
def test_factory_error_for_an_invalid_smtp_entry_never_shows_its_password(
    password: str, defect: str, rule: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        notifiers_from_settings(f"smtp://patcher:{password}{defect}")
    assert not leaks(password, everything_printed_for(caught.value))
    assert caught.value.field == "AUTOPATCH_NOTIFY"
    assert rule in caught.value.rule
    assert isinstance(caught.value.value, str) and len(caught.value.value) <= 80


@pytest.mark.parametrize(
    "entry",
    [
        f"smtp://patcher:{RAW_PASSWORD}@mail.example",  # no query at all
        f"smtp://patcher:{RAW_PASSWORD}@mail.example:25/",
        "smtp://patcher:Ab@c?d9Kx@mail.example",  # the password itself looks like "@host?query"
    ],
)
def test_factory_error_for_an_unparsable_smtp_entry_masks_the_whole_credential_part(entry: str) -> None:
    with pytest.raises(ValidationError) as caught:
        notifiers_from_settings(entry)
    password = entry.removeprefix("smtp://patcher:").rpartition("@")[0]
    assert not leaks(password, everything_printed_for(caught.value))
    assert caught.value.field == "AUTOPATCH_NOTIFY"
    assert "smtp://[user[:password]@]host[:port]/?from=" in caught.value.rule
    assert isinstance(caught.value.value, str) and caught.value.value.startswith("smtp://***@mail.example")


def test_factory_error_for_an_unknown_entry_shows_only_its_scheme() -> None:
    # A Slack URL pasted without "slack+", or "smtps://": the path is a token, the userinfo a password.
    for entry, shown in [
        ("https://hooks.slack.com/services/T0AAAA/B0BBBB/xoxb-secret-token", "https://…"),
        (f"smtps://patcher:{RAW_PASSWORD}@mail.example/?{SMTP_QUERY}", "smtps://…"),
    ]:
        with pytest.raises(ValidationError, match="unknown notifier") as caught:
            notifiers_from_settings(entry)
        assert caught.value.value == shown


def test_smtp_login_failure_never_repeats_the_password_even_when_the_relay_quotes_it(
    smtp_server: SmtpServerFixture,
) -> None:
    smtp_server.sink.quote_rejected_credentials = True
    notifier = SmtpNotifier(
        "127.0.0.1", smtp_server.port, "a@example.com", ["b@example.com"], username="patcher", password=RAW_PASSWORD
    )
    with pytest.raises(NotificationError, match="SMTPAuthenticationError: 535 ") as caught:
        notifier.send(make_summary())
    printed = everything_printed_for(caught.value)
    assert not leaks(RAW_PASSWORD, printed)
    assert base64.b64encode(b"\0patcher\0" + RAW_PASSWORD.encode()).decode() not in printed
    assert len(str(caught.value).split("SMTPAuthenticationError: ", 1)[1]) <= 80


def test_smtp_entry_with_a_raw_password_reports_an_unreachable_server_without_the_password() -> None:
    (notifier,) = notifiers_from_settings(
        f"smtp://patcher:{RAW_PASSWORD}@127.0.0.1:{closed_port()}/?{SMTP_QUERY}&timeout=2"
    )
    with pytest.raises(NotificationError, match="cannot send the summary e-mail: ConnectionRefusedError") as caught:
        notifier.send(make_summary())
    assert not leaks(RAW_PASSWORD, everything_printed_for(caught.value))


@pytest.mark.parametrize("status", [400, 500])
def test_webhook_error_names_the_status_but_not_the_token_that_the_server_echoes(
    hook_server: HookServer, status: int
) -> None:
    hook_server.status = status
    hook_server.echo_url = True
    with pytest.raises(NotificationError, match=f"answered HTTP {status}: ") as caught:
        WebhookNotifier(hook_server.url + "?sig=qs-secret-123&v=1").send(make_summary())
    printed = everything_printed_for(caught.value)
    for secret in WEBHOOK_SECRETS:
        assert secret not in printed
    assert len(str(caught.value).split(f"HTTP {status}: ", 1)[1]) <= 80


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP server that is no HTTP server: it sends back the bytes it receives, request line included."""

    class Echo(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(self.request.recv(65536))

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_webhook_request_failure_never_shows_the_token_even_when_the_far_end_echoes_the_request(
    echo_port: int,
) -> None:
    notifier = WebhookNotifier(f"http://127.0.0.1:{echo_port}/hooks/T000/secret-token?sig=qs-secret-123", timeout=5)
    with pytest.raises(NotificationError, match="request failed: RemoteProtocolError") as caught:
        notifier.send(make_summary())
    printed = everything_printed_for(caught.value)  # httpx's own text quotes the status line it got back
    for secret in WEBHOOK_SECRETS:
        assert secret not in printed


def test_notifier_names_and_reprs_show_the_kind_and_host_but_no_secret() -> None:
    smtp, webhook, slack = notifiers_from_settings(
        f"smtp://patcher:{RAW_PASSWORD}@mail.example:2525/?{SMTP_QUERY},"
        "webhook+https://hooks.example/hooks/T000/secret-token?sig=qs-secret-123,"
        "slack+https://hooks.slack.com/services/T0AAAA/B0BBBB/xoxb-secret-token"
    )
    sns = SnsNotifier(f"arn:aws:sns:{REGION}:123456789012:{TOPIC_NAME}", sns_client=EchoingSnsClient())
    expected = {
        smtp: "SmtpNotifier('smtp://mail.example:2525')",
        webhook: "WebhookNotifier('webhook+https://hooks.example/…')",
        slack: "WebhookNotifier('slack+https://hooks.slack.com/…')",
        sns: f"SnsNotifier('sns:arn:aws:sns:{REGION}:123456789012:{TOPIC_NAME}')",
    }
    for notifier, shown in expected.items():
        assert repr(notifier) == str(notifier) == shown
        for text in (notifier.name, repr(notifier)):
            assert not leaks(RAW_PASSWORD, text)
            assert not any(secret in text for secret in (*WEBHOOK_SECRETS, "T0AAAA", "xoxb-secret-token"))


class EchoingSnsClient:
    """Stands in for boto3: rejects the publish with an error quoting the whole message, as AWS may."""

    def publish(self, *, TopicArn: str, Message: str, Subject: str) -> dict[str, Any]:  # noqa: N803
        error = {"Error": {"Code": "InvalidParameter", "Message": f"Invalid parameter: Message={Message}"}}
        raise ClientError(error, "Publish")  # type: ignore[arg-type]


def test_sns_error_repeats_the_aws_code_and_at_most_80_characters_of_its_message() -> None:
    notifier = SnsNotifier(f"arn:aws:sns:{REGION}:123456789012:{TOPIC_NAME}", sns_client=EchoingSnsClient())
    with pytest.raises(NotificationError) as caught:
        notifier.send(make_summary())
    prefix = f"{notifier.name}: publish failed: InvalidParameter: "
    assert str(caught.value).startswith(prefix + "Invalid parameter: Message=Run r-20240213-1")
    assert len(str(caught.value)) - len(prefix) <= 80


def test_settings_repr_never_shows_the_notify_targets() -> None:
    from autopatch.settings import Settings

    settings = Settings(notify="smtp://ops:pa55%2Fword@mail.example.com/ops@example.com")
    assert settings.notify.startswith("smtp://")
    assert "pa55" not in repr(settings)
    assert "pa55" not in str(settings)

"""SNS notifier: publishes the text report to a topic, as the original ``summarize_SNS`` did.

The boto3 client is injected (moto or a stub in tests) or created on the first ``send``, never at
import, so importing AutoPatch needs neither boto3 nor AWS credentials. Publishing must happen in
the topic's own region, so when no region is given it is taken from the topic ARN.

A topic ARN is not a secret, but AWS error messages may quote the request's parameters (a 256 KiB
message among them), so an error repeats AWS's code and at most ``ECHO_LIMIT`` characters of its text.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any, Protocol

from autopatch.domain.summary import RunSummary
from autopatch.errors import ValidationError
from autopatch.notify.base import NotificationError, clip, echo
from autopatch.notify.render import render_text, subject

# Standard topics only: FIFO topics need a message group id and cannot deliver to e-mail anyway.
_TOPIC_ARN = re.compile(
    r"^arn:aws(?:-[a-z]+)*:sns:(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]+):[0-9]{12}:[A-Za-z0-9_-]{1,256}$"
)
SUBJECT_LIMIT = 100  # SNS rejects longer subjects (and any non-ASCII or control character)
MESSAGE_LIMIT = 256 * 1024  # bytes, UTF-8
_TRUNCATED = "\n… (truncated: the full report exceeds the SNS message size limit)\n"


class SnsClient(Protocol):
    """The one call this adapter makes; a boto3 SNS client satisfies it."""

    def publish(self, *, TopicArn: str, Message: str, Subject: str) -> Mapping[str, Any]: ...  # noqa: N803


def sns_subject(summary: RunSummary) -> str:
    """The subject made acceptable to SNS: printable ASCII, at most 100 characters."""
    text = "".join(char if " " <= char <= "~" else "?" for char in subject(summary))
    if len(text) <= SUBJECT_LIMIT:
        return text
    return text[: SUBJECT_LIMIT - 3].rstrip() + "..."


def sns_message(summary: RunSummary) -> str:
    """The text report, cut to the SNS size limit (a fleet of thousands can exceed 256 KiB)."""
    text = render_text(summary)
    if len(text.encode()) <= MESSAGE_LIMIT:
        return text
    budget = MESSAGE_LIMIT - len(_TRUNCATED.encode())
    cut = text.encode()[:budget].decode(errors="ignore")  # never split a multi-byte character
    return cut + _TRUNCATED


class SnsNotifier:
    """Publishes ``sns_subject`` and ``sns_message`` to one standard SNS topic."""

    def __init__(self, topic_arn: str, sns_client: SnsClient | None = None, region: str | None = None) -> None:
        match = _TOPIC_ARN.fullmatch(topic_arn)
        if match is None:
            raise ValidationError(
                "topic_arn",
                clip(topic_arn),
                "must be a standard SNS topic ARN like arn:aws:sns:eu-west-1:123456789012:name",
            )
        self.topic_arn = topic_arn
        self.region = region or match["region"]
        self._client = sns_client

    @property
    def name(self) -> str:
        return f"sns:{self.topic_arn}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def _sns(self) -> SnsClient:
        if self._client is None:
            # Imported here, not at module level: boto3 is only needed by deployments that use SNS.
            boto3 = importlib.import_module("boto3")
            self._client = boto3.client("sns", region_name=self.region)
        return self._client

    def send(self, summary: RunSummary) -> None:
        exceptions = importlib.import_module("botocore.exceptions")
        try:
            self._sns().publish(TopicArn=self.topic_arn, Subject=sns_subject(summary), Message=sns_message(summary))
        except exceptions.ClientError as exc:  # AccessDenied, NotFound, InvalidParameter...
            error = exc.response.get("Error", {})
            code = echo(str(error.get("Code") or "ClientError"))
            raise NotificationError(
                f"{self.name}: publish failed: {code}: {echo(str(error.get('Message', '')))}"
            ) from exc
        except exceptions.BotoCoreError as exc:  # no credentials, endpoint unreachable...
            raise NotificationError(f"{self.name}: publish failed: {type(exc).__name__}: {echo(str(exc))}") from exc

"""Where a command's output goes besides GetCommandInvocation, and how its full text is read back.

GetCommandInvocation returns at most 24,000 characters of stdout and ends a cut output with
``---Output truncated---``. A scan of a server with years of hotfixes and a long list of offered
updates can exceed that, and a cut JSON line must never be parsed as if it were whole: the adapter
says so in the invocation's ``error`` unless the full text can be read from a place SSM wrote it to
— an S3 bucket (``OutputS3BucketName``) or CloudWatch Logs (``CloudWatchOutputConfig``), both
opt-in because they need a bucket or log group and IAM permissions on the servers' instance role.

The functions here raise botocore's exceptions; the adapter (``fleet/ssm.py``) calls them inside its
translation, so nothing above the adapter sees botocore.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

from botocore.exceptions import ClientError  # type: ignore[import-untyped, unused-ignore]

from autopatch.errors import ExecutionError, ValidationError

TRUNCATION_MARKER = "---Output truncated---"
# The agent stores a plugin's output under this plugin folder for AWS-RunPowerShellScript (schema 1.2).
_PLUGIN_FOLDER = "awsrunPowerShellScript/0.awsrunPowerShellScript"
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_KEY_PREFIX = re.compile(r"[A-Za-z0-9!_.*'()/-]{0,400}")
_LOG_GROUP = re.compile(r"[A-Za-z0-9._/#-]{1,512}")
# A full scan output is a few hundred kilobytes; anything far beyond is not ours to load into memory.
_FULL_OUTPUT_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class OutputDestination:
    """Where SSM should also write commands' output: an S3 bucket, CloudWatch Logs, both or neither."""

    s3_bucket: str | None = None
    s3_key_prefix: str = "autopatch"
    cloudwatch_log_group: str | None = None

    def __post_init__(self) -> None:
        # Validated here, like every value that travels into a request.
        if self.s3_bucket is not None and _BUCKET_NAME.fullmatch(self.s3_bucket) is None:
            raise ValidationError("output_s3_bucket", self.s3_bucket, "an S3 bucket name (3-63 of a-z 0-9 . -)")
        if _KEY_PREFIX.fullmatch(self.s3_key_prefix) is None:
            raise ValidationError(
                "output_s3_key_prefix", self.s3_key_prefix, "up to 400 of A-Za-z0-9 ! _ . * ' ( ) / -"
            )
        if self.cloudwatch_log_group is not None and _LOG_GROUP.fullmatch(self.cloudwatch_log_group) is None:
            raise ValidationError("cloudwatch_log_group", self.cloudwatch_log_group, "a CloudWatch Logs group name")

    @property
    def configured(self) -> bool:
        return self.s3_bucket is not None or self.cloudwatch_log_group is not None

    def send_parameters(self) -> dict[str, Any]:
        """The SendCommand parameters that make SSM write the full output here (none when unset)."""
        parameters: dict[str, Any] = {}
        if self.s3_bucket is not None:
            parameters["OutputS3BucketName"] = self.s3_bucket
            if self.s3_key_prefix:
                parameters["OutputS3KeyPrefix"] = self.s3_key_prefix
        if self.cloudwatch_log_group is not None:
            parameters["CloudWatchOutputConfig"] = {
                "CloudWatchLogGroupName": self.cloudwatch_log_group,
                "CloudWatchOutputEnabled": True,
            }
        return parameters

    def s3_stdout_key(self, command_id: str, instance_id: str, url: str = "") -> str:
        """The object key of a command's stdout: from SSM's ``StandardOutputUrl`` when given, else built
        the way the agent builds it (``prefix/command-id/instance-id/plugin/stdout``)."""
        key = _key_from_url(url, self.s3_bucket or "")
        if key:
            return key
        parts = [self.s3_key_prefix.strip("/"), command_id, instance_id, _PLUGIN_FOLDER, "stdout"]
        return "/".join(part for part in parts if part)


def is_truncated(stdout: str) -> bool:
    """Whether SSM cut this stdout at its 24,000-character limit."""
    return stdout.rstrip().endswith(TRUNCATION_MARKER)


def truncation_message(destination: OutputDestination) -> str:
    """What the invocation's ``error`` says when only the cut output could be read."""
    where = (
        "and the full output could not be read from S3 or CloudWatch Logs (not written yet, or no access)"
        if destination.configured
        else "configure output_s3_bucket or cloudwatch_output to read the full output"
    )
    return f"SSM truncated the output at 24,000 characters ({TRUNCATION_MARKER}); do not parse it as whole: {where}"


def read_full_stdout(
    destination: OutputDestination,
    command_id: str,
    instance_id: str,
    stdout_url: str,
    s3: Callable[[], Any],
    logs: Callable[[], Any],
) -> str | None:
    """The whole stdout from S3 or CloudWatch Logs, or None when neither has it (yet).

    ``s3`` and ``logs`` build their clients only when needed: a fleet without a destination never
    needs them. Raises botocore's exceptions other than "not there".
    """
    if destination.s3_bucket is not None:
        key = destination.s3_stdout_key(command_id, instance_id, stdout_url)
        try:
            response = s3().get_object(Bucket=destination.s3_bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404", "NotFound"):
                raise
        else:
            body = response["Body"].read(_FULL_OUTPUT_LIMIT + 1)
            if len(body) > _FULL_OUTPUT_LIMIT:
                raise ExecutionError(f"command {command_id}: the output in S3 is over {_FULL_OUTPUT_LIMIT} bytes")
            return str(body.decode("utf-8", errors="replace"))
    if destination.cloudwatch_log_group is not None:
        return _read_cloudwatch_stdout(logs(), destination.cloudwatch_log_group, command_id, instance_id)
    return None


def _read_cloudwatch_stdout(logs: Any, group: str, command_id: str, instance_id: str) -> str | None:
    """SSM writes one stream per plugin, ``command-id/instance-id/plugin/stdout``: one event per chunk."""
    events: list[dict[str, Any]] = []
    try:
        pages = logs.get_paginator("filter_log_events").paginate(
            logGroupName=group, logStreamNamePrefix=f"{command_id}/{instance_id}/"
        )
        for page in pages:
            events.extend(event for event in page.get("events", []) if event["logStreamName"].endswith("/stdout"))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        return None
    if not events:
        return None
    events.sort(key=lambda event: (event.get("timestamp", 0), event.get("ingestionTime", 0)))
    return "\n".join(str(event.get("message", "")) for event in events)


def _key_from_url(url: str, bucket: str) -> str:
    """The key in an S3 URL of either style (``bucket.s3…/key`` or ``s3…/bucket/key``), else ""."""
    if not url or not bucket:
        return ""
    parsed = urlparse(url)
    path = unquote(parsed.path)
    if parsed.hostname and parsed.hostname.startswith(bucket + "."):
        return path.lstrip("/")
    if path.startswith(f"/{bucket}/"):
        return path[len(bucket) + 2 :]
    return ""

"""The AWS fleet adapter: SSM Run Command carries the scripts, EC2 adds names, tags, AMIs and reboots.

How values reach PowerShell (defect 2 of SEED_SYSTEM.md: the original formatted KB numbers into
PowerShell source, so a crafted KB was code injection on every server). Here no value we were given
is ever formatted into PowerShell source:

- the script bodies are the package's own ``scripts/*.ps1`` files, sent line by line unchanged, so
  what runs is readable in the SSM console and CloudTrail and identical to what was reviewed;
- the KB is validated by ``parse_kb`` first (``KB`` + 6-7 digits: anything else raises before a
  request is built), then travels only as base64 — an alphabet without quotes, ``$``, ``;`` or
  backticks — inside a single-quoted literal, is decoded on the server into a variable, and is
  bound to ``install.ps1``'s ``-KbId`` parameter, whose ``ValidatePattern`` checks it once more::

      $autoPatchKbId = [System.Text.Encoding]::UTF8.GetString([System.Convert]::FromBase64String('S0I1MDM0MTI5'))
      & {
      <install.ps1, unchanged>
      } -KbId $autoPatchKbId

  The whole script is not base64-wrapped on purpose: ``FromBase64String`` feeding
  ``[scriptblock]::Create`` is a pattern endpoint protection flags as malware, and it hides the code
  from auditors;
- instance ids go in ``InstanceIds`` (validated by ``parse_instance_id``), never into a script.

Errors: every botocore error is translated here: unknown instance → ``NotFoundError``; throttling
that outlived the adaptive retries, AWS-side 5xx and connection failures → ``TransientError`` (the
engine retries with backoff); anything else → ``ExecutionError``.

Crash safety: an install's ``Comment`` carries the engine's token, so ``find_command`` can tell
after a crash between sending and recording whether the command went out (ListCommands keeps 30
days of history per instance).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from importlib import resources
from typing import Any

from botocore.config import Config  # type: ignore[import-untyped, unused-ignore]
from botocore.exceptions import (  # type: ignore[import-untyped, unused-ignore]
    BotoCoreError,
    ClientError,
    HTTPClientError,
)
from botocore.exceptions import ConnectionError as BotocoreConnectionError  # type: ignore[import-untyped, unused-ignore]

from autopatch.domain.fleet import CommandInvocation, CommandStatus, Instance
from autopatch.domain.identifiers import parse_kb
from autopatch.domain.instance_ids import is_managed_instance_id, parse_instance_id
from autopatch.errors import AutoPatchError, ExecutionError, NotFoundError, TransientError, ValidationError

# Adaptive mode adds client-side rate limiting on top of backoff: a patch run polls hundreds of
# invocations, and SSM's GetCommandInvocation quota is low.
CLIENT_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": 10})
DEFAULT_DOCUMENT = "AWS-RunPowerShellScript"
KB_VARIABLE = "$autoPatchKbId"
# EC2 filters take at most 200 values. Filters, unlike InstanceIds/ImageIds, do not fail the whole
# call when one id is gone (a terminated instance SSM still lists, a deregistered AMI).
_EC2_FILTER_BATCH = 200
_COMMAND_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_NOT_FOUND_CODES = frozenset(
    {"InvalidInstanceId", "InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed", "InvalidCommandId"}
)
_THROTTLING_CODES = frozenset(
    {"ThrottlingException", "Throttling", "RequestLimitExceeded", "TooManyRequestsException", "RequestThrottled"}
)
_SERVER_ERROR_CODES = frozenset({"InternalServerError", "InternalError", "ServiceUnavailable", "Unavailable"})
_COMMENT_LIMIT = 100  # SendCommand rejects longer comments
_TOKEN_TEXT = re.compile(r"[A-Za-z0-9._:/@+=-]+")
# Run Command reports these in StatusDetails under a coarser Status ("Failed", "TimedOut").
_DETAILED_STATUSES = frozenset({CommandStatus.UNDELIVERABLE, CommandStatus.TERMINATED})


@cache
def script_text(name: str) -> str:
    """The text of a packaged PowerShell script (``scan.ps1``, ``install.ps1``)."""
    return (resources.files("autopatch.fleet") / "scripts" / name).read_text(encoding="utf-8")


def scan_commands() -> list[str]:
    """The ``commands`` parameter of a scan: ``scan.ps1`` as is (it takes no parameters)."""
    return script_text("scan.ps1").splitlines()


def install_commands(kb: str) -> list[str]:
    """The ``commands`` parameter installing ``kb``: validated, then passed only as base64 data."""
    encoded = base64.b64encode(parse_kb(kb).encode("ascii")).decode("ascii")
    return [
        f"{KB_VARIABLE} = [System.Text.Encoding]::UTF8.GetString([System.Convert]::FromBase64String('{encoded}'))",
        "& {",
        *script_text("install.ps1").splitlines(),
        f"}} -KbId {KB_VARIABLE}",
    ]


class SsmFleet:
    """``FleetAdapter`` over SSM Run Command and EC2; clients are injected or built on first use."""

    def __init__(
        self,
        ssm_client: Any = None,
        ec2_client: Any = None,
        region: str | None = None,
        document: str = DEFAULT_DOCUMENT,
        timeout_seconds: int = 900,
    ) -> None:
        if timeout_seconds < 30:
            raise ValidationError("timeout_seconds", timeout_seconds, "SSM accepts 30 seconds or more")
        self._ssm_client = ssm_client
        self._ec2_client = ec2_client
        self._owned_clients: list[Any] = []
        self.region = region
        self.document = document
        self.timeout_seconds = timeout_seconds

    @property
    def ssm(self) -> Any:
        """The SSM client, built on first use so that importing or configuring never needs AWS."""
        if self._ssm_client is None:
            self._ssm_client = self._new_client("ssm")
        return self._ssm_client

    @property
    def ec2(self) -> Any:
        """The EC2 client (names, tags, AMIs, reboots), built on first use."""
        if self._ec2_client is None:
            self._ec2_client = self._new_client("ec2")
        return self._ec2_client

    def _new_client(self, service: str) -> Any:
        import boto3  # type: ignore[import-untyped, unused-ignore]  # imported late: CLI start-up stays fast

        try:
            client = boto3.client(service, region_name=self.region, config=CLIENT_CONFIG)
        except BotoCoreError as exc:  # no region configured, unknown profile...
            raise ExecutionError(f"cannot create the AWS {service} client: {exc}") from exc
        self._owned_clients.append(client)
        return client

    def list_instances(self) -> list[Instance]:
        """Every SSM-managed Windows server, joined with its EC2 name, tags, IP and AMI name."""
        records = list(self._describe_instance_information(Filters=[{"Key": "PlatformTypes", "Values": ["Windows"]}]))
        ec2_ids = [record["InstanceId"] for record in records if not is_managed_instance_id(record["InstanceId"])]
        ec2_instances = self._describe_ec2_instances(ec2_ids)
        image_names = self._describe_image_names({found["ImageId"] for found in ec2_instances.values()})
        instances = []
        for record in records:
            instance_id = record["InstanceId"]
            ec2 = ec2_instances.get(instance_id, {})
            tags = {tag["Key"]: tag["Value"] for tag in ec2.get("Tags", [])}
            ami_id = ec2.get("ImageId")
            instances.append(
                Instance(
                    instance_id=instance_id,
                    name=tags.get("Name") or record.get("ComputerName") or record.get("Name") or instance_id,
                    platform_name=record.get("PlatformName", ""),
                    platform_version=record.get("PlatformVersion", ""),
                    online=record.get("PingStatus") == "Online",
                    ip_address=record.get("IPAddress") or ec2.get("PrivateIpAddress"),
                    ami_id=ami_id,
                    ami_name=image_names.get(ami_id) if ami_id else None,
                    tags=tags,
                )
            )
        return sorted(instances, key=lambda instance: instance.instance_id)

    def send_scan(self, instance_id: str) -> str:
        """Run ``scan.ps1`` on one server; the id is validated first so no request names a bad target."""
        return self._send(parse_instance_id(instance_id), scan_commands(), "AutoPatch scan")

    def send_install(self, instance_id: str, kb: str, token: str | None = None) -> str:
        """Run ``install.ps1`` for one KB; the KB travels as base64 data (see the module docstring)."""
        instance_id = parse_instance_id(instance_id)
        kb = parse_kb(kb)  # before anything is built or sent
        return self._send(instance_id, install_commands(kb), install_comment(kb, token))

    def find_command(self, instance_id: str, token: str) -> str | None:
        """The install command sent to ``instance_id`` with ``token`` (matched by its Comment), if any."""
        instance_id = parse_instance_id(instance_id)
        with _translated(f"looking for the command of token {token!r} on {instance_id}"):
            pages = self.ssm.get_paginator("list_commands").paginate(
                InstanceId=instance_id, Filters=[{"key": "DocumentName", "value": self.document}]
            )
            for page in pages:
                for command in page.get("Commands", []):
                    comment = command.get("Comment", "")
                    if comment.startswith("AutoPatch ") and comment == install_comment(_kb_of(comment), token):
                        return str(command["CommandId"])
        return None

    def expected_completion(self, instance_id: str, command_id: str) -> float | None:
        """SSM gives no estimate (a Windows Update install takes seconds or an hour): the engine backs off."""
        return None

    def expected_online(self, instance_id: str) -> float | None:
        """Unknown: EC2 gives no estimate of a reboot's length, so the engine polls ``is_online``."""
        parse_instance_id(instance_id)
        return None

    def close(self) -> None:
        """Close the HTTP connections of the clients this adapter built (injected ones belong to the caller)."""
        for client in self._owned_clients:
            client.close()
        if self._ssm_client in self._owned_clients:
            self._ssm_client = None  # rebuilt on next use
        if self._ec2_client in self._owned_clients:
            self._ec2_client = None
        self._owned_clients.clear()

    def get_command(self, instance_id: str, command_id: str) -> CommandInvocation:
        """One invocation: status, exit code (None until the server sets one), output (SSM keeps 24,000 chars)."""
        instance_id = parse_instance_id(instance_id)
        if _COMMAND_ID.fullmatch(command_id) is None:
            raise ValidationError("command_id", command_id, "an SSM command id is a lowercase UUID")
        with _translated(f"reading command {command_id} on {instance_id}"):
            try:
                response = self.ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
            except ClientError as exc:
                if _error_code(exc) != "InvocationDoesNotExist":
                    raise
                # Invocations appear a moment after SendCommand returns: not there yet is not failed.
                return CommandInvocation(command_id=command_id, instance_id=instance_id, status=CommandStatus.PENDING)
        response_code = response.get("ResponseCode", -1)
        return CommandInvocation(
            command_id=command_id,
            instance_id=instance_id,
            status=_command_status(response, command_id),
            exit_code=None if response_code == -1 else int(response_code),
            output=response.get("StandardOutputContent", ""),
            error=response.get("StandardErrorContent", ""),
        )

    def reboot(self, instance_id: str) -> None:
        """EC2 RebootInstances: a clean OS restart, returning at once; SSM needs minutes to report it back online."""
        instance_id = parse_instance_id(instance_id)
        if is_managed_instance_id(instance_id):
            raise ValidationError(
                "instance_id",
                instance_id,
                "only EC2 instances (i-...) can be rebooted through EC2; restart a managed instance (mi-...) on site",
            )
        with _translated(f"rebooting {instance_id}"):
            self.ec2.reboot_instances(InstanceIds=[instance_id])

    def is_online(self, instance_id: str) -> bool:
        """SSM's ping status. It lags a reboot by up to a few minutes: callers wait for offline → online."""
        instance_id = parse_instance_id(instance_id)
        records = self._describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [instance_id]}])
        return any(record.get("PingStatus") == "Online" for record in records)

    def _send(self, instance_id: str, commands: list[str], comment: str) -> str:
        with _translated(f"sending '{comment}' to {instance_id}"):
            response = self.ssm.send_command(
                InstanceIds=[instance_id],
                DocumentName=self.document,
                Comment=comment,
                TimeoutSeconds=self.timeout_seconds,  # how long SSM may wait to deliver it
                Parameters={"commands": commands, "executionTimeout": [str(self.timeout_seconds)]},
            )
        return str(response["Command"]["CommandId"])

    def _describe_instance_information(self, **request: Any) -> Iterator[dict[str, Any]]:
        with _translated("listing SSM managed instances"):
            for page in self.ssm.get_paginator("describe_instance_information").paginate(**request):
                for record in page.get("InstanceInformationList", []):
                    # The filter is server-side; this guards against a document or API change.
                    if record.get("PlatformType", "Windows") != "Windows":
                        continue
                    # An id we cannot validate must not travel inward (into commands, the store).
                    try:
                        parse_instance_id(record["InstanceId"], field="InstanceInformation.InstanceId")
                    except ValidationError as exc:
                        raise ExecutionError(f"SSM listed an instance id AutoPatch cannot accept: {exc}") from exc
                    yield record

    def _describe_ec2_instances(self, instance_ids: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        with _translated("describing EC2 instances"):
            paginator = self.ec2.get_paginator("describe_instances")
            for batch in _batches(instance_ids):
                for page in paginator.paginate(Filters=[{"Name": "instance-id", "Values": batch}]):
                    for reservation in page.get("Reservations", []):
                        found.update({instance["InstanceId"]: instance for instance in reservation["Instances"]})
        return found

    def _describe_image_names(self, image_ids: set[str]) -> dict[str, str]:
        names: dict[str, str] = {}
        with _translated("describing AMIs"):
            for batch in _batches(sorted(image_ids)):
                # Amazon deprecates its Windows AMIs within months; without IncludeDeprecated a
                # server launched from last year's image would lose its AMI name.
                response = self.ec2.describe_images(
                    Filters=[{"Name": "image-id", "Values": batch}], IncludeDeprecated=True
                )
                names.update({image["ImageId"]: image.get("Name", "") for image in response.get("Images", [])})
        return names


def install_comment(kb: str, token: str | None) -> str:
    """The SendCommand Comment of an install: readable when the token fits, a digest of it otherwise."""
    if token is None:
        return f"AutoPatch install {kb}"
    readable = f"AutoPatch {kb} {token}"
    if len(readable) <= _COMMENT_LIMIT and _TOKEN_TEXT.fullmatch(token):
        return readable
    return f"AutoPatch {kb} sha256:{hashlib.sha256(token.encode()).hexdigest()}"


def _kb_of(comment: str) -> str:
    """The KB an AutoPatch comment names ("AutoPatch KB5034129 ..."); an invalid one matches no token."""
    parts = comment.split(" ")
    return parts[1] if len(parts) > 2 else ""


def _command_status(response: dict[str, Any], command_id: str) -> CommandStatus:
    details = response.get("StatusDetails", "")
    if details in _DETAILED_STATUSES:
        return CommandStatus(details)
    try:
        return CommandStatus(response.get("Status", ""))
    except ValueError:
        raise ExecutionError(f"command {command_id}: unknown SSM status {response.get('Status')!r}") from None


def _batches(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _EC2_FILTER_BATCH):
        yield values[start : start + _EC2_FILTER_BATCH]


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn botocore's exceptions into AutoPatch errors that say what we were doing."""
    try:
        yield
    except ClientError as exc:
        raise _translate(exc, action) from exc
    except (BotocoreConnectionError, HTTPClientError) as exc:  # refused, DNS, TLS, timeouts: usually passes
        raise TransientError(f"{action}: AWS could not be reached: {exc}") from exc
    except BotoCoreError as exc:  # no credentials, no region: retrying cannot help until someone fixes it
        raise ExecutionError(f"{action}: AWS client configuration: {exc}") from exc


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _translate(exc: Any, action: str) -> AutoPatchError:
    code = _error_code(exc)
    message = exc.response.get("Error", {}).get("Message", "")
    if code in _NOT_FOUND_CODES:
        return NotFoundError(
            f"{action}: AWS does not know it ({code}: {message}); the instance may be in another account "
            "or region, stopped, terminated, or without a registered SSM agent"
        )
    if code in _THROTTLING_CODES:
        return TransientError(f"{action}: AWS kept throttling after {_max_retries()} adaptive retries ({code})")
    if code in _SERVER_ERROR_CODES or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
        return TransientError(f"{action}: AWS failed on its side ({code}: {message})")
    return ExecutionError(f"{action} failed: {code}: {message}")


def _max_retries() -> int:
    return int(CLIENT_CONFIG.retries["max_attempts"])

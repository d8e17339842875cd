"""The AWS fleet adapter: SSM Run Command carries the scripts, EC2 adds names, tags, AMIs and stopped servers.

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
- instance ids go in ``InstanceIds`` (validated by ``parse_instance_id``), never into a script;
- a ring gate's health-check script (``--health-script``) is the operator's own file: it is the
  ``commands`` parameter itself, line by line, unchanged (``health_check_commands``), with nothing
  of ours formatted into it or wrapped around it.

Timeouts (constructor arguments, each validated against what SSM accepts):

- ``install_timeout_seconds`` (7,200): the ``executionTimeout`` of an install, after which the agent
  kills the script. Windows Server 2016 cumulative updates often run past an hour, and the engine
  waits up to 2 h per KB: a shorter limit would kill installs the engine still expects to finish.
- ``scan_timeout_seconds`` (3,600): a Windows Update search against a slow WSUS server takes minutes.
- ``delivery_timeout_seconds`` (600): SendCommand's ``TimeoutSeconds``, how long SSM may wait for
  the agent to pick a command up (a server restarting, a flaky link); past it the command never
  ran: ``CommandStatus.DELIVERY_TIMED_OUT``, safe to send again.

Sending exactly once: SendCommand has no idempotency token, and botocore retries it on timeouts and
5xx answers — a command that did reach SSM then runs twice. Sends go through a client whose retries
are off (built from the adapter's session), and their failures are told apart: throttling or a 4xx
(not created) → ``TransientError``; a read timeout, a connection dropped after the request left, or
a 5xx → ``DeliveryUncertainError``, after which the engine asks ``find_command`` (the install's
``Comment`` carries the engine's token) instead of sending again.

Other errors: every botocore error is translated here. ``InvalidInstanceId`` from SSM means the
agent of an instance discovery knows is not connected right now (Windows restarting, stopped):
``TransientError``; an unknown id never gets this far, discovery rejects it. Throttling that
outlived the adaptive retries, 5xx and connection failures → ``TransientError``; anything else →
``ExecutionError``.

Reboots go through the SSM agent (``scripts/reboot.ps1``, exit code 3010: an orderly restart, then
the script runs again and prints the boot time), not EC2 RebootInstances, which hard-resets a
Windows that does not shut down within minutes — unsafe while updates finish — and cannot reach
on-premises (``mi-``) servers.

Clients: one boto3 Session per adapter (sessions are not thread-safe, clients built from one are),
clients built on first use under a lock. Output beyond SSM's 24,000 characters: ``ssm_output``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
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
from autopatch.domain.rings import check_health_script
from autopatch.domain.snapshots import SnapshotInventory, SnapshotState, VolumeSnapshot
from autopatch.errors import (
    AutoPatchError,
    DeliveryUncertainError,
    ExecutionError,
    NotFoundError,
    TransientError,
    ValidationError,
)
from autopatch.fleet.ec2_snapshots import Ec2Snapshots
from autopatch.fleet.ssm_output import OutputDestination, is_truncated, read_full_stdout, truncation_message

# Adaptive mode adds client-side rate limiting on top of backoff: a patch run polls hundreds of
# invocations, and SSM's GetCommandInvocation quota is low.
MAX_RETRIES = 10  # kept apart: botocore rewrites a Config's retries dict in place when a client is made
CLIENT_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": MAX_RETRIES})
# One attempt in all. ``max_attempts`` would count RETRIES (max_attempts=1 is two requests).
SEND_CLIENT_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 1})
DEFAULT_DOCUMENT = "AWS-RunPowerShellScript"
DEFAULT_INSTALL_TIMEOUT = 7200
DEFAULT_SCAN_TIMEOUT = 3600
DEFAULT_DELIVERY_TIMEOUT = 600
KB_VARIABLE = "$autoPatchKbId"
REBOOT_COMMENT = "AutoPatch reboot"
SCAN_COMMENT = "AutoPatch scan"
HEALTH_CHECK_COMMENT = "AutoPatch health check"
HEALTH_CHECK_TIMEOUT = 600  # a health check reads a few services and counters: minutes at most
# SSM's limits: AWS-RunPowerShellScript's executionTimeout is 1 s-48 h, TimeoutSeconds 30 s-30 days.
_EXECUTION_TIMEOUT_RANGE = (1, 172_800)
_DELIVERY_TIMEOUT_RANGE = (30, 2_592_000)
# RequestedDateTime is stamped by SSM; our clock may be behind it, and a crash is recorded late.
_INVOKED_AFTER_MARGIN = timedelta(minutes=5)
_PAGE_SIZE = 50  # the most DescribeInstanceInformation and ListCommands return per page
# EC2 filters take at most 200 values. Filters, unlike InstanceIds/ImageIds, do not fail the whole
# call when one id is gone (a terminated instance SSM still lists, a deregistered AMI).
_EC2_FILTER_BATCH = 200
# Terminated instances linger in DescribeInstances for an hour: they are no longer servers to patch.
_LIVE_EC2_STATES = ["pending", "running", "stopping", "stopped"]
_WINDOWS_SERVER_RELEASE = re.compile(r"Windows[_ -]Server[_ -](\d{4}(?:[_ -]R2)?)", re.IGNORECASE)
_COMMAND_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed", "InvalidCommandId"})
_THROTTLING_CODES = frozenset(
    {"ThrottlingException", "Throttling", "RequestLimitExceeded", "TooManyRequestsException", "RequestThrottled"}
)
_SERVER_ERROR_CODES = frozenset({"InternalServerError", "InternalError", "ServiceUnavailable", "Unavailable"})
_COMMENT_LIMIT = 100  # SendCommand rejects longer comments
_TOKEN_TEXT = re.compile(r"[A-Za-z0-9._:/@+=-]+")
# Run Command reports these in StatusDetails under a coarser Status ("Failed", "TimedOut").
_DETAILED_STATUSES = frozenset(
    {
        CommandStatus.UNDELIVERABLE,
        CommandStatus.TERMINATED,
        CommandStatus.DELIVERY_TIMED_OUT,
        CommandStatus.EXECUTION_TIMED_OUT,
    }
)
_CLIENT_RECIPES = {
    "ssm": ("ssm", CLIENT_CONFIG),
    "ssm_send": ("ssm", SEND_CLIENT_CONFIG),
    "ec2": ("ec2", CLIENT_CONFIG),
    "ec2_create": ("ec2", SEND_CLIENT_CONFIG),  # CreateSnapshots: no idempotency token, never retried
    "s3": ("s3", CLIENT_CONFIG),
    "logs": ("logs", CLIENT_CONFIG),
}


@cache
def script_text(name: str) -> str:
    """The text of a packaged PowerShell script (``scan.ps1``, ``install.ps1``, ``reboot.ps1``)."""
    return (resources.files("autopatch.fleet") / "scripts" / name).read_text(encoding="utf-8")


def scan_commands() -> list[str]:
    """The ``commands`` parameter of a scan: ``scan.ps1`` as is (it takes no parameters)."""
    return script_text("scan.ps1").splitlines()


def reboot_commands() -> list[str]:
    """The ``commands`` parameter of a reboot: ``reboot.ps1`` as is (it takes no parameters)."""
    return script_text("reboot.ps1").splitlines()


def health_check_commands(script: str) -> list[str]:
    """The ``commands`` parameter of a ring gate's health check: the operator's script, line by line, unchanged.

    Nothing is added around it and nothing of ours is formatted into it: SSM writes the lines to a
    ``.ps1`` file and runs it, so the script's own exit code decides the gate.
    """
    return check_health_script(script).splitlines()


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
    """``FleetAdapter`` over SSM Run Command and EC2; clients are injected or built on first use.

    An injected ``ssm_client`` also sends commands unless ``send_client`` is given: its retry
    settings are then the caller's (tests inject stubbed or moto clients). Built clients come from
    one ``session`` (given, or created once for ``region``).
    """

    def __init__(
        self,
        ssm_client: Any = None,
        ec2_client: Any = None,
        region: str | None = None,
        document: str = DEFAULT_DOCUMENT,
        *,
        install_timeout_seconds: int = DEFAULT_INSTALL_TIMEOUT,
        scan_timeout_seconds: int = DEFAULT_SCAN_TIMEOUT,
        delivery_timeout_seconds: int = DEFAULT_DELIVERY_TIMEOUT,
        output_s3_bucket: str | None = None,
        output_s3_key_prefix: str = "autopatch",
        cloudwatch_output: bool = False,
        session: Any = None,
        send_client: Any = None,
        s3_client: Any = None,
        logs_client: Any = None,
    ) -> None:
        for field, value in (
            ("install_timeout_seconds", install_timeout_seconds),
            ("scan_timeout_seconds", scan_timeout_seconds),
        ):
            _check_range(field, value, _EXECUTION_TIMEOUT_RANGE)
        _check_range("delivery_timeout_seconds", delivery_timeout_seconds, _DELIVERY_TIMEOUT_RANGE)
        self.region = region
        self.document = document
        self.install_timeout_seconds = install_timeout_seconds
        self.scan_timeout_seconds = scan_timeout_seconds
        self.delivery_timeout_seconds = delivery_timeout_seconds
        # SSM's own default group for the document, so existing retention and IAM settings apply.
        log_group = f"/aws/ssm/{document}" if cloudwatch_output else None
        self.output = OutputDestination(output_s3_bucket, output_s3_key_prefix, log_group)
        injected = {
            "ssm": ssm_client,
            "ssm_send": send_client if send_client is not None else ssm_client,
            "ec2": ec2_client,
            "ec2_create": ec2_client,
            "s3": s3_client,
            "logs": logs_client,
        }
        self._clients: dict[str, Any] = {key: client for key, client in injected.items() if client is not None}
        self._owned_clients: list[Any] = []
        self._session = session
        self._lock = threading.Lock()
        # EBS snapshots before patching: EC2 calls only, in their own module.
        self.snapshots = Ec2Snapshots(lambda: self.ec2, lambda: self._client("ec2_create"))

    @property
    def ssm(self) -> Any:
        """The SSM client for reads (adaptive retries), built on first use: importing never needs AWS."""
        return self._client("ssm")

    @property
    def ssm_send(self) -> Any:
        """The SSM client that sends commands: one attempt, never retried (see the module docstring)."""
        return self._client("ssm_send")

    @property
    def ec2(self) -> Any:
        """The EC2 client (names, tags, AMIs, stopped instances), built on first use."""
        return self._client("ec2")

    @property
    def s3(self) -> Any:
        """The S3 client reading full outputs, built only when an output is truncated."""
        return self._client("s3")

    @property
    def logs(self) -> Any:
        """The CloudWatch Logs client reading full outputs, built only when an output is truncated."""
        return self._client("logs")

    def _client(self, key: str) -> Any:
        with self._lock:  # the engine's threads share this adapter; a Session must not be used concurrently
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = self._new_client(*_CLIENT_RECIPES[key])
            return client

    def _new_client(self, service: str, config: Any) -> Any:
        try:
            if self._session is None:
                import boto3  # type: ignore[import-untyped, unused-ignore]  # imported late: CLI start-up stays fast

                self._session = boto3.session.Session(region_name=self.region)
            client = self._session.client(service, region_name=self.region, config=config)
        except BotoCoreError as exc:  # no region configured, unknown profile...
            raise ExecutionError(f"cannot create the AWS {service} client: {exc}") from exc
        self._owned_clients.append(client)
        return client

    def list_instances(self) -> list[Instance]:
        """Every Windows server SSM manages or EC2 runs; those SSM does not list (stopped) are offline."""
        records = {
            record["InstanceId"]: record
            for record in self._describe_instance_information(Filters=[{"Key": "PlatformTypes", "Values": ["Windows"]}])
        }
        ec2_instances = self._describe_ec2_instances([{"Name": "platform", "Values": ["windows"]}])
        # A server SSM lists whose EC2 record has no "windows" platform (an imported image): by id.
        unmatched = [id_ for id_ in records if not is_managed_instance_id(id_) and id_ not in ec2_instances]
        for batch in _batches(unmatched):
            ec2_instances.update(self._describe_ec2_instances([{"Name": "instance-id", "Values": batch}]))
        images = self._describe_images({found["ImageId"] for found in ec2_instances.values() if "ImageId" in found})
        instances = []
        for instance_id, record in records.items():
            ec2 = ec2_instances.get(instance_id, {})
            tags = self._managed_instance_tags(instance_id) if is_managed_instance_id(instance_id) else _tags(ec2)
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
                    ami_name=images.get(ami_id, {}).get("Name") if ami_id else None,
                    tags=tags,
                )
            )
        for instance_id, ec2 in ec2_instances.items():
            if instance_id not in records:  # stopped, or its agent gone: SSM forgot it, the server is still ours
                instances.append(_offline_ec2_instance(ec2, images.get(ec2.get("ImageId", ""), {})))
        return sorted(instances, key=lambda instance: instance.instance_id)

    def send_scan(self, instance_id: str) -> str:
        """Run ``scan.ps1`` on one server; the id is validated first so no request names a bad target."""
        return self._send(parse_instance_id(instance_id), scan_commands(), SCAN_COMMENT, self.scan_timeout_seconds)

    def send_health_check(self, instance_id: str, script: str) -> str:
        """Run the operator's health-check script (``health_check_commands``) with a short execution timeout."""
        instance_id = parse_instance_id(instance_id)
        commands = health_check_commands(script)  # checked before anything is built or sent
        return self._send(instance_id, commands, HEALTH_CHECK_COMMENT, HEALTH_CHECK_TIMEOUT)

    def send_install(self, instance_id: str, kb: str, token: str | None = None) -> str:
        """Run ``install.ps1`` for one KB; the KB travels as base64 data (see the module docstring)."""
        instance_id = parse_instance_id(instance_id)
        kb = parse_kb(kb)  # before anything is built or sent
        return self._send(instance_id, install_commands(kb), install_comment(kb, token), self.install_timeout_seconds)

    def find_command(self, instance_id: str, token: str, since: datetime | None = None) -> str | None:
        """The install command sent to ``instance_id`` with ``token`` (matched by its Comment), if any.

        With ``since`` (the attempt's time; naive means UTC) only commands invoked after it, less a
        margin for clock skew, are read: a few pages instead of 30 days of history.
        """
        instance_id = parse_instance_id(instance_id)
        filters = [{"key": "DocumentName", "value": self.document}]
        if since is not None:
            filters.append({"key": "InvokedAfter", "value": _invoked_after(since)})
        with _translated(f"looking for the command of token {token!r} on {instance_id}"):
            pages = self.ssm.get_paginator("list_commands").paginate(
                InstanceId=instance_id, Filters=filters, PaginationConfig={"PageSize": _PAGE_SIZE}
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
        """Unknown: SSM gives no estimate of a reboot's length, so the engine polls."""
        parse_instance_id(instance_id)
        return None

    def close(self) -> None:
        """Close the HTTP connections of the clients this adapter built (injected ones belong to the caller)."""
        with self._lock:
            for client in self._owned_clients:
                client.close()
            owned = {id(client) for client in self._owned_clients}
            # Closed clients of ours are rebuilt on next use.
            self._clients = {key: client for key, client in self._clients.items() if id(client) not in owned}
            self._owned_clients.clear()

    def get_command(self, instance_id: str, command_id: str) -> CommandInvocation:
        """One invocation: status, exit code (None until the server sets one), output.

        SSM keeps 24,000 characters of stdout: a longer output is read in full from S3 or CloudWatch
        Logs when configured, otherwise ``error`` says it was cut (``ssm_output``).
        """
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
        status = _command_status(response, command_id)
        output = response.get("StandardOutputContent", "")
        error = response.get("StandardErrorContent", "")
        if is_truncated(output):
            full = None
            if self.output.configured and status.is_terminal:  # the agent uploads once the plugin finished
                with _translated(f"reading the full output of command {command_id} on {instance_id}"):
                    full = read_full_stdout(
                        self.output,
                        command_id,
                        instance_id,
                        response.get("StandardOutputUrl", ""),
                        lambda: self.s3,
                        lambda: self.logs,
                    )
            if full is None:
                error = truncation_message(self.output) + (f"\n{error}" if error else "")
            else:
                output = full
        response_code = response.get("ResponseCode", -1)
        return CommandInvocation(
            command_id=command_id,
            instance_id=instance_id,
            status=status,
            exit_code=None if response_code == -1 else int(response_code),
            output=output,
            error=error,
        )

    def reboot(self, instance_id: str) -> str:
        """Send ``reboot.ps1``: the agent restarts Windows cleanly, runs it again, and it prints the boot time.

        Returns the command id: it succeeds only after the restart. EC2 and on-premises servers alike.
        """
        instance_id = parse_instance_id(instance_id)
        # Finishing updates across the restart ("Working on updates") is what takes long.
        return self._send(instance_id, reboot_commands(), REBOOT_COMMENT, self.install_timeout_seconds)

    def create_snapshots(self, instance_id: str, tags: Mapping[str, str]) -> list[VolumeSnapshot]:
        """EC2 CreateSnapshots of the server's EBS volumes (``ec2_snapshots``)."""
        return self.snapshots.create_snapshots(instance_id, tags)

    def snapshot_states(self, snapshot_ids: Collection[str]) -> dict[str, SnapshotState]:
        return self.snapshots.snapshot_states(snapshot_ids)

    def list_snapshots(self, tags: Mapping[str, str | None]) -> SnapshotInventory:
        return self.snapshots.list_snapshots(tags)

    def delete_snapshot(self, snapshot_id: str) -> None:
        self.snapshots.delete_snapshot(snapshot_id)

    def is_online(self, instance_id: str) -> bool:
        """SSM's ping status. It lags a reboot by up to a few minutes: callers wait for offline → online."""
        instance_id = parse_instance_id(instance_id)
        records = self._describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [instance_id]}])
        return any(record.get("PingStatus") == "Online" for record in records)

    def _send(self, instance_id: str, commands: list[str], comment: str, execution_timeout: int) -> str:
        with _translated_send(f"sending '{comment}' to {instance_id}"):
            response = self.ssm_send.send_command(
                InstanceIds=[instance_id],
                DocumentName=self.document,
                Comment=comment,
                TimeoutSeconds=self.delivery_timeout_seconds,
                Parameters={"commands": commands, "executionTimeout": [str(execution_timeout)]},
                **self.output.send_parameters(),
            )
        return str(response["Command"]["CommandId"])

    def _describe_instance_information(self, **request: Any) -> Iterator[dict[str, Any]]:
        with _translated("listing SSM managed instances"):
            pages = self.ssm.get_paginator("describe_instance_information").paginate(
                **request, PaginationConfig={"PageSize": _PAGE_SIZE}
            )
            for page in pages:
                for record in page.get("InstanceInformationList", []):
                    # The filter is server-side; this guards against a document or API change.
                    if record.get("PlatformType", "Windows") != "Windows":
                        continue
                    _check_listed_id(record["InstanceId"], "InstanceInformation.InstanceId")
                    yield record

    def _managed_instance_tags(self, instance_id: str) -> dict[str, str]:
        """Tags of an on-premises server: it has no EC2 record, SSM keeps them."""
        with _translated(f"reading the tags of {instance_id}"):
            response = self.ssm.list_tags_for_resource(ResourceType="ManagedInstance", ResourceId=instance_id)
        return {tag["Key"]: tag["Value"] for tag in response.get("TagList", [])}

    def _describe_ec2_instances(self, filters: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        with _translated("describing EC2 instances"):
            paginator = self.ec2.get_paginator("describe_instances")
            live = {"Name": "instance-state-name", "Values": _LIVE_EC2_STATES}
            for page in paginator.paginate(Filters=[*filters, live]):
                for reservation in page.get("Reservations", []):
                    for instance in reservation["Instances"]:
                        _check_listed_id(instance["InstanceId"], "Instance.InstanceId")
                        found[instance["InstanceId"]] = instance
        return found

    def _describe_images(self, image_ids: set[str]) -> dict[str, dict[str, Any]]:
        images: dict[str, dict[str, Any]] = {}
        with _translated("describing AMIs"):
            for batch in _batches(sorted(image_ids)):
                # Amazon deprecates its Windows AMIs within months; without IncludeDeprecated a
                # server launched from last year's image would lose its AMI name.
                response = self.ec2.describe_images(
                    Filters=[{"Name": "image-id", "Values": batch}], IncludeDeprecated=True
                )
                images.update({image["ImageId"]: image for image in response.get("Images", [])})
        return images


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


def _invoked_after(since: datetime) -> str:
    """ListCommands' InvokedAfter value: ISO 8601 in UTC, ``_INVOKED_AFTER_MARGIN`` before ``since``."""
    moment = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
    return (moment - _INVOKED_AFTER_MARGIN).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tags(ec2: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in ec2.get("Tags", [])}


def _offline_ec2_instance(ec2: dict[str, Any], image: dict[str, Any]) -> Instance:
    """A Windows instance EC2 knows and SSM does not list: name, tags and AMI from EC2, offline."""
    tags = _tags(ec2)
    release = _WINDOWS_SERVER_RELEASE.search(f"{image.get('Description', '')} {image.get('Name', '')}")
    return Instance(
        instance_id=ec2["InstanceId"],
        name=tags.get("Name") or ec2["InstanceId"],
        platform_name=f"Microsoft Windows Server {release.group(1).replace('_', ' ').replace('-', ' ')}"
        if release
        else "Microsoft Windows Server",
        platform_version="",  # only the agent reports it
        online=False,
        ip_address=ec2.get("PrivateIpAddress"),
        ami_id=ec2.get("ImageId"),
        ami_name=image.get("Name"),
        tags=tags,
    )


def _check_listed_id(instance_id: str, field: str) -> None:
    """An id AWS listed that we cannot validate must not travel inward (into commands, the store)."""
    try:
        parse_instance_id(instance_id, field=field)
    except ValidationError as exc:
        raise ExecutionError(f"AWS listed an instance id AutoPatch cannot accept: {exc}") from exc


def _check_range(field: str, value: int, bounds: tuple[int, int]) -> None:
    if not bounds[0] <= value <= bounds[1]:
        raise ValidationError(field, value, f"SSM accepts {bounds[0]} to {bounds[1]} seconds")


def _command_status(response: dict[str, Any], command_id: str) -> CommandStatus:
    # The API says "DeliveryTimedOut"; the documentation spells it "Delivery Timed Out".
    details = str(response.get("StatusDetails", "")).replace(" ", "")
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


@contextmanager
def _translated_send(action: str) -> Iterator[None]:
    """Like ``_translated``, telling a send that surely failed from one that may have gone through."""
    try:
        yield
    except ClientError as exc:
        if _is_server_error(exc):  # SSM may have created the command before failing to answer
            code, message = _error_code(exc), exc.response.get("Error", {}).get("Message", "")
            raise DeliveryUncertainError(
                f"{action}: AWS failed on its side ({code}: {message}); the command may exist: look it up, not resend"
            ) from exc
        raise _translate(exc, action, retried=False) from exc
    except BotocoreConnectionError as exc:  # refused, DNS, TLS handshake, connect timeout: nothing left
        raise TransientError(f"{action}: AWS could not be reached, nothing was sent: {exc}") from exc
    except HTTPClientError as exc:  # read timeout, connection dropped after the request left
        raise DeliveryUncertainError(
            f"{action}: no answer after the request left ({exc}); the command may exist: look it up, do not resend"
        ) from exc
    except BotoCoreError as exc:
        raise ExecutionError(f"{action}: AWS client configuration: {exc}") from exc


def _error_code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_server_error(exc: Any) -> bool:
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return _error_code(exc) in _SERVER_ERROR_CODES or status >= 500


def _translate(exc: Any, action: str, *, retried: bool = True) -> AutoPatchError:
    code = _error_code(exc)
    message = exc.response.get("Error", {}).get("Message", "")
    if code == "InvalidInstanceId":
        return TransientError(
            f"{action}: SSM cannot reach it now ({code}: {message}); its agent is not connected "
            "(Windows restarting, the instance stopping or stopped, the agent deregistered)"
        )
    if code in _NOT_FOUND_CODES:
        return NotFoundError(
            f"{action}: AWS does not know it ({code}: {message}); the instance may be in another account "
            "or region, or terminated"
        )
    if code in _THROTTLING_CODES:
        if not retried:
            return TransientError(f"{action}: AWS throttled it ({code}); nothing was created")
        return TransientError(f"{action}: AWS kept throttling after {MAX_RETRIES} adaptive retries ({code})")
    if _is_server_error(exc):
        return TransientError(f"{action}: AWS failed on its side ({code}: {message})")
    return ExecutionError(f"{action} failed: {code}: {message}")

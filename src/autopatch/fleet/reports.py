"""Read — and write — the JSON that the fleet scripts print (the contract of ``fleet/base.py``).

The original parsed its scan output by position and never stripped its ``INSTALLED_KBS=`` prefix,
so the first KB of each list could never match (defect 1 of SEED_SYSTEM.md). Here the scripts print
one JSON object and every field is checked by a pydantic model in strict mode: a KB must be a KB, a
build part must be digits, a flag must be a JSON boolean. A report that breaks the contract is an
``ExecutionError`` naming the instance, the field and the rule — the server said something we cannot
trust, and guessing would turn into a wrong patch decision.

Noise is tolerated only BEFORE the report: a PowerShell warning or a profile banner can precede it,
so the last non-empty line must be the JSON object (the scripts print it with ``-Compress``).

``scan_json`` and ``install_json`` produce the same text, validated by the same models, so the
simulator can never print something the SSM path would reject.

Text fields can hold any language: the scripts escape every character above ``~`` as ``\\uXXXX``
because Windows PowerShell 5.1 writes stdout in the OEM code page, which would mangle a Greek
computer name or a French update title before SSM read it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import IntEnum
from typing import Annotated, Any, Literal, TypeVar

import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from autopatch.domain.fleet import InstallReport, OfferedUpdate, ScanReport
from autopatch.domain.identifiers import parse_build, parse_kb
from autopatch.domain.instance_ids import parse_instance_id
from autopatch.errors import ExecutionError, ValidationError

SCHEMA_VERSION = 1
_Model = TypeVar("_Model", bound=BaseModel)
# GetCommandInvocation returns at most this many characters of stdout: longer output is cut, which
# breaks a JSON report at its end.
SSM_OUTPUT_LIMIT = 24_000
# 0x80240017 WU_E_NOT_APPLICABLE as a signed 32-bit int: what install.ps1 reports for a KB that
# Windows Update does not offer (installed, superseded, or not for this OS).
WU_E_NOT_APPLICABLE = -2145124329
# A scan's "error" is one line for a run's record and a table cell: a COM message can run to pages.
ERROR_LIMIT = 300
# What scan.ps1 prints: LastBootUpTime in UTC to the second. ASCII digits only ([0-9], not \d).
_UTC_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
InstallStatus = Literal["installed", "already-installed", "not-applicable", "not-approved", "hidden", "failed"]
# result_code 2 (Succeeded) or 3 (SucceededWithErrors): the KB is on the server.
_SUCCEEDED_CODES = frozenset({2, 3})
_SUCCESS_STATUSES = frozenset({"installed", "already-installed"})


class UpdateResultCode(IntEnum):
    """The Windows Update Agent ``OperationResultCode`` that install reports carry."""

    NOT_STARTED = 0
    IN_PROGRESS = 1
    SUCCEEDED = 2
    SUCCEEDED_WITH_ERRORS = 3
    FAILED = 4
    ABORTED = 5


def _canonical_kb(value: str) -> str:
    try:
        return parse_kb(value)
    except ValidationError as error:
        raise ValueError(error.rule) from None


def _utc_timestamp(value: object) -> object:
    """``2024-02-14T03:12:45Z`` to an aware UTC datetime; any other form (an offset, no ``Z``) is refused."""
    if value is None:
        return None
    if not isinstance(value, str) or not _UTC_TIMESTAMP.fullmatch(value):
        raise ValueError("must be a UTC time written YYYY-MM-DDTHH:MM:SSZ")
    try:
        return datetime.strptime(value, _UTC_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError("is not a real date and time") from None


def _one_line(value: str | None) -> str | None:
    """An error text on one line, cut to ``ERROR_LIMIT``; an empty one means no error."""
    if value is None:
        return None
    text = " ".join(value.split())
    return _shorten(text, ERROR_LIMIT) if text else None


KbId = Annotated[str, AfterValidator(_canonical_kb)]
UtcTimestamp = Annotated[datetime, BeforeValidator(_utc_timestamp)]
ErrorText = Annotated[str | None, AfterValidator(_one_line)]
_STRICT = ConfigDict(strict=True, extra="ignore", frozen=True)  # extra fields: a newer script, same schema


class _OfferedUpdateModel(BaseModel):
    model_config = _STRICT

    kb: KbId
    title: str


class _ScanModel(BaseModel):
    model_config = _STRICT

    schema_version: Literal[1] = Field(alias="schema")
    computer_name: str
    os_caption: str = Field(min_length=1)
    os_version: str = Field(pattern=r"^[0-9]{1,5}\.[0-9]{1,5}\.[0-9]{1,6}$")  # Win32_OperatingSystem.Version
    current_build: str = Field(pattern=r"^[0-9]{1,6}$")  # REG_SZ CurrentBuild
    ubr: int = Field(ge=0, le=999_999)  # REG_DWORD UBR (update build revision)
    installation_type: Literal["Server", "Server Core", "Client", "Nano Server"]  # every value Windows writes
    installed_kbs: list[KbId]
    offered_updates: list[_OfferedUpdateModel]
    pending_reboot: bool
    last_boot_time: UtcTimestamp | None = None  # older scripts did not print it
    error: ErrorText = None  # the Windows Update part failed; build and installed KBs still hold

    @field_validator("error")
    @classmethod
    def _nothing_offered_when_windows_update_failed(cls, value: str | None, info: ValidationInfo) -> str | None:
        # An error means the searcher never answered: a list of offered updates beside it is a guess.
        if value is not None and info.data.get("offered_updates"):
            raise ValueError("must be null when offered_updates is not empty")
        return value

    @field_serializer("last_boot_time")
    def _write_utc(self, value: datetime | None) -> str | None:
        return None if value is None else value.astimezone(UTC).strftime(_UTC_FORMAT)

    @property
    def build(self) -> str:
        """``10.0.20348.2227``: major.minor of the OS version, then CurrentBuild and UBR from the registry."""
        major, minor, _ = self.os_version.split(".")
        return f"{major}.{minor}.{self.current_build}.{self.ubr}"


class _InstallModel(BaseModel):
    model_config = _STRICT

    schema_version: Literal[1] = Field(alias="schema")
    kb: KbId
    result_code: int = Field(ge=0, le=5)
    hresult: int = Field(ge=-(2**31), le=2**31 - 1)  # signed, as PowerShell prints an Int32
    reboot_required: bool
    message: str
    status: InstallStatus | None = None  # older scripts did not print it

    @field_validator("status")
    @classmethod
    def _status_agrees_with_result_code(cls, value: str | None, info: ValidationInfo) -> str | None:
        # "installed" beside result code 4 would mark a failed KB done (or the reverse): refuse both.
        result_code = info.data.get("result_code")
        if value is None or result_code is None:  # result_code itself invalid: already reported
            return value
        if (value in _SUCCESS_STATUSES) != (result_code in _SUCCEEDED_CODES):
            expected = "2 or 3" if value in _SUCCESS_STATUSES else "other than 2 or 3"
            raise ValueError(f"needs a result_code {expected}, got {result_code}")
        return value


def parse_scan_output(instance_id: str, text: str, scanned_at: datetime) -> ScanReport:
    """Turn a scan command's stdout into a ``ScanReport``, or raise ``ExecutionError`` naming the field."""
    instance_id = parse_instance_id(instance_id)
    context = f"scan output of {instance_id}"
    model = _validate(_ScanModel, _last_json_object(text, context), context)
    parse_build(model.build, field=f"{context}: build")  # already digits; this bounds the parts
    offered: dict[str, OfferedUpdate] = {}
    for update in model.offered_updates:  # one KB can come with two updates (e.g. two languages)
        offered.setdefault(update.kb, OfferedUpdate(kb=update.kb, title=update.title))
    return ScanReport(
        instance_id=instance_id,
        os_caption=model.os_caption,
        build=model.build,
        installation_type=model.installation_type,
        installed_kbs=frozenset(model.installed_kbs),
        offered=tuple(offered.values()),
        pending_reboot=model.pending_reboot,
        scanned_at=scanned_at,
        boot_time=model.last_boot_time,
        error=model.error,
    )


def parse_install_output(text: str, instance_id: str | None = None) -> InstallReport:
    """Turn an install command's stdout into an ``InstallReport``, or raise ``ExecutionError``."""
    context = f"install output of {instance_id}" if instance_id else "install output"
    model = _validate(_InstallModel, _last_json_object(text, context), context)
    return InstallReport(
        kb=model.kb,
        result_code=model.result_code,
        hresult=model.hresult,
        reboot_required=model.reboot_required,
        message=model.message,
        status=model.status,
    )


def scan_json(
    *,
    computer_name: str,
    os_caption: str,
    build: str,
    installation_type: str,
    installed_kbs: Iterable[str] = (),
    offered_updates: Iterable[OfferedUpdate] = (),
    pending_reboot: bool = False,
    last_boot_time: datetime | None = None,
    error: str | None = None,
) -> str:
    """The one-line JSON that ``scan.ps1`` prints, for a server at ``build`` (``10.0.20348.2227``).

    ``last_boot_time`` must be timezone-aware (it is written in UTC, to the second); ``error`` says
    why the Windows Update part of the scan failed, and then ``offered_updates`` must be empty.
    """
    if last_boot_time is not None and last_boot_time.utcoffset() is None:
        raise ValidationError("last_boot_time", last_boot_time, "must be timezone-aware (it is written in UTC)")
    major, minor, current_build, ubr = parse_build(build)
    document = {
        "schema": SCHEMA_VERSION,
        "computer_name": computer_name,
        "os_caption": os_caption,
        "os_version": f"{major}.{minor}.{current_build}",
        "current_build": str(current_build),
        "ubr": ubr,
        "installation_type": installation_type,
        "installed_kbs": list(installed_kbs),
        "offered_updates": [{"kb": update.kb, "title": update.title} for update in offered_updates],
        "pending_reboot": pending_reboot,
        "last_boot_time": None if last_boot_time is None else last_boot_time.astimezone(UTC).strftime(_UTC_FORMAT),
        "error": error,
    }
    return _dump(_ScanModel, document)


def install_json(
    *,
    kb: str,
    result_code: int,
    hresult: int = 0,
    reboot_required: bool = False,
    message: str = "",
    status: str | None = None,
) -> str:
    """The one-line JSON that ``install.ps1`` prints; ``status`` is one of ``InstallStatus`` or None."""
    document = {
        "schema": SCHEMA_VERSION,
        "kb": kb,
        "result_code": int(result_code),
        "hresult": hresult,
        "reboot_required": reboot_required,
        "message": message,
        "status": status,
    }
    return _dump(_InstallModel, document)


def _last_json_object(text: str, context: str) -> dict[str, Any]:
    lines = [line.strip() for line in text.lstrip("\ufeff").splitlines() if line.strip()]
    if not lines:
        raise ExecutionError(f"{context}: the output is empty (expected one JSON object)")
    truncated = " (SSM keeps only the first 24,000 characters of output)" if len(text) >= SSM_OUTPUT_LIMIT else ""
    try:
        document = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise ExecutionError(
            f"{context}: the last non-empty line is not JSON ({exc.msg}){truncated}: {_shorten(lines[-1])}"
        ) from exc
    if not isinstance(document, dict):
        raise ExecutionError(f"{context}: expected a JSON object, got {type(document).__name__}")
    return document


def _validate(model: type[_Model], document: Mapping[str, Any], context: str) -> _Model:
    try:
        return model.model_validate(document)
    except pydantic.ValidationError as exc:
        raise ExecutionError(f"{context}: {_describe(exc)}") from exc


def _dump(model: type[BaseModel], document: Mapping[str, Any]) -> str:
    try:
        validated = model.model_validate(document)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise ValidationError(_location(first["loc"]), first.get("input"), _rule(first)) from exc
    # ASCII with \\uXXXX escapes, as the scripts print it (see the module docstring).
    return json.dumps(validated.model_dump(by_alias=True), separators=(",", ":"), ensure_ascii=True)


def _describe(error: pydantic.ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False):
        location = _location(item["loc"])
        if item["type"] == "missing":
            problems.append(f"field '{location}' is missing")
        else:
            problems.append(f"field '{location}': {_shorten(repr(item.get('input')))} is invalid: {_rule(item)}")
    return "; ".join(problems)


def _location(location: Sequence[int | str]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text.replace("schema_version", "schema") or "(document)"


def _rule(item: Mapping[str, Any]) -> str:
    return str(item["msg"]).removeprefix("Value error, ")


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

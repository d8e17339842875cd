"""The EventBridge target for SSM's "EC2 Command Invocation Status-change Notification".

SSM sends one event per (command, instance) to the default bus whenever an invocation changes
status; the rule in the template passes the terminal ones here. The event says only which command
ended and how (no output, no exit code): RecordCommand reads those with GetCommandInvocation. This
handler only wakes the task waiting for that command, by taking the token WaitCommand stored under
``command#<id>`` and sending it back. A command nobody waits for (a scan of ``autopatch fleet
scan``, another tool's command) and a duplicated event find no token and do nothing: taking is
atomic, so one event completes one wait once.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError  # type: ignore[import-untyped, unused-ignore]
from pydantic import BaseModel, ConfigDict, Field

from autopatch.aws.run_models import CommandId, InstanceId
from autopatch.aws.wiring import Runtime, runtime
from autopatch.domain.fleet import CommandStatus

logger = Logger(service="autopatch")

# The wait already gave up (heartbeat or timeout) and the workflow read the command itself.
_GONE = frozenset({"TaskTimedOut", "InvalidToken", "TaskDoesNotExist"})


class CommandStatusDetail(BaseModel):
    """The event's ``detail``: all SSM says (command, document, instance, requested time, status)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    command_id: CommandId = Field(alias="command-id")
    instance_id: InstanceId = Field(alias="instance-id")
    document_name: str = Field(default="", alias="document-name")
    status: str = Field(max_length=64)


class CommandStatusEvent(EventBridgeModel):
    detail: CommandStatusDetail  # narrowed from EventBridgeModel's raw dict


def waiter_key(command_id: str) -> str:
    """Where WaitCommand keeps the token of the task waiting for ``command_id``."""
    return f"command#{command_id}"


def complete_waiter(runtime: Runtime, key: str, output: dict[str, Any]) -> bool:
    """Take the token under ``key`` and send the task success; False when nobody (or nobody any more) waits."""
    token = runtime.store.take_waiter(key)
    if token is None:
        return False
    try:
        runtime.states.send_task_success(taskToken=token, output=json.dumps(output))
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code not in _GONE:
            raise
        logger.info("the wait for %s had already ended (%s): nothing to complete", key, code)
        return False
    return True


def is_terminal(status: str) -> bool:
    """A status after which the command changes no more (an unknown one is treated as not terminal)."""
    try:
        return CommandStatus(status).is_terminal
    except ValueError:
        return False


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Complete the wait for the command this event reports ended; nothing for other events."""
    detail = parse(event=event, model=CommandStatusEvent).detail
    logger.append_keys(command_id=detail.command_id, instance_id=detail.instance_id, status=detail.status)
    if not is_terminal(detail.status):
        return {"completed": False}
    output = {"command_id": detail.command_id, "status": detail.status, "by": "event"}
    return {"completed": complete_waiter(runtime(), waiter_key(detail.command_id), output)}

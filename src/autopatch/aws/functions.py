"""The Lambda functions of the AWS deployment: name, handler, and the AWS actions its code calls.

``deploy/template.yaml`` is written from this registry: one function per entry, its IAM policy
granting exactly ``actions`` (scoped to the tables, the topic, the SSM document and the instances
there), and each state machine allowed to invoke the functions its definition names (``${<name>Arn}``
placeholders, filled by ``DefinitionSubstitutions``). ``tests/test_aws_functions.py`` runs every
handler under moto recording each AWS call it makes, and checks both ways that this list is true:
nothing called is missing, nothing listed is never called.

IAM names, not API names: a DynamoDB ``TransactWriteItems`` is authorised per item as ``PutItem``,
``UpdateItem``, ``DeleteItem`` or ``ConditionCheckItem``, and is listed so. SSM reboots go through
the SSM agent (``ssm:SendCommand`` with ``reboot.ps1``), not ``ec2:RebootInstances``: see
``fleet/ssm.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

_RUN = "autopatch.aws.run_handlers"
_OPS = "autopatch.aws.ops_handlers"

# DynamoDB, grouped by what the store does for a step (IAM names: see the module docstring).
_RUN_READ = ("dynamodb:GetItem", "dynamodb:Query")  # a run, its servers, items, attempts
_SCANS_READ = ("dynamodb:BatchGetItem",)  # the latest scans of several servers
_MOVE = ("dynamodb:PutItem", "dynamodb:UpdateItem")  # a KB's transition: its record put, its state updated
_RELEASE = ("dynamodb:DeleteItem",)  # a server's end releases its hold (a conditional delete)
_SCANS_WRITE = ("dynamodb:PutItem", "dynamodb:UpdateItem")  # scans kept, the latest ones updated
_CHECKED = ("dynamodb:ConditionCheckItem",)  # a plan stored, a run's status set: under conditions on other items
# Powertools idempotency: a conditional put, the result's update, a delete when the action failed.
_ONCE = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
# SsmFleet.list_instances: SSM's managed instances, EC2's records and AMIs, on-premises servers' tags.
_LIST_FLEET = (
    "ssm:DescribeInstanceInformation",
    "ec2:DescribeInstances",
    "ec2:DescribeImages",
    "ssm:ListTagsForResource",
)
_COMMAND = ("ssm:SendCommand", "ssm:GetCommandInvocation")

# Read only when the fleet is configured to keep full command output (fleet/ssm_output.py): a
# truncated output is then read back. The template adds these to every function that reads
# command output (``ssm:GetCommandInvocation``) when the setting is on.
OUTPUT_READ_ACTIONS = {
    "AUTOPATCH_SSM_OUTPUT_BUCKET": ("s3:GetObject",),
    "AUTOPATCH_SSM_CLOUDWATCH_OUTPUT": ("logs:FilterLogEvents",),
}


@dataclass(frozen=True, slots=True)
class LambdaFunction:
    """One deployed function: its logical id, its handler, the AWS actions its code calls, its time limit."""

    name: str  # the template's logical id, e.g. "PlanFunction"; state machines say ${PlanFunctionArn}
    handler: str  # module.function
    actions: frozenset[str]
    timeout_seconds: int = 60
    description: str = ""

    @property
    def placeholder(self) -> str:
        """How the state machine definitions name this function's ARN (a DefinitionSubstitutions key)."""
        return f"{self.name}Arn"


def _function(
    name: str, handler: str, *actions: str | tuple[str, ...], timeout: int = 60, description: str = ""
) -> LambdaFunction:
    flat = {action for group in actions for action in ((group,) if isinstance(group, str) else group)}
    return LambdaFunction(name, handler, frozenset(flat), timeout, description)


FUNCTIONS: tuple[LambdaFunction, ...] = (
    # A plan scans every server of the run and polls the scans inside the task: minutes, not seconds.
    _function(
        "PlanFunction",
        f"{_RUN}.plan",
        _RUN_READ,
        _SCANS_READ,
        _SCANS_WRITE,
        _CHECKED,
        "dynamodb:BatchWriteItem",
        _COMMAND,
        timeout=900,
    ),
    _function("GateFunction", f"{_RUN}.gate", _RUN_READ, "dynamodb:UpdateItem"),
    # --snapshot: EBS snapshots of the server before its first KB (fleet/ec2_snapshots.py); tagged at
    # creation (TagSpecifications), which IAM authorises as ec2:CreateTags on the new snapshots. The
    # record is written once under a condition on the run server; a failed one skips (and frees) it.
    _function(
        "SnapshotFunction",
        f"{_RUN}.snapshot",
        "dynamodb:GetItem",
        _MOVE,
        _CHECKED,
        _RELEASE,
        "ec2:DescribeInstances",
        "ec2:CreateSnapshots",
        "ec2:CreateTags",
        "ec2:DescribeSnapshots",
    ),
    # NextKb sends a KB nothing delays (SendInstall's work), RecordCommand settles (Settle's).
    _function("NextKbFunction", f"{_RUN}.next_kb", _RUN_READ, _MOVE, _ONCE, "ssm:SendCommand"),
    _function("SendInstallFunction", f"{_RUN}.send_install", _RUN_READ, _MOVE, _ONCE, "ssm:SendCommand"),
    _function("LookForSendFunction", f"{_RUN}.look_for_send", _RUN_READ, "dynamodb:UpdateItem", "ssm:ListCommands"),
    _function(
        "WaitCommandFunction",
        f"{_RUN}.wait_command",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
        "ssm:GetCommandInvocation",
        "states:SendTaskSuccess",
    ),
    _function("RecordCommandFunction", f"{_RUN}.record_command", _RUN_READ, _MOVE, "ssm:GetCommandInvocation"),
    _function("SettleFunction", f"{_RUN}.settle", _RUN_READ, _MOVE),
    _function("RebootFunction", f"{_RUN}.reboot", _RUN_READ, _SCANS_READ, _MOVE, _ONCE, "ssm:SendCommand"),
    # WaitOnline sends the verification scan as soon as the server answers.
    _function(
        "WaitOnlineFunction",
        f"{_RUN}.wait_online",
        _RUN_READ,
        _MOVE,
        "ssm:DescribeInstanceInformation",
        "ssm:SendCommand",
    ),
    # The verification scan is kept with its exposure history (a batch write of history items).
    _function(
        "VerifyFunction",
        f"{_RUN}.verify",
        _RUN_READ,
        _SCANS_READ,
        _MOVE,
        "dynamodb:BatchWriteItem",
        "ssm:GetCommandInvocation",
    ),
    _function(
        "FinishServerFunction", f"{_RUN}.finish_server", "dynamodb:Query", _SCANS_READ, "dynamodb:UpdateItem", _RELEASE
    ),
    _function("FailServerFunction", f"{_RUN}.fail_server", _RUN_READ, _MOVE, _RELEASE),
    # The final scan of every server, polled inside the task, then the exposure from the catalog (and
    # the exposure history the scans extend: scan_history.store_scans). A failed ring gate ends the run.
    _function(
        "FinishRunFunction",
        f"{_RUN}.finish_run",
        _RUN_READ,
        _SCANS_READ,
        _SCANS_WRITE,
        "dynamodb:BatchWriteItem",
        _CHECKED,
        _RELEASE,
        _LIST_FLEET,
        _COMMAND,
        timeout=900,
    ),
    _function("NotifyFunction", f"{_RUN}.notify", _RUN_READ, _ONCE, "sns:Publish"),
    # --rings: the gates' decisions between the Maps (engine/rings.py), and each server's checks.
    _function("NextRingFunction", f"{_RUN}.next_ring", _RUN_READ, "dynamodb:UpdateItem"),
    _function(
        "CheckMemberFunction",
        f"{_RUN}.check_member",
        _RUN_READ,
        "dynamodb:UpdateItem",
        "ssm:DescribeInstanceInformation",
        _COMMAND,
    ),
    _function("FailCheckFunction", f"{_RUN}.fail_check", "dynamodb:Query", "dynamodb:UpdateItem"),
    _function(
        "CommandEventsFunction",
        "autopatch.aws.command_events.handler",
        "dynamodb:DeleteItem",
        "states:SendTaskSuccess",
        description="EventBridge: EC2 Command Invocation Status-change Notification (terminal statuses)",
    ),
    # Discovery saves the fleet with a move of its change counter (read, then put in the same transaction).
    _function("DiscoverFunction", f"{_OPS}.discover", "dynamodb:GetItem", _MOVE, _LIST_FLEET),
    # A catalog update imports megabytes of MSRC documents (a month is thousands of items).
    _function(
        "CatalogUpdateFunction",
        f"{_OPS}.catalog_update",
        _RUN_READ,
        "dynamodb:BatchWriteItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        timeout=900,
        description="monthly schedule (after Patch Tuesday) and on demand",
    ),
    _function(
        "ScanFunction",
        f"{_OPS}.scan",
        _RUN_READ,
        _SCANS_READ,
        _SCANS_WRITE,
        "dynamodb:BatchWriteItem",  # the exposure history the scans extend (scan_history.store_scans)
        _LIST_FLEET,
        _COMMAND,
        timeout=900,
    ),
    _function("RebootInstanceFunction", f"{_OPS}.reboot", "dynamodb:GetItem", _LIST_FLEET, "ssm:SendCommand"),
    # Maintenance windows: a pass every minute starts, continues and takes over the windows' runs.
    _function(
        "SchedulerFunction",
        f"{_OPS}.schedule",
        _RUN_READ,
        _SCANS_READ,
        "dynamodb:BatchWriteItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        _LIST_FLEET,
        "states:StartExecution",
        description="EventBridge schedule: maintenance windows (autopatch scheduler --once)",
    ),
    # The HTTP API (the app of ``autopatch serve`` through Mangum): every route's store reads and
    # writes, the original's fleet discovery and catalog import, scans and reboots, runs handed to
    # Step Functions, catalog jobs handed to CatalogUpdateFunction. API Gateway stops waiting at 29 s.
    _function(
        "ApiFunction",
        "autopatch.aws.api_handler.handler",
        _RUN_READ,
        _SCANS_READ,
        _SCANS_WRITE,
        _CHECKED,
        _RELEASE,
        "dynamodb:BatchWriteItem",
        _LIST_FLEET,
        _COMMAND,
        "states:StartExecution",
        "lambda:InvokeFunction",
        timeout=29,
    ),
)

# The state machines and the functions their definitions invoke (the template grants lambda:InvokeFunction on these).
STATE_MACHINES: dict[str, str] = {
    "PatchRunStateMachine": "deploy/statemachines/patch_run.asl.json",
    "RetryKbStateMachine": "deploy/statemachines/retry_kb.asl.json",
}


def function_named(name: str) -> LambdaFunction:
    """The registry entry with this logical id (``KeyError`` naming it when there is none)."""
    for function in FUNCTIONS:
        if function.name == name:
            return function
    raise KeyError(f"no Lambda function {name!r} in autopatch.aws.functions")

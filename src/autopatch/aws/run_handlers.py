"""The Lambda entry points of the two patch-run state machines (``deploy/statemachines/*.asl.json``).

Each is a few lines: parse the task's input (pydantic, through Powertools' parser), call one task
of ``run_tasks``, ``install_tasks``, ``reboot_tasks``, ``ring_tasks``, ``check_tasks`` or
``snapshot_tasks`` with this container's runtime, and return
the small JSON the state machine routes on. Every exception propagates: Retry and Catch in the
definitions match on its class name (``StoreError``, ``TransientError``…), and whatever is left is
caught into FailServer, as the local engine fails one server and goes on with the others.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.typing import LambdaContext

from autopatch.aws import check_tasks, install_tasks, reboot_tasks, ring_tasks, run_tasks, snapshot_tasks
from autopatch.aws.run_models import (
    CheckTask,
    FailedCheck,
    FailedTask,
    RingTask,
    RunTask,
    ServerTask,
    StepTask,
    TokenTask,
)
from autopatch.aws.wiring import runtime

logger = Logger(service="autopatch")

Event = dict[str, Any]


def _step(event: Event) -> StepTask:
    task = parse(event=event, model=StepTask)
    logger.append_keys(run_id=task.run_id, instance_id=task.instance_id, kb=task.step.kb, phase=str(task.step.phase))
    return task


@logger.inject_lambda_context(clear_state=True)
def plan(event: Event, context: LambdaContext) -> Event:
    """Plan (if created unplanned) and start the run; its servers, concurrency and wait limits."""
    task = parse(event=event, model=RunTask)
    logger.append_keys(run_id=task.run_id)
    return run_tasks.plan(runtime(), task).model_dump(mode="json")


@logger.inject_lambda_context(clear_state=True)
def gate(event: Event, context: LambdaContext) -> Event:
    """May this server start (``--max-errors``)?"""
    return run_tasks.gate(runtime(), parse(event=event, model=ServerTask))


@logger.inject_lambda_context(clear_state=True)
def snapshot(event: Event, context: LambdaContext) -> Event:
    """``--snapshot``: one turn of the server's EBS snapshots before its first KB (started, skipped, or look again)."""
    task = parse(event=event, model=ServerTask)
    logger.append_keys(run_id=task.run_id, instance_id=task.instance_id)
    return snapshot_tasks.snapshot(runtime(), task).model_dump(mode="json")


@logger.inject_lambda_context(clear_state=True)
def next_kb(event: Event, context: LambdaContext) -> Event:
    """The server's next KB, sent now when nothing delays it, or what its latest attempt needs; or none."""
    task = parse(event=event, model=ServerTask)
    logger.append_keys(run_id=task.run_id, instance_id=task.instance_id)
    return install_tasks.next_kb(runtime(), task, context).model_dump(mode="json")


@logger.inject_lambda_context(clear_state=True)
def send_install(event: Event, context: LambdaContext) -> Event:
    """Record the attempt and send the install (once per attempt)."""
    return install_tasks.send_install(runtime(), _step(event), context).model_dump(mode="json")


@logger.inject_lambda_context(clear_state=True)
def look_for_send(event: Event, context: LambdaContext) -> Event:
    """Resolve a send of unknown fate by its token."""
    return install_tasks.look_for_send(runtime(), _step(event)).model_dump(mode="json")


@logger.inject_lambda_context(clear_state=True)
def wait_command(event: Event, context: LambdaContext) -> Event:
    """Store the task token for the command's end (``.waitForTaskToken``); complete it now if it has ended."""
    task = parse(event=event, model=TokenTask)
    logger.append_keys(run_id=task.run_id, instance_id=task.instance_id, command_id=task.step.command_id)
    return install_tasks.wait_command(runtime(), task)


@logger.inject_lambda_context(clear_state=True)
def record_command(event: Event, context: LambdaContext) -> Event:
    """Read the install command (GetCommandInvocation), record its end or its timeout, and settle it."""
    return install_tasks.record_command(runtime(), _step(event)).model_dump(mode="json")


@logger.inject_lambda_context(clear_state=True)
def settle(event: Event, context: LambdaContext) -> Event:
    """Make the stored verdict final: Success, Failed, or a reboot to come."""
    return install_tasks.settle(runtime(), _step(event)).model_dump(mode="json")


@logger.inject_lambda_context(clear_state=True)
def reboot(event: Event, context: LambdaContext) -> Event:
    """Reboot for the step's KB, or for the KBs waiting for the at-end reboot (once per attempts)."""
    return reboot_tasks.reboot(runtime(), _step(event), context).model_dump(mode="json")


@logger.inject_lambda_context(clear_state=True)
def wait_online(event: Event, context: LambdaContext) -> Event:
    """One look at a rebooting server: online (and its scan sent), or when to look again."""
    return reboot_tasks.wait_online(runtime(), _step(event)).model_dump(mode="json")


@logger.inject_lambda_context(clear_state=True)
def verify(event: Event, context: LambdaContext) -> Event:
    """Verify the KBs from a scan taken after the reboot, or look again."""
    return reboot_tasks.verify(runtime(), _step(event)).model_dump(mode="json")


@logger.inject_lambda_context(clear_state=True)
def finish_server(event: Event, context: LambdaContext) -> Event:
    """The server's end status from its KBs."""
    return run_tasks.finish_server(runtime(), parse(event=event, model=ServerTask))


@logger.inject_lambda_context(clear_state=True)
def fail_server(event: Event, context: LambdaContext) -> Event:
    """The Catch target: fail the server's KB in flight and the server, with the error."""
    task = parse(event=event, model=FailedTask)
    logger.append_keys(run_id=task.run_id, instance_id=task.instance_id, error=task.error.error)
    return run_tasks.fail_server(runtime(), task)


@logger.inject_lambda_context(clear_state=True)
def next_ring(event: Event, context: LambdaContext) -> Event:
    """``--rings``: after a ring's servers, a round of checks or a soak, what the run does next."""
    task = parse(event=event, model=RingTask)
    logger.append_keys(run_id=task.run_id, ring=task.ring.position, action=str(task.ring.action))
    return ring_tasks.next_ring(runtime(), task).model_dump(mode="json")


@logger.inject_lambda_context(clear_state=True)
def check_member(event: Event, context: LambdaContext) -> Event:
    """One look at one server of a ring's gate: online, its health script, or look again."""
    task = parse(event=event, model=CheckTask)
    logger.append_keys(run_id=task.run_id, instance_id=task.instance_id, ring=task.position)
    return check_tasks.check_member(runtime(), task).model_dump(mode="json")


@logger.inject_lambda_context(clear_state=True)
def fail_check(event: Event, context: LambdaContext) -> Event:
    """The Catch target of a server's check: its error recorded as the server's failed check."""
    task = parse(event=event, model=FailedCheck)
    logger.append_keys(run_id=task.run_id, instance_id=task.instance_id, ring=task.position, error=task.error.error)
    return check_tasks.fail_check(runtime(), task)


@logger.inject_lambda_context(clear_state=True)
def finish_run(event: Event, context: LambdaContext) -> Event:
    """Final scan, exposure after, and the run's status."""
    return run_tasks.finish_run(runtime(), parse(event=event, model=RunTask))


@logger.inject_lambda_context(clear_state=True)
def notify(event: Event, context: LambdaContext) -> Event:
    """The summary to the configured notifiers (once per run)."""
    return run_tasks.notify(runtime(), parse(event=event, model=RunTask), context)

"""One KB's install as Step Functions tasks: ``Engine._install``'s loop, one turn per task.

The local engine drives an attempt forward in a loop (send, look for a send of unknown fate, wait
for the command, record its end) and then settles the verdict. Here each turn is a task and the
state machine is the loop: every task reads the KB's latest attempt from the store, calls one step,
and answers the phase the state machine routes on. A task that finds the stored state is not the
one it was started for (a retry after its work was recorded) answers what is stored and does
nothing: the store, not the payload, says what is left to do.

A task whose next step needs no waiting takes it at once (NextKb sends, RecordCommand settles):
every state transition is paid for, and a task plus a Choice saved per step is what brings a KB
with its reboot from 19 transitions to 13.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from autopatch.aws.command_events import complete_waiter, waiter_key
from autopatch.aws.idempotency import once
from autopatch.aws.lease import keep_driving
from autopatch.aws.run_models import Phase, ServerTask, Step, StepTask, TokenTask
from autopatch.aws.wiring import Runtime
from autopatch.domain.fleet import CommandInvocation
from autopatch.domain.patching import KbState, RebootPolicy
from autopatch.domain.runs import Attempt, RunItem
from autopatch.engine import steps
from autopatch.engine.options import RunOptions
from autopatch.engine.windows import window_holds_server
from autopatch.errors import TransientError

_PHASES = {"sending": Phase.SENDING, "sent": Phase.SENT, "transient": Phase.TRANSIENT}


def run_options(runtime: Runtime, run_id: str) -> RunOptions:
    """The run's stored options (concurrency, ``--max-errors``, reboot policy), as the steps read them."""
    return RunOptions.from_dict(runtime.store.get_run(run_id).options)


def step_of(item: RunItem, attempt: Attempt | None) -> Step:
    """What the KB's latest attempt needs next: ``send``, ``sending``, ``sent``, ``transient`` or ``verdict``."""
    if item.state is not KbState.IN_PROGRESS:
        return Step(phase=Phase.DONE, kb=item.kb)
    if attempt is None:
        return Step(phase=Phase.SEND, kb=item.kb, attempt=1)
    phase = _PHASES.get(attempt.phase, Phase.VERDICT)  # done, reboot-pending, rebooting, awaiting-reboot
    return Step(phase=phase, kb=item.kb, attempt=attempt.attempt, command_id=attempt.command_id)


def _current(runtime: Runtime, task: StepTask) -> tuple[RunItem, Attempt | None]:
    if task.step.kb is None:
        raise ValueError(f"step {task.step.phase}: no KB named")
    item = runtime.store.run_item(task.run_id, task.instance_id, task.step.kb)
    return item, steps.latest_attempt(runtime.store, item)


def next_kb(runtime: Runtime, task: ServerTask, context: LambdaContext | None = None) -> Step:
    """The server's next KB (started now if Pending) and its phase; ``none`` when no KB is left.

    A KB to send now is sent in this task (``send_install``, once per attempt); one to send after a
    backoff is left to the Backoff Wait and SendInstall. An attempt that never ran is sent again
    after ``steps.resend_delay`` (the local engine's rule); a KB that step fails for good is passed
    over for the next one. A new KB is not started once the run's maintenance window has passed
    its cutoff (``windows.window_holds_server``, as the local engine asks): ``none`` and ``held``.
    """
    store, timing = runtime.store, runtime.timing
    keep_driving(runtime, task.run_id)
    options = run_options(runtime, task.run_id)
    now = datetime.fromtimestamp(runtime.clock(), UTC)
    while True:
        held = window_holds_server(store, task.run_id, task.instance_id, options.reboot, now)
        item = None if held else steps.next_kb(store, task.run_id, task.instance_id, options.reboot)
        if item is None:
            break
        last = steps.latest_attempt(store, item)
        if last is not None and last.phase != "transient":
            return step_of(item, last)
        resend = replace(options, poll=timing.retry_backoff, transient_retries=timing.transient_retries)
        delay = steps.resend_delay(store, item, resend)
        if delay is None:
            continue  # failed for good: the next KB
        number = last.attempt + 1 if last else 1
        step = Step(phase=Phase.SEND, kb=item.kb, attempt=number, delay=math.ceil(delay))
        if step.delay:
            return step
        return send_install(runtime, StepTask(run_id=task.run_id, instance_id=task.instance_id, step=step), context)
    at_end = options.reboot is RebootPolicy.ALWAYS_AT_END
    waiting = at_end and bool(steps.waiting_for_reboot(store, task.run_id, task.instance_id))
    return Step(phase=Phase.NONE, reboot=waiting, held=held)


def send_install(runtime: Runtime, task: StepTask, context: LambdaContext | None = None) -> Step:
    """Record the attempt, then send (``steps.send_install``), unless this attempt was already made.

    Once per (run, server, KB, attempt number): a repeat answers the first one's result.
    """

    def send() -> dict[str, Any]:
        item, last = _current(runtime, task)
        made = last.attempt if last else 0
        if item.state is not KbState.IN_PROGRESS or made != (task.step.attempt or 1) - 1:
            return step_of(item, last).model_dump(mode="json")  # the attempt exists: continue from it
        if last is not None and last.phase != "transient":
            return step_of(item, last).model_dump(mode="json")
        return step_of(item, steps.send_install(runtime.store, runtime.fleet, item)).model_dump(mode="json")

    key = {"run_id": task.run_id, "instance_id": task.instance_id, "kb": task.step.kb, "attempt": task.step.attempt}
    return Step.model_validate(once(runtime, "send_install", key, send, context))


def look_for_send(runtime: Runtime, task: StepTask) -> Step:
    """A send of unknown fate: ask the fleet by token a few times, a moment apart (inside this task).

    A Wait-state loop would cost three transitions per look for what takes seconds; the looks are
    the local engine's (``Engine._install``): three, two seconds apart, the last one deciding.
    """
    item, last = _current(runtime, task)
    if last is None or last.phase != "sending":
        return step_of(item, last)
    looks = runtime.timing.lookups if last.token else 1
    for look in range(looks):
        if look:
            runtime.sleep(runtime.timing.lookup_delay)
        if steps.look_for_send(runtime.store, runtime.fleet, item, last, last_look=look == looks - 1):
            break
    return step_of(item, steps.latest_attempt(runtime.store, item))


def wait_command(runtime: Runtime, task: TokenTask) -> dict[str, str]:
    """Keep the task token for the command's end; complete it at once if the command already ended.

    The token is stored first and the command read second: an event that came before the token
    was stored found nothing to complete, and this read catches what it said. Whichever of this
    task and the event handler takes the token completes it; the other finds nothing.
    """
    command_id = task.step.command_id
    if command_id is None:
        raise ValueError(f"step {task.step.phase}: no command to wait for")
    key = waiter_key(command_id)
    runtime.store.put_waiter(key, task.token)
    try:
        invocation = runtime.fleet.get_command(task.instance_id, command_id)
    except TransientError:  # a throttled read: the event, or the heartbeat's fallback, will tell
        return {"waiting": key}
    if invocation.status.is_terminal:
        complete_waiter(runtime, key, {"command_id": command_id, "status": str(invocation.status), "by": "wait"})
    return {"waiting": key}


def record_command(runtime: Runtime, task: StepTask) -> Step:
    """Read the command once, record its end (``steps.record_command``) and settle the verdict (``settle``).

    After an event the command has ended. After a wait's heartbeat or timeout it may still run:
    within the install timeout (counted from the send) the answer is ``sent`` and the workflow waits
    again; past it, the attempt is recorded as having no result, as the local engine does.
    """
    keep_driving(runtime, task.run_id)  # back from a wait of up to TimeoutSeconds
    item, last = _current(runtime, task)
    if last is None or last.phase != "sent" or last.command_id != task.step.command_id or last.command_id is None:
        return step_of(item, last)
    invocation: CommandInvocation | None
    try:
        invocation = runtime.fleet.get_command(task.instance_id, last.command_id)
    except TransientError:
        invocation = None
    timeout = runtime.timing.install_timeout
    if invocation is not None and invocation.status.is_terminal:
        steps.record_command(runtime.store, item, last, invocation, timeout)
    elif runtime.clock() - _epoch(last.sent_at, runtime.clock()) >= timeout:
        steps.record_command(runtime.store, item, last, None, timeout)
    else:
        return step_of(item, last)
    recorded = step_of(item, steps.latest_attempt(runtime.store, item))
    if recorded.phase is not Phase.VERDICT:
        return recorded
    return settle(runtime, task.model_copy(update={"step": recorded}))


def settle(runtime: Runtime, task: StepTask) -> Step:
    """The verdict made final (``steps.settle_install``): ``reboot`` when the KB waits for one now."""
    item, last = _current(runtime, task)
    current = step_of(item, last)
    if current.phase is not Phase.VERDICT or last is None:
        return current  # settled already (a repeat), or not installed yet: route on what is stored
    options = run_options(runtime, task.run_id)
    settled = steps.settle_install(runtime.store, item, last, options.reboot)
    phase = Phase.REBOOT if settled is steps.Settled.REBOOT else Phase.DONE
    return Step(phase=phase, kb=item.kb, attempt=last.attempt)


def _epoch(stamp: str | None, default: float) -> float:
    return datetime.fromisoformat(stamp).timestamp() if stamp else default

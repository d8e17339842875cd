"""What the patch-run state machines pass to their Lambda tasks, validated at the edge.

Each task receives the state of one server's iteration (``run_id``, ``instance_id`` and the
``step`` the previous task returned) and returns the next ``Step``. The state machine routes on
``step.phase`` only; everything else a step needs is read from the store, so a retried or
restarted task decides from the stored states, never from a stale payload.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from autopatch.domain.identifiers import parse_kb, parse_run_id
from autopatch.domain.instance_ids import parse_instance_id
from autopatch.errors import ValidationError


def _checked(parser: Any) -> Any:
    """A pydantic validator from one of AutoPatch's parsers (their ``ValidationError`` is not a ``ValueError``)."""

    def check(value: str) -> str:
        try:
            return str(parser(value))
        except ValidationError as exc:
            raise ValueError(str(exc)) from exc

    return check


RunId = Annotated[str, AfterValidator(_checked(parse_run_id))]
InstanceId = Annotated[str, AfterValidator(_checked(parse_instance_id))]
KbId = Annotated[str, AfterValidator(_checked(parse_kb))]
# SSM command ids are UUIDs; the simulator's too. Bounded: it becomes part of a store key.
CommandId = Annotated[str, Field(pattern=r"^[0-9A-Za-z-]{1,64}$")]


class Phase(StrEnum):
    """Where one server's iteration stands; the state machines' Choice states route on these values."""

    SEND = "send"  # no attempt yet, or the last one never ran: send one (after ``delay`` s)
    SENDING = "sending"  # a send of unknown fate: look for the command by its token
    SENT = "sent"  # the install runs: wait for its end
    VERDICT = "verdict"  # the install's verdict is stored: settle it
    TRANSIENT = "transient"  # the last attempt never ran: back to NextKb (retry limit, backoff)
    REBOOT = "reboot"  # installed, a reboot is needed now
    REBOOTING = "rebooting"  # the reboot was asked for: wait for the server (its command, when there is one)
    ONLINE = "online"  # the server answers: scan it
    OFFLINE = "offline"  # not yet: look again after ``delay`` s
    SCANNING = "scanning"  # a scan runs: wait for it, then verify
    AGAIN = "again"  # the scan does not prove the reboot yet: look again after ``delay`` s
    DONE = "done"  # nothing more for this KB (or reboot): take the next one
    NONE = "none"  # no KB left: the at-end reboot first when ``reboot``, then the server's end
    SNAPSHOT = "snapshot"  # --snapshot: the server's snapshots have not started yet: look again after ``delay`` s
    SKIPPED = "skipped"  # --snapshot: the snapshot failed, the server is skipped (nothing installed)


class Step(BaseModel):
    """One task's answer: the phase to route on and what the next task needs to name its subject."""

    model_config = ConfigDict(extra="ignore")

    phase: Phase
    kb: KbId | None = None
    attempt: int | None = Field(default=None, ge=1)  # send: the number the new attempt will get
    command_id: CommandId | None = None  # the command waited for (install, reboot or scan)
    delay: int = Field(default=0, ge=0)  # seconds the next Wait state waits
    deadline: float | None = None  # epoch seconds: waiting for a rebooted server gives up then
    polls: int = Field(default=0, ge=0)  # looks at a rebooting server so far (their delays grow)
    reboot: bool = False  # phase none: KBs wait for the at-end reboot
    held: bool = False  # phase none: the run's maintenance window takes no new KB; the server's end waits


class RunTask(BaseModel):
    """A run-level task (Plan, FinishRun, Notify)."""

    model_config = ConfigDict(extra="ignore")

    run_id: RunId


class ServerTask(RunTask):
    """A task of one server's iteration (Gate, FinishServer)."""

    instance_id: InstanceId


class StepTask(ServerTask):
    """A task that continues from the previous task's ``step``."""

    step: Step


class TokenTask(StepTask):
    """A ``.waitForTaskToken`` task: it stores its token and ends when someone sends it back."""

    token: str = Field(min_length=1, max_length=1024)


class TaskError(BaseModel):
    """What a Catch puts at ``ResultPath``: the error name and its cause (JSON text for Lambda errors)."""

    model_config = ConfigDict(populate_by_name=True)

    error: str = Field(alias="Error", max_length=256)
    cause: str = Field(default="", alias="Cause")

    def described(self) -> str:
        """``<error>: <message>``, worded as the local engine words an exception (a Lambda error's cause
        is JSON with ``errorMessage``; a States error's is plain text)."""
        try:
            parsed = json.loads(self.cause)
        except ValueError:
            return f"{self.error}: {self.cause}"
        message = parsed.get("errorMessage", self.cause) if isinstance(parsed, dict) else self.cause
        return f"{self.error}: {message}"


class FailedTask(ServerTask):
    """FailServer's input: the iteration's state with the caught error."""

    error: TaskError


class CheckTask(StepTask):
    """CheckMember's input: one server of the ring at ``position`` whose gate checks it, and the last look."""

    position: int = Field(ge=0)


class FailedCheck(ServerTask):
    """FailCheck's input: a server's check that ended in an error, to be recorded as the check's failure."""

    position: int = Field(ge=0)
    error: TaskError


class RingAction(StrEnum):
    """What a run with rings does next; the fleet run's RunOpen routes on these values."""

    PATCH = "patch"  # the Servers Map over ``servers`` (a ring's, or every unfinished one)
    CHECK = "check"  # the Checks Map over ``ring.members``: the gate's round of checks
    SOAK = "soak"  # the Soak Wait of ``ring.delay`` seconds, then NextRing again
    FINISH = "finish"  # FinishRun: every ring passed, a gate failed, the run was cancelled or held


class RingStep(BaseModel):
    """NextRing's answer (and Plan's first one): the action, and what NextRing needs to read it back.

    NextRing decides from the stored gates; the step only says what the workflow did last (a
    ring's servers patched, a round of checks run), which the gates alone cannot tell.
    """

    model_config = ConfigDict(extra="ignore")

    action: RingAction
    position: int | None = Field(default=None, ge=0)  # the ring (None: a run without rings, or a sweep)
    round: int = Field(default=0, ge=0, le=2)  # check: the gate's round
    members: list[InstanceId] = Field(default_factory=list)  # check: the servers to check
    delay: int = Field(default=0, ge=0)  # soak: seconds to wait before looking again
    sweep: bool = False  # patch: a cancelled run's last pass over its unfinished servers (their KBs cancelled)


class RingTask(RunTask):
    """NextRing's input: the run and what the workflow just did."""

    ring: RingStep


class WaitTimes(BaseModel):
    """How long a ``.waitForTaskToken`` task waits: the ``HeartbeatSecondsPath`` and ``TimeoutSecondsPath`` values."""

    heartbeat_seconds: int = Field(ge=1)
    timeout_seconds: int = Field(ge=2)


class PlanResult(BaseModel):
    """Plan's answer (and NextRing's): the servers to iterate over, how many at once, the waits' limits,
    and what the run does next (``ring``: its rings, or the one pass over every server of a run without)."""

    run_id: str
    kind: str
    finished: bool  # the run was already over: nothing to drive, nobody to notify again
    servers: list[str]  # ring.action patch: the Servers Map's items
    max_concurrency: int = Field(ge=1)
    timing: WaitTimes
    ring: RingStep

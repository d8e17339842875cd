"""The fleet simulator: a real adapter of the fleet port, for demos, capacity planning and tests.

Servers come from ``simulator_model`` (real build ladders from the catalog). Commands are
asynchronous and time-driven, as with SSM Run Command: ``send_*`` returns a command id at once and
the command finishes when enough *simulated* time has passed. Simulated time runs ``time_scale``
times faster than the wall clock, so tests either use a huge scale or a ``ManualClock``.

Commands settle lazily: whenever a server is touched, every command of it that is due is finished
in the order it finished in simulated time, so a scan sent after an unpolled install still sees it.
Outcomes that involve chance (install duration, random failure) are drawn when the command is
sent, from an RNG seeded by (seed, instance, KB, attempt), so a restart cannot change them.

The state lives in SQLite (``simulator_state``): with ``state_path`` a WAL file that several
processes may drive at once (a ``patch`` and a ``resume``), without it ``:memory:``. Every
operation is one transaction that reads the rows it needs, settles, applies itself and writes
back; nothing about a server is kept in memory between operations, so one process sees every
other's commands, installs and faults. Simulated time is a checkpoint in the file; a new
simulator opened on it after a crash continues in-flight commands, and the downtime counts,
because a real server keeps installing while the orchestrator is down.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from autopatch.domain.fleet import CommandInvocation, CommandStatus, Instance
from autopatch.domain.identifiers import parse_kb
from autopatch.domain.instance_ids import parse_instance_id
from autopatch.domain.rings import check_health_script
from autopatch.errors import NotFoundError, TransientError, ValidationError
from autopatch.fleet.simulator_model import (
    INSTALL_FAILURE_HRESULTS,
    CommandKind,
    ProductLadder,
    SimulatedCommand,
    SimulatedServer,
    SimulatorConfig,
    build_fleet,
    generate_fleet,
    install_update,
    load_ladders,
    scan_output,
    signed_hresult,
)
from autopatch.fleet.simulator_snapshots import SimulatedSnapshots
from autopatch.fleet.simulator_state import SimulatorState, StateTransaction
from autopatch.store.base import CatalogStore

__all__ = ["FleetSimulator", "ManualClock", "SimulatedServer", "SimulatorConfig", "build_fleet"]

# expected_completion answers a little late rather than early: a poll at exactly the due time could
# otherwise find the command still running after float rounding, and a ManualClock would then spin.
_COMPLETION_MARGIN_SECONDS = 0.001
_CUT_OFF = "the instance restarted while the command was running"
_NOT_DELIVERED = "DeliveryTimedOut: the SSM agent did not answer within the delivery timeout"

Result = TypeVar("Result")


class ManualClock:
    """A clock that moves only when told: deterministic time for tests and step-by-step demos."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FleetSimulator(SimulatedSnapshots):
    """A simulated fleet of Windows servers behind the ``FleetAdapter`` protocol (``fleet/base.py``).

    Opening an existing ``state_path`` resumes that fleet; ``config`` may then change timings and
    failure rates but not the fleet's shape (servers, seed, fractions, products). EBS snapshots are
    ``SimulatedSnapshots``'s (the fleet port's snapshot methods). Simulated time is
    measured on ``wall_clock``, the one clock every process opening the file reads alike; it
    defaults to ``time.time`` with the default clock and to ``clock`` itself when a clock is
    injected (a test's ``ManualClock`` stands in for both).
    """

    def __init__(
        self,
        store: CatalogStore,
        config: SimulatorConfig | None = None,
        *,
        state_path: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        self._lock = threading.RLock()  # one connection: one transaction at a time per simulator
        self._wall_clock = wall_clock or (time.time if clock is time.monotonic else clock)
        self._state = SimulatorState(state_path)
        try:
            stored = self._state.peek_config()
            self._check_shape(stored, config)
            self.config = config or stored or SimulatorConfig()
            products = self.config.products
            self._ladders: dict[str, ProductLadder] = load_ladders(store, products)
            # Built before the lock is taken (100,000 servers take a while) and thrown away if another
            # process creates the fleet first: the transaction in _open decides, not this guess.
            fleet = generate_fleet(self._ladders, self.config) if stored is None else None
            self.config = self._transaction(lambda tx: self._open(tx, config, fleet))
            if self.config.products != products:  # another process won the race with other products
                self._ladders = load_ladders(store, self.config.products)
        except BaseException:
            self._state.close()
            raise

    # --- opening -----------------------------------------------------------------------------------

    def _open(
        self, tx: StateTransaction, config: SimulatorConfig | None, fleet: list[SimulatedServer] | None
    ) -> SimulatorConfig:
        """Create the schema and the fleet, or load them if another process just did: one transaction."""
        self._state.ensure_schema(tx)
        stored = tx.stored_config()
        self._check_shape(stored, config)
        chosen = config or stored or self.config
        if stored is None:
            tx.insert_servers(fleet if fleet is not None else generate_fleet(self._ladders, chosen))
        tx.save_config(chosen)  # also writes the checkpoint: the downtime until now is counted
        return chosen

    def _check_shape(self, stored: SimulatorConfig | None, config: SimulatorConfig | None) -> None:
        if stored is not None and config is not None and config.fleet_shape() != stored.fleet_shape():
            raise ValidationError(
                "config",
                config.fleet_shape(),
                f"{self._state.path} holds a fleet built with {stored.fleet_shape()}: "
                "reopen it with the same shape, or delete the file to build a new fleet",
            )

    # --- one operation, one transaction ------------------------------------------------------------

    def _transaction(self, operation: Callable[[StateTransaction], Result]) -> Result:
        with self._lock:
            return self._state.transact(operation, self._wall_clock, self.config.time_scale)

    def _settle(self, tx: StateTransaction, instance_id: str) -> tuple[SimulatedServer, list[SimulatedCommand]]:
        """The server as it stands now, and its commands still running after settling."""
        server = tx.server(parse_instance_id(instance_id))
        return self._settle_server(tx, server, tx.running_commands(server.instance_id))

    def _settle_server(
        self, tx: StateTransaction, server: SimulatedServer, running: list[SimulatedCommand]
    ) -> tuple[SimulatedServer, list[SimulatedCommand]]:
        """Bring one server up to now: commands due, a shutdown, a boot, deliveries to an absent agent."""
        now = tx.now
        changed: dict[str, SimulatedCommand] = {}
        shutdown = server.reboot_at if server.reboot_at is not None and server.reboot_at <= now else None
        for command in sorted((c for c in running if c.status is CommandStatus.IN_PROGRESS), key=lambda c: c.due_at):
            if shutdown is not None and command.due_at > shutdown:  # Windows went down under it
                changed[command.command_id] = replace(command, status=CommandStatus.FAILED, exit_code=1, error=_CUT_OFF)
            elif command.due_at <= now:
                server, changed[command.command_id] = self._finish(server, command)
        rebooted = server.rebooting_until is not None and server.rebooting_until <= now
        if rebooted:
            booted = server.rebooting_until
            assert booted is not None
            server = replace(server, rebooting_until=None, reboot_at=None, pending_reboot=False, booted_at=booted)
        for command in (c for c in running if c.status is CommandStatus.PENDING):
            if command.due_at <= now:  # the agent stayed away for the whole delivery timeout
                changed[command.command_id] = replace(
                    command, status=CommandStatus.DELIVERY_TIMED_OUT, error=_NOT_DELIVERED
                )
            elif server.reachable(now):  # the agent is back: the command starts now
                changed[command.command_id] = self._delivered(command, now)
        if changed or rebooted:
            tx.save_commands(changed.values())
            tx.save_server(server)
        still = [changed.get(c.command_id, c) for c in running]
        return server, [c for c in still if not c.status.is_terminal]

    def _delivered(self, command: SimulatedCommand, now: float) -> SimulatedCommand:
        run = command.run_seconds if command.run_seconds is not None else command.duration
        duration = min(run, self.config.execution_timeout_seconds)
        return replace(command, status=CommandStatus.IN_PROGRESS, started_at=now, duration=duration)

    def _finish(self, server: SimulatedServer, command: SimulatedCommand) -> tuple[SimulatedServer, SimulatedCommand]:
        if command.run_seconds is not None and command.run_seconds > command.duration:
            error = f"killed by the execution timeout after {command.duration:.0f} s (the install needed longer)"
            return server, replace(command, status=CommandStatus.EXECUTION_TIMED_OUT, error=error)
        if command.kind is CommandKind.SCAN:
            output = scan_output(server, self._ladders.get(server.product))
            return server, replace(command, status=CommandStatus.SUCCESS, exit_code=0, output=output)
        if command.kind is CommandKind.HEALTH:
            return server, _health_check_result(server, command)
        assert command.kb is not None  # every install command names its KB
        ladder = self._ladders.get(server.product)
        server, outcome = install_update(server, ladder, command.kb, command.injected_hresult, command.random_hresult)
        status = CommandStatus.SUCCESS if outcome.exit_code == 0 else CommandStatus.FAILED
        error = "" if outcome.exit_code == 0 else outcome.message
        done = replace(command, status=status, exit_code=outcome.exit_code, output=outcome.output(), error=error)
        return server, done

    def _send(
        self,
        tx: StateTransaction,
        server: SimulatedServer,
        kind: CommandKind,
        kb: str | None,
        duration: float,
        injected_hresult: int | None = None,
        random_hresult: int | None = None,
        token: str | None = None,
    ) -> str:
        """Store a new command: running when the agent answers, Pending (until delivered or timed out) when not.

        A server in the middle of a restart refuses the send outright, as SSM answers
        InvalidInstanceId while the agent is down: a transient error, the send is retried later.
        """
        now = tx.now
        if server.online and server.restarting(now):
            raise TransientError(
                f"InvalidInstanceId: {server.instance_id} is restarting and its SSM agent is not connected"
            )
        bits = random.Random(f"{self.config.seed}/command/{tx.next_sequence()}").getrandbits(128)
        command_id = str(uuid.UUID(int=bits, version=4))
        command = SimulatedCommand(
            command_id,
            server.instance_id,
            kind,
            kb,
            now,
            self.config.delivery_timeout_seconds,
            CommandStatus.PENDING,
            injected_hresult=injected_hresult,
            random_hresult=random_hresult,
            token=token,
            run_seconds=duration,
        )
        if server.reachable(now):
            command = self._delivered(command, now)
        tx.insert_command(command)
        return command_id

    def _command_of(self, tx: StateTransaction, instance_id: str, command_id: str) -> SimulatedCommand:
        server, _ = self._settle(tx, instance_id)
        command = tx.command(command_id)
        if command is None or command.instance_id != server.instance_id:
            raise NotFoundError(f"command_id: {command_id!r} was not sent to {server.instance_id}")
        return command

    def _update_server(self, instance_id: str, change: Callable[[SimulatedServer], SimulatedServer]) -> None:
        def operation(tx: StateTransaction) -> None:
            server, _ = self._settle(tx, instance_id)
            tx.save_server(change(server))

        self._transaction(operation)

    # --- the FleetAdapter protocol -----------------------------------------------------------------

    def list_instances(self) -> list[Instance]:
        """Every simulated server in fleet order; ``online`` is whether it answers right now."""
        return self._transaction(lambda tx: [server.instance(tx.now) for server in self._settle_all(tx)])

    def _settle_all(self, tx: StateTransaction) -> list[SimulatedServer]:
        """Every server settled, from two reads: all servers and all running commands."""
        running = tx.all_running_commands()
        return [self._settle_server(tx, s, running.get(s.instance_id, []))[0] for s in tx.all_servers()]

    def send_scan(self, instance_id: str) -> str:
        """Start a scan that reports after ``scan_seconds`` of simulated time."""

        def operation(tx: StateTransaction) -> str:
            server, _ = self._settle(tx, instance_id)
            return self._send(tx, server, CommandKind.SCAN, None, self.config.scan_seconds)

        return self._transaction(operation)

    def send_install(self, instance_id: str, kb: str, token: str | None = None) -> str:
        """Start installing one KB; its duration and any random failure are drawn now, from the seed.

        Every accepted call counts in ``install_counts``, delivered or not, so a test can prove
        that a restarted engine re-polled a command instead of installing twice. The count (added
        in SQL, so concurrent processes never lose one), the command (with ``token``) and a
        consumed injected fault are written in one transaction.
        """
        canonical = parse_kb(kb)

        def operation(tx: StateTransaction) -> str:
            server, _ = self._settle(tx, instance_id)
            attempt = tx.count_install(server.instance_id, canonical)
            rng = random.Random(f"{self.config.seed}/install/{instance_id}/{canonical}/{attempt}")
            jitter = self.config.install_seconds_jitter
            duration = self.config.install_seconds_mean * (1 + rng.uniform(-jitter, jitter))
            if server.install_seconds is not None:
                duration = server.install_seconds
            random_hresult = rng.choice(INSTALL_FAILURE_HRESULTS) if rng.random() < self.config.failure_rate else None
            # An undelivered command does not use up the fault.
            injected = tx.injected_failure(server.instance_id, canonical) if server.reachable(tx.now) else None
            if injected is not None:
                tx.use_injected_failure(server.instance_id, canonical)
            return self._send(
                tx,
                server,
                CommandKind.INSTALL,
                canonical,
                duration,
                injected_hresult=injected[0] if injected else None,
                random_hresult=random_hresult,
                token=token,
            )

        return self._transaction(operation)

    def find_command(self, instance_id: str, token: str, since: datetime | None = None) -> str | None:
        """The id of the command sent to this server with ``token``, or None if none was (``since``: unused)."""
        canonical = parse_instance_id(instance_id)
        return self._transaction(lambda tx: tx.command_id_by_token(tx.server(canonical).instance_id, token))

    def expected_completion(self, instance_id: str, command_id: str) -> float | None:
        """Real seconds until the command finishes (0 once it has): the simulator knows exactly."""

        def operation(tx: StateTransaction) -> float:
            command = self._command_of(tx, instance_id, command_id)
            if command.status.is_terminal:
                return 0.0
            remaining = (command.due_at - tx.now) / self.config.time_scale
            return max(0.0, remaining) + _COMPLETION_MARGIN_SECONDS

        return self._transaction(operation)

    def expected_online(self, instance_id: str) -> float | None:
        """Real seconds until a rebooting server is back (0 when online, None if it never returns)."""

        def operation(tx: StateTransaction) -> float | None:
            server, _ = self._settle(tx, instance_id)
            if server.rebooting_until is None:
                return 0.0 if server.online else None
            if server.reboot_never_returns:
                return None
            remaining = (server.rebooting_until - tx.now) / self.config.time_scale
            return max(0.0, remaining) + _COMPLETION_MARGIN_SECONDS

        return self._transaction(operation)

    def get_command(self, instance_id: str, command_id: str) -> CommandInvocation:
        """The command as it stands now; InProgress until its simulated duration has passed."""
        return self._transaction(lambda tx: self._command_of(tx, instance_id, command_id).invocation())

    def reboot(self, instance_id: str) -> str | None:
        """Restart cleanly: Windows goes down ``shutdown_seconds`` later, for ``reboot_seconds``, then boots.

        Until it goes down it still answers (and a scan then still shows the old boot time); a
        command running at that moment is cut off (Failed, no effect). A restart already under way
        is not asked for twice.
        """

        def operation(tx: StateTransaction) -> None:
            server, _ = self._settle(tx, instance_id)
            if server.rebooting_until is not None:
                return
            down = tx.now + self.config.shutdown_seconds
            until = math.inf if server.reboot_never_returns else down + self.config.reboot_seconds
            tx.save_server(replace(server, reboot_at=down, rebooting_until=until))

        self._transaction(operation)
        return None

    def send_health_check(self, instance_id: str, script: str) -> str:
        """Start a ring gate's health-check script; it ends after ``scan_seconds`` of simulated time.

        The script is checked as the SSM adapter checks it, not interpreted: it exits 1 on the
        servers of ``health_check_failing_servers`` (decided now, from the config) and 0 elsewhere.
        """
        check_health_script(script)

        def operation(tx: StateTransaction) -> str:
            server, _ = self._settle(tx, instance_id)
            exit_code = 1 if server.instance_id in self.config.health_check_failing_servers else 0
            seconds = self.config.scan_seconds
            return self._send(tx, server, CommandKind.HEALTH, None, seconds, injected_hresult=exit_code)

        return self._transaction(operation)

    def is_online(self, instance_id: str) -> bool:
        """SSM's PingStatus: the agent answers — or went down less than ``heartbeat_lag_seconds`` ago."""
        return self._transaction(lambda tx: self._heartbeat(self._settle(tx, instance_id)[0], tx.now))

    def _heartbeat(self, server: SimulatedServer, now: float) -> bool:
        if server.reachable(now):
            return True
        down_since = server.reboot_at
        return server.online and down_since is not None and now < down_since + self.config.heartbeat_lag_seconds

    # --- fault injection and inspection ------------------------------------------------------------

    def inject_failure(self, instance_id: str, kb: str, hresult: int, *, times: int | None = 1) -> None:
        """Make the next ``times`` installs of ``kb`` on this server fail with ``hresult`` (None: all)."""
        canonical = parse_kb(kb)
        signed = signed_hresult(hresult)
        if times is not None and times < 1:
            raise ValidationError("times", times, "at least one install must fail, or None for every install")
        server_id = parse_instance_id(instance_id)
        self._transaction(lambda tx: tx.inject_failure(tx.server(server_id).instance_id, canonical, signed, times))

    def set_online(self, instance_id: str, online: bool) -> None:
        """Take the server's agent off the network or bring it back; back online also ends a stuck reboot.

        Commands already running keep running and report when due (the server is still patching;
        only new commands become Undeliverable).
        """

        def change(server: SimulatedServer) -> SimulatedServer:
            if online and server.rebooting_until is not None:  # it booted after all
                server = replace(server, rebooting_until=None, reboot_at=None, pending_reboot=False)
            return replace(server, online=online)

        self._update_server(instance_id, change)

    def set_reboot_never_returns(self, instance_id: str, never_returns: bool = True) -> None:
        """From the next reboot on, the server stays offline until ``set_online(instance_id, True)``."""
        self._update_server(instance_id, lambda server: replace(server, reboot_never_returns=never_returns))

    def set_install_seconds(self, instance_id: str, seconds: float | None) -> None:
        """Fix the simulated duration of this server's next installs (None: back to the configured draw)."""
        if seconds is not None and not seconds >= 0:
            raise ValidationError("seconds", seconds, "an install duration is zero or more simulated seconds")
        self._update_server(instance_id, lambda server: replace(server, install_seconds=seconds))

    @property
    def install_counts(self) -> dict[tuple[str, str], int]:
        """Install commands sent per (instance id, KB), by every process, across restarts of a persisted fleet."""
        return self._transaction(lambda tx: tx.install_counts())

    @property
    def servers(self) -> list[SimulatedServer]:
        """Every server as it stands now (due commands and reboots settled), in fleet order."""
        return self._transaction(self._settle_all)

    def server(self, instance_id: str) -> SimulatedServer:
        return self._transaction(lambda tx: self._settle(tx, instance_id)[0])

    @property
    def simulated_time(self) -> float:
        """Simulated seconds since the fleet was built (downtime between openings included)."""
        return self._transaction(lambda tx: tx.now)

    def close(self) -> None:
        with self._lock:
            self._state.close()

    def __enter__(self) -> FleetSimulator:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _health_check_result(server: SimulatedServer, command: SimulatedCommand) -> SimulatedCommand:
    """A health check's end: the exit code decided when it was sent, and a line saying so."""
    exit_code = command.injected_hresult or 0
    if exit_code == 0:
        return replace(command, status=CommandStatus.SUCCESS, exit_code=0, output=f"{server.name}: healthy\n")
    output = f"{server.name}: unhealthy (a simulated health-check failure)\n"
    return replace(command, status=CommandStatus.FAILED, exit_code=exit_code, output=output, error="exit code 1")

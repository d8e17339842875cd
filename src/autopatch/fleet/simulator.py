"""The fleet simulator: a real adapter of the fleet port, for demos, capacity planning and tests.

Servers come from ``simulator_model`` (real build ladders from the catalog). Commands are
asynchronous and time-driven, as with SSM Run Command: ``send_*`` returns a command id at once and
the command finishes when enough *simulated* time has passed. Simulated time runs ``time_scale``
times faster than the injected ``clock``, so tests either use a huge scale or a ``ManualClock``.

Commands settle lazily: whenever a server is touched, every command of it that is due is finished
in the order it finished in simulated time, so a scan sent after an unpolled install still sees it.
Outcomes that involve chance (install duration, random failure) are drawn when the command is
sent, from an RNG seeded by (seed, instance, KB, attempt), so a restart cannot change them.

With ``state_path`` the whole state lives in a SQLite file (WAL), written in one transaction per
operation, so a new simulator opened on the same file after a crash continues in-flight commands.
Simulated time is persisted as a checkpoint (simulated seconds, wall-clock seconds): on reopening,
the downtime measured on ``wall_clock`` is added, because a real server keeps installing while
the orchestrator is down.
"""

from __future__ import annotations

import math
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from autopatch.domain.fleet import CommandInvocation, CommandStatus, Instance
from autopatch.domain.identifiers import parse_kb
from autopatch.domain.instance_ids import parse_instance_id
from autopatch.errors import NotFoundError, StoreError, ValidationError
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
from autopatch.store.base import CatalogStore

__all__ = ["FleetSimulator", "ManualClock", "SimulatedServer", "SimulatorConfig", "build_fleet"]

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE servers (
    instance_id TEXT PRIMARY KEY, name TEXT NOT NULL, computer_name TEXT NOT NULL,
    product TEXT NOT NULL, edition TEXT NOT NULL, environment TEXT NOT NULL, ip_address TEXT NOT NULL,
    ami_id TEXT NOT NULL, ami_name TEXT NOT NULL, build TEXT NOT NULL, installed_kbs TEXT NOT NULL,
    pending_reboot INTEGER NOT NULL, online INTEGER NOT NULL, rebooting_until REAL,
    reboot_never_returns INTEGER NOT NULL, install_seconds REAL, position INTEGER NOT NULL
);
CREATE TABLE commands (
    command_id TEXT PRIMARY KEY, instance_id TEXT NOT NULL, kind TEXT NOT NULL, kb TEXT,
    started_at REAL NOT NULL, duration REAL NOT NULL, status TEXT NOT NULL, injected_hresult INTEGER,
    random_hresult INTEGER, exit_code INTEGER, output TEXT NOT NULL, error TEXT NOT NULL, token TEXT
);
CREATE TABLE install_counts (
    instance_id TEXT NOT NULL, kb TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (instance_id, kb)
);
CREATE TABLE injected_failures (
    instance_id TEXT NOT NULL, kb TEXT NOT NULL, hresult INTEGER NOT NULL, remaining INTEGER,
    PRIMARY KEY (instance_id, kb)
)
"""
_SCHEMA_VERSION = 1
_INSERT_SERVER = "INSERT OR REPLACE INTO servers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_COMMAND = "INSERT OR REPLACE INTO commands VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# expected_completion answers a little late rather than early: a poll at exactly the due time could
# otherwise find the command still running after float rounding, and a ManualClock would then spin.
_COMPLETION_MARGIN_SECONDS = 0.001


class ManualClock:
    """A clock that moves only when told: deterministic time for tests and step-by-step demos."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# The tables' columns are the dataclasses' fields in order (servers add their position last).
_SERVER_FIELDS = tuple(field.name for field in fields(SimulatedServer))
_COMMAND_FIELDS = tuple(field.name for field in fields(SimulatedCommand))


def _server_row(position: int, server: SimulatedServer) -> tuple[object, ...]:
    values = [getattr(server, name) for name in _SERVER_FIELDS]
    values[_SERVER_FIELDS.index("installed_kbs")] = " ".join(server.installed_kbs)
    return (*values, position)


def _server_from_row(row: tuple[Any, ...]) -> SimulatedServer:
    values = dict(zip(_SERVER_FIELDS, row[:-1], strict=True))  # the last column is the position
    values["installed_kbs"] = tuple(values["installed_kbs"].split())
    for flag in ("pending_reboot", "online", "reboot_never_returns"):
        values[flag] = bool(values[flag])
    return SimulatedServer(**values)


def _command_row(command: SimulatedCommand) -> tuple[object, ...]:
    return tuple(getattr(command, name) for name in _COMMAND_FIELDS)


def _command_from_row(row: tuple[Any, ...]) -> SimulatedCommand:
    values = dict(zip(_COMMAND_FIELDS, row, strict=True))
    return SimulatedCommand(
        **{**values, "kind": CommandKind(values["kind"]), "status": CommandStatus(values["status"])}
    )


class _StateFile:
    """The simulator's SQLite file (``:memory:`` without a path); sqlite3 errors become StoreError."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = str(path) if path is not None else ":memory:"
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self.db.execute("PRAGMA busy_timeout = 5000")
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                with self.transaction():
                    for statement in _SCHEMA.split(";"):
                        self.db.execute(statement)
                    self.db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            elif version != _SCHEMA_VERSION:
                raise StoreError(f"{self.path} is simulator state version {version}; expected {_SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the simulator state {self.path}: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"simulator state write failed ({self.path}): {exc}") from exc

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return self.db.execute(sql).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"simulator state read failed ({self.path}): {exc}") from exc

    def meta(self) -> dict[str, str]:
        return {str(key): str(value) for key, value in self.rows("SELECT key, value FROM meta")}

    def close(self) -> None:
        self.db.close()


class FleetSimulator:
    """A simulated fleet of Windows servers behind the ``FleetAdapter`` protocol (``fleet/base.py``).

    Opening an existing ``state_path`` resumes that fleet; ``config`` may then change timings and
    failure rates but not the fleet's shape (servers, seed, fractions, products). ``wall_clock``
    measures downtime between openings; it defaults to ``time.time`` with the default clock and to
    ``clock`` itself when a clock is injected (a test's ``ManualClock`` stands in for both).
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
        self._lock = threading.RLock()
        self._clock = clock
        self._wall_clock = wall_clock or (time.time if clock is time.monotonic else clock)
        self._state = _StateFile(state_path)
        meta = self._state.meta()
        stored = SimulatorConfig.model_validate_json(meta["config"]) if "config" in meta else None
        if stored is not None and config is not None and config.fleet_shape() != stored.fleet_shape():
            raise ValidationError(
                "config",
                config.fleet_shape(),
                f"{self._state.path} holds a fleet built with {stored.fleet_shape()}: "
                "reopen it with the same shape, or delete the file to build a new fleet",
            )
        self.config = config or stored or SimulatorConfig()
        self._ladders: dict[str, ProductLadder] = load_ladders(store, self.config.products)
        self._servers: dict[str, SimulatedServer] = {}
        self._positions: dict[str, int] = {}  # fleet order, the servers table's ORDER BY
        self._commands: dict[str, SimulatedCommand] = {}
        self._running: dict[str, list[str]] = {}  # instance → ids of commands not yet finished
        self._tokens: dict[tuple[str, str], str] = {}  # (instance, token) → command id
        self._install_counts: dict[tuple[str, str], int] = {}
        self._injected: dict[tuple[str, str], tuple[int, int | None]] = {}  # → (hresult, remaining or None)
        self._sequence = int(meta.get("sequence", "0"))
        resumed = 0.0
        if "sim_time" in meta:
            downtime = max(0.0, self._wall_clock() - float(meta["wall_time"]))
            resumed = float(meta["sim_time"]) + downtime * self.config.time_scale
        self._sim_origin = resumed
        self._clock_origin = clock()
        if stored is None:
            self._create(generate_fleet(self._ladders, self.config))
        else:
            self._load()
            with self._state.transaction() as db:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('config', ?)", (self.config.model_dump_json(),))
                self._checkpoint(db)

    # --- state -----------------------------------------------------------------------------------

    def _create(self, servers: list[SimulatedServer]) -> None:
        self._servers = {server.instance_id: server for server in servers}
        self._positions = {server.instance_id: position for position, server in enumerate(servers)}
        with self._state.transaction() as db:  # one bulk insert: 100,000 servers in about a second
            db.executemany(_INSERT_SERVER, (_server_row(i, server) for i, server in enumerate(servers)))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('config', ?)", (self.config.model_dump_json(),))
            self._checkpoint(db)

    def _load(self) -> None:
        for position, row in enumerate(self._state.rows("SELECT * FROM servers ORDER BY position")):
            server = _server_from_row(row)
            self._servers[server.instance_id] = server
            self._positions[server.instance_id] = position
        for row in self._state.rows("SELECT * FROM commands ORDER BY started_at"):
            command = _command_from_row(row)
            self._commands[command.command_id] = command
            if command.token is not None:
                self._tokens[(command.instance_id, command.token)] = command.command_id
            if not command.status.is_terminal:
                self._running.setdefault(command.instance_id, []).append(command.command_id)
        for instance_id, kb, count in self._state.rows("SELECT instance_id, kb, count FROM install_counts"):
            self._install_counts[(instance_id, kb)] = count
        for instance_id, kb, hresult, remaining in self._state.rows("SELECT * FROM injected_failures"):
            self._injected[(instance_id, kb)] = (hresult, remaining)

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            [
                ("sim_time", repr(self._now())),
                ("wall_time", repr(self._wall_clock())),
                ("sequence", str(self._sequence)),
            ],
        )

    def _save(
        self,
        servers: list[SimulatedServer],
        commands: list[SimulatedCommand],
        statements: list[tuple[str, tuple[object, ...]]] | None = None,
    ) -> None:
        """Write changed servers and commands (and any extra statements) in one transaction."""
        with self._state.transaction() as db:
            db.executemany(_INSERT_SERVER, (_server_row(self._positions[s.instance_id], s) for s in servers))
            db.executemany(_INSERT_COMMAND, (_command_row(command) for command in commands))
            for sql, parameters in statements or ():
                db.execute(sql, parameters)
            self._checkpoint(db)
        # Memory follows the file only once the write committed, so a failed write changes nothing.
        for server in servers:
            self._servers[server.instance_id] = server
        for command in commands:
            self._commands[command.command_id] = command

    def _now(self) -> float:
        return self._sim_origin + (self._clock() - self._clock_origin) * self.config.time_scale

    def _server(self, instance_id: str) -> SimulatedServer:
        server = self._servers.get(parse_instance_id(instance_id))
        if server is None:
            raise NotFoundError(f"instance_id: {instance_id!r} is not a server of this simulated fleet")
        return server

    def _settle(self, instance_id: str) -> SimulatedServer:
        """Finish every due command of one server in simulated-time order, then a due reboot."""
        server = self._server(instance_id)
        instance_id = server.instance_id
        now = self._now()
        due = [self._commands[cid] for cid in self._running.get(instance_id, [])]
        due = sorted((command for command in due if command.due_at <= now), key=lambda c: c.due_at)
        finished: list[SimulatedCommand] = []
        for command in due:
            server, done = self._finish(server, command)
            finished.append(done)
        rebooted = server.rebooting_until is not None and server.rebooting_until <= now
        if rebooted:
            server = replace(server, rebooting_until=None, pending_reboot=False)
        if finished or rebooted:
            self._save([server], finished)
            for done in finished:
                self._running[instance_id].remove(done.command_id)
        return server

    def _finish(self, server: SimulatedServer, command: SimulatedCommand) -> tuple[SimulatedServer, SimulatedCommand]:
        if command.kind is CommandKind.SCAN:
            output = scan_output(server, self._ladders.get(server.product))
            return server, replace(command, status=CommandStatus.SUCCESS, exit_code=0, output=output)
        assert command.kb is not None  # every install command names its KB
        ladder = self._ladders.get(server.product)
        server, outcome = install_update(server, ladder, command.kb, command.injected_hresult, command.random_hresult)
        status = CommandStatus.SUCCESS if outcome.exit_code == 0 else CommandStatus.FAILED
        error = "" if outcome.exit_code == 0 else outcome.message
        done = replace(command, status=status, exit_code=outcome.exit_code, output=outcome.output(), error=error)
        return server, done

    def _command(
        self,
        server: SimulatedServer,
        kind: CommandKind,
        kb: str | None,
        duration: float,
        injected_hresult: int | None = None,
        random_hresult: int | None = None,
        token: str | None = None,
    ) -> SimulatedCommand:
        """A new command: running when the server answers, Undeliverable at once when it does not."""
        self._sequence += 1
        bits = random.Random(f"{self.config.seed}/command/{self._sequence}").getrandbits(128)
        command_id = str(uuid.UUID(int=bits, version=4))
        now = self._now()
        if not server.reachable(now):  # SSM cannot deliver to an instance whose agent does not answer
            error = f"{server.instance_id} is not reachable: its SSM agent is offline"
            return SimulatedCommand(
                command_id,
                server.instance_id,
                kind,
                kb,
                now,
                0.0,
                CommandStatus.UNDELIVERABLE,
                error=error,
                token=token,
            )
        return SimulatedCommand(
            command_id,
            server.instance_id,
            kind,
            kb,
            now,
            duration,
            CommandStatus.IN_PROGRESS,
            injected_hresult=injected_hresult,
            random_hresult=random_hresult,
            token=token,
        )

    def _start(self, command: SimulatedCommand, statements: list[tuple[str, tuple[object, ...]]] | None = None) -> str:
        self._save([], [command], statements)
        if command.token is not None:
            self._tokens[(command.instance_id, command.token)] = command.command_id
        if command.status is CommandStatus.IN_PROGRESS:
            self._running.setdefault(command.instance_id, []).append(command.command_id)
        return command.command_id

    # --- the FleetAdapter protocol ---------------------------------------------------------------

    def list_instances(self) -> list[Instance]:
        """Every simulated server in fleet order; ``online`` is whether it answers right now."""
        with self._lock:
            return [self._settle(instance_id).instance(self._now()) for instance_id in list(self._servers)]

    def send_scan(self, instance_id: str) -> str:
        """Start a scan that reports after ``scan_seconds`` of simulated time."""
        with self._lock:
            server = self._settle(instance_id)
            return self._start(self._command(server, CommandKind.SCAN, None, self.config.scan_seconds))

    def send_install(self, instance_id: str, kb: str, token: str | None = None) -> str:
        """Start installing one KB; its duration and any random failure are drawn now, from the seed.

        Every accepted call counts in ``install_counts``, delivered or not, so a test can prove
        that a restarted engine re-polled a command instead of installing twice. The count, the
        command (with ``token``) and a consumed injected fault are written in one transaction.
        """
        canonical = parse_kb(kb)
        with self._lock:
            server = self._settle(instance_id)
            key = (server.instance_id, canonical)
            attempt = self._install_counts.get(key, 0) + 1
            rng = random.Random(f"{self.config.seed}/install/{instance_id}/{canonical}/{attempt}")
            jitter = self.config.install_seconds_jitter
            duration = self.config.install_seconds_mean * (1 + rng.uniform(-jitter, jitter))
            if server.install_seconds is not None:
                duration = server.install_seconds
            random_hresult = rng.choice(INSTALL_FAILURE_HRESULTS) if rng.random() < self.config.failure_rate else None
            statements: list[tuple[str, tuple[object, ...]]] = [
                ("INSERT OR REPLACE INTO install_counts VALUES (?, ?, ?)", (*key, attempt))
            ]
            injected = self._injected.get(key) if server.reachable(self._now()) else None
            remaining: tuple[int, int | None] | None = None  # the fault left after this install, if any
            if injected is not None:  # an undelivered command does not use up the fault
                left = None if injected[1] is None else injected[1] - 1
                if left is None or left > 0:
                    remaining = (injected[0], left)
                    sql = "UPDATE injected_failures SET remaining = ? WHERE instance_id = ? AND kb = ?"
                    statements.append((sql, (left, *key)))
                else:
                    statements.append(("DELETE FROM injected_failures WHERE instance_id = ? AND kb = ?", key))
            command = self._command(
                server,
                CommandKind.INSTALL,
                canonical,
                duration,
                injected_hresult=injected[0] if injected else None,
                random_hresult=random_hresult,
                token=token,
            )
            command_id = self._start(command, statements)
            self._install_counts[key] = attempt
            if remaining is not None:
                self._injected[key] = remaining
            elif injected is not None:
                del self._injected[key]
            return command_id

    def find_command(self, instance_id: str, token: str) -> str | None:
        """The id of the command sent to this server with ``token``, or None if none was."""
        with self._lock:
            return self._tokens.get((self._server(instance_id).instance_id, token))

    def expected_completion(self, instance_id: str, command_id: str) -> float | None:
        """Real seconds until the command finishes (0 once it has): the simulator knows exactly."""
        with self._lock:
            command = self._command_of(instance_id, command_id)
            if command.status.is_terminal:
                return 0.0
            remaining = (command.due_at - self._now()) / self.config.time_scale
            return max(0.0, remaining) + _COMPLETION_MARGIN_SECONDS

    def expected_online(self, instance_id: str) -> float | None:
        """Real seconds until a rebooting server is back (0 when online, None if it never returns)."""
        with self._lock:
            server = self._settle(instance_id)
            if server.rebooting_until is None:
                return 0.0 if server.online else None
            if server.reboot_never_returns:
                return None
            remaining = (server.rebooting_until - self._now()) / self.config.time_scale
            return max(0.0, remaining) + _COMPLETION_MARGIN_SECONDS

    def get_command(self, instance_id: str, command_id: str) -> CommandInvocation:
        """The command as it stands now; InProgress until its simulated duration has passed."""
        with self._lock:
            return self._command_of(instance_id, command_id).invocation()

    def _command_of(self, instance_id: str, command_id: str) -> SimulatedCommand:
        instance_id = self._settle(instance_id).instance_id
        command = self._commands.get(command_id)
        if command is None or command.instance_id != instance_id:
            raise NotFoundError(f"command_id: {command_id!r} was not sent to {instance_id}")
        return command

    def reboot(self, instance_id: str) -> None:
        """Restart the server: offline for ``reboot_seconds``, then online with no reboot pending.

        A command still running is cut off (Failed, no effect), as a restart mid-install would.
        """
        with self._lock:
            server = self._settle(instance_id)
            now = self._now()
            error = "the instance restarted while the command was running"
            cut = [
                replace(self._commands[command_id], status=CommandStatus.FAILED, exit_code=1, error=error)
                for command_id in self._running.get(server.instance_id, [])
            ]
            until = math.inf if server.reboot_never_returns else now + self.config.reboot_seconds
            self._save([replace(server, rebooting_until=until)], cut)
            self._running.pop(server.instance_id, None)

    def is_online(self, instance_id: str) -> bool:
        """Whether the server answers: administratively online and not in the middle of a reboot."""
        with self._lock:
            return self._settle(instance_id).reachable(self._now())

    # --- fault injection and inspection ----------------------------------------------------------

    def inject_failure(self, instance_id: str, kb: str, hresult: int, *, times: int | None = 1) -> None:
        """Make the next ``times`` installs of ``kb`` on this server fail with ``hresult`` (None: all)."""
        canonical = parse_kb(kb)
        signed = signed_hresult(hresult)
        if times is not None and times < 1:
            raise ValidationError("times", times, "at least one install must fail, or None for every install")
        with self._lock:
            instance_id = self._server(instance_id).instance_id
            sql = "INSERT OR REPLACE INTO injected_failures VALUES (?, ?, ?, ?)"
            self._save([], [], [(sql, (instance_id, canonical, signed, times))])
            self._injected[(instance_id, canonical)] = (signed, times)

    def set_online(self, instance_id: str, online: bool) -> None:
        """Take the server's agent off the network or bring it back; back online also ends a stuck reboot.

        Commands already running keep running and report when due (the server is still patching;
        only new commands become Undeliverable).
        """
        with self._lock:
            server = self._settle(instance_id)
            if online and server.rebooting_until is not None:
                server = replace(server, rebooting_until=None, pending_reboot=False)
            self._save([replace(server, online=online)], [])

    def set_reboot_never_returns(self, instance_id: str, never_returns: bool = True) -> None:
        """From the next reboot on, the server stays offline until ``set_online(instance_id, True)``."""
        with self._lock:
            self._save([replace(self._settle(instance_id), reboot_never_returns=never_returns)], [])

    def set_install_seconds(self, instance_id: str, seconds: float | None) -> None:
        """Fix the simulated duration of this server's next installs (None: back to the configured draw)."""
        if seconds is not None and not seconds >= 0:
            raise ValidationError("seconds", seconds, "an install duration is zero or more simulated seconds")
        with self._lock:
            self._save([replace(self._settle(instance_id), install_seconds=seconds)], [])

    @property
    def install_counts(self) -> dict[tuple[str, str], int]:
        """Install commands sent per (instance id, KB), across restarts of a persisted fleet."""
        with self._lock:
            return dict(self._install_counts)

    @property
    def servers(self) -> list[SimulatedServer]:
        """Every server as it stands now (due commands and reboots settled), in fleet order."""
        with self._lock:
            return [self._settle(instance_id) for instance_id in list(self._servers)]

    def server(self, instance_id: str) -> SimulatedServer:
        with self._lock:
            return self._settle(instance_id)

    @property
    def simulated_time(self) -> float:
        """Simulated seconds since the fleet was built (downtime between openings included)."""
        with self._lock:
            return self._now()

    def close(self) -> None:
        with self._lock:
            self._state.close()

    def __enter__(self) -> FleetSimulator:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

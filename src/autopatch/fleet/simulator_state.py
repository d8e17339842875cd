"""The fleet simulator's SQLite state: one file, the single source of truth for every process.

Two orchestrators (a ``patch`` and a ``resume``, or two ``patch`` commands) may drive the same
simulated fleet at once, and the guarantee "a KB is never installed twice" is proved by counting
installs here. So nothing lives in a process's memory between operations: each operation of the
simulator is one ``BEGIN IMMEDIATE`` transaction that reads the rows it needs (the server, its
running commands, the fault, the counter), changes them and writes them back. IMMEDIATE takes the
write lock up front, so two processes never both read a counter and both write "count + 1" from
stale copies, and a read never has to be upgraded to a write (which WAL refuses with BUSY_SNAPSHOT).

Simulated time is shared through a checkpoint (simulated seconds, wall-clock seconds) read at the
start of every transaction: ``now = sim + (wall_now - wall) * time_scale``, and written back with
every change. The wall clock is read after the lock is taken, so checkpoints advance in commit
order; a clock that steps back stalls simulated time instead of running it backwards.

``:memory:`` keeps working for a single process (demos, benchmarks): the same SQL on a private
database. The schema is version 1's (the indexes are added with ``IF NOT EXISTS``), so state files
written before this module existed open unchanged.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from autopatch.domain.fleet import CommandStatus
from autopatch.errors import NotFoundError, StoreError
from autopatch.fleet.simulator_model import (
    CommandKind,
    SimulatedCommand,
    SimulatedServer,
    SimulatedSnapshot,
    SimulatorConfig,
)

SNAPSHOTS_TABLE = """CREATE TABLE snapshots (
    snapshot_id TEXT PRIMARY KEY, instance_id TEXT NOT NULL, volume_id TEXT NOT NULL, device TEXT NOT NULL,
    root INTEGER NOT NULL, created_at REAL NOT NULL, fails INTEGER NOT NULL, tags TEXT NOT NULL,
    request INTEGER NOT NULL
)"""
_TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE servers (
    instance_id TEXT PRIMARY KEY, name TEXT NOT NULL, computer_name TEXT NOT NULL,
    product TEXT NOT NULL, edition TEXT NOT NULL, environment TEXT NOT NULL, ip_address TEXT NOT NULL,
    ami_id TEXT NOT NULL, ami_name TEXT NOT NULL, build TEXT NOT NULL, installed_kbs TEXT NOT NULL,
    pending_reboot INTEGER NOT NULL, online INTEGER NOT NULL, rebooting_until REAL,
    reboot_never_returns INTEGER NOT NULL, install_seconds REAL, position INTEGER NOT NULL,
    reboot_at REAL, booted_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE commands (
    command_id TEXT PRIMARY KEY, instance_id TEXT NOT NULL, kind TEXT NOT NULL, kb TEXT,
    started_at REAL NOT NULL, duration REAL NOT NULL, status TEXT NOT NULL, injected_hresult INTEGER,
    random_hresult INTEGER, exit_code INTEGER, output TEXT NOT NULL, error TEXT NOT NULL, token TEXT,
    run_seconds REAL
);
CREATE TABLE install_counts (
    instance_id TEXT NOT NULL, kb TEXT NOT NULL, count INTEGER NOT NULL, PRIMARY KEY (instance_id, kb)
);
CREATE TABLE injected_failures (
    instance_id TEXT NOT NULL, kb TEXT NOT NULL, hresult INTEGER NOT NULL, remaining INTEGER,
    PRIMARY KEY (instance_id, kb)
);
"""
_SCHEMA = _TABLES + SNAPSHOTS_TABLE
# A literal in the queries, not a parameter: SQLite uses a partial index only for a WHERE it can
# match when the statement is prepared. Unfinished: running, or waiting for an absent agent.
_RUNNING = f"status IN ('{CommandStatus.IN_PROGRESS.value}', '{CommandStatus.PENDING.value}')"
# Every operation reads one server's running commands, and find_command looks a token up: both
# by index, so an operation costs the same on a fresh fleet and after a million commands. The
# partial index holds only the running commands, so settling the whole fleet reads just those.
_INDEXES = (
    f"CREATE INDEX IF NOT EXISTS commands_unfinished ON commands (instance_id) WHERE {_RUNNING}",
    "CREATE INDEX IF NOT EXISTS commands_token ON commands (instance_id, token)",
)
SCHEMA_VERSION = 3
# Version 1 → 2: restarts with a shutdown delay and a boot time; commands waiting for delivery.
_UPGRADE_TO_2 = (
    "ALTER TABLE servers ADD COLUMN reboot_at REAL",
    "ALTER TABLE servers ADD COLUMN booted_at REAL NOT NULL DEFAULT 0",
    "ALTER TABLE commands ADD COLUMN run_seconds REAL",
    "DROP INDEX IF EXISTS commands_running",  # its WHERE knew only InProgress
)
# Version 2 → 3: EBS snapshots (``simulator_snapshots``); ``request`` numbers the CreateSnapshots call.
_UPGRADE_TO_3 = (SNAPSHOTS_TABLE,)
# The tables' columns are the dataclasses' fields, named in every statement (servers add their position).
_SERVER_FIELDS = tuple(field.name for field in fields(SimulatedServer))
_COMMAND_FIELDS = tuple(field.name for field in fields(SimulatedCommand))
_SERVER_COLUMNS = ", ".join(_SERVER_FIELDS)
_COMMAND_COLUMNS = ", ".join(_COMMAND_FIELDS)
_UPDATE_SERVER = f"UPDATE servers SET {', '.join(f'{name} = ?' for name in _SERVER_FIELDS[1:])} WHERE instance_id = ?"
_UPDATE_COMMAND = (
    "UPDATE commands SET status = ?, exit_code = ?, output = ?, error = ?, started_at = ?, duration = ? "
    "WHERE command_id = ?"
)

_SNAPSHOT_FIELDS = tuple(field.name for field in fields(SimulatedSnapshot))
_SNAPSHOT_COLUMNS = ", ".join(_SNAPSHOT_FIELDS)

_BUSY_TIMEOUT_MS = 5000
# busy_timeout makes SQLite wait for the lock itself; these retries cover what still escapes as
# "database is locked" (the journal-mode switch on a fresh file, a lock held past the timeout).
_BUSY_ATTEMPTS = 8
_BUSY_FIRST_DELAY = 0.01
_BUSY_MAX_DELAY = 1.0

Result = TypeVar("Result")


def _server_values(server: SimulatedServer) -> list[object]:
    values = [getattr(server, name) for name in _SERVER_FIELDS]
    values[_SERVER_FIELDS.index("installed_kbs")] = " ".join(server.installed_kbs)
    return values


def _server_from_row(row: tuple[Any, ...]) -> SimulatedServer:
    values = dict(zip(_SERVER_FIELDS, row, strict=True))
    values["installed_kbs"] = tuple(values["installed_kbs"].split())
    for flag in ("pending_reboot", "online", "reboot_never_returns"):
        values[flag] = bool(values[flag])
    return SimulatedServer(**values)


def _command_from_row(row: tuple[Any, ...]) -> SimulatedCommand:
    values = dict(zip(_COMMAND_FIELDS, row, strict=True))
    return SimulatedCommand(
        **{**values, "kind": CommandKind(values["kind"]), "status": CommandStatus(values["status"])}
    )


def _snapshot_values(snapshot: SimulatedSnapshot) -> tuple[object, ...]:
    values = {name: getattr(snapshot, name) for name in _SNAPSHOT_FIELDS}
    values["tags"] = json.dumps(dict(snapshot.tags), sort_keys=True)
    return tuple(values.values())


def _snapshot_from_row(row: tuple[Any, ...]) -> SimulatedSnapshot:
    values = dict(zip(_SNAPSHOT_FIELDS, row, strict=True))
    return SimulatedSnapshot(
        **{**values, "root": bool(values["root"]), "fails": bool(values["fails"]), "tags": json.loads(values["tags"])}
    )


def _stored_config(db: sqlite3.Connection) -> SimulatorConfig | None:
    row = db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
    return None if row is None else SimulatorConfig.model_validate_json(row[0])


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)  # extended codes keep the primary low
    return "locked" in str(exc) or "busy" in str(exc)


class StateTransaction:
    """One IMMEDIATE transaction: reads and writes of the state, and the simulated time it runs at.

    Only lives inside ``SimulatorState.transact``. The checkpoint and the command sequence are
    read on first use and written back once, at the end, if anything changed.
    """

    def __init__(self, db: sqlite3.Connection, wall_now: float, time_scale: float) -> None:
        self.db = db
        self._wall_now = wall_now
        self._time_scale = time_scale
        self._now: float | None = None
        self._sequence = 0
        self.changed = False

    # --- time and the command sequence -------------------------------------------------------------

    @property
    def now(self) -> float:
        """Simulated seconds now: the stored checkpoint plus the wall time since, scaled."""
        return self._read_checkpoint()

    def next_sequence(self) -> int:
        """The next command number of this fleet, unique across every process that opens the file."""
        self._read_checkpoint()  # the sequence is stored with the checkpoint
        self._sequence += 1
        self.changed = True
        return self._sequence

    def _read_checkpoint(self) -> float:
        if self._now is None:
            sql = "SELECT key, value FROM meta WHERE key IN ('sim_time', 'wall_time', 'sequence')"
            stored = dict(self.db.execute(sql))
            self._sequence = int(stored.get("sequence", "0"))
            if "sim_time" in stored:  # a fleet being created starts at simulated second 0
                elapsed = max(0.0, self._wall_now - float(stored["wall_time"]))
                self._now = float(stored["sim_time"]) + elapsed * self._time_scale
            else:
                self._now = 0.0
        return self._now

    def finish(self) -> None:
        """Write the checkpoint (and the sequence) back when the operation changed anything."""
        if self.changed:
            now = self._read_checkpoint()  # first: it also loads the sequence, which must not go back to 0
            self.db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('sim_time', ?), ('wall_time', ?), ('sequence', ?)",
                (repr(now), repr(self._wall_now), str(self._sequence)),
            )

    # --- the fleet ---------------------------------------------------------------------------------

    def stored_config(self) -> SimulatorConfig | None:
        return _stored_config(self.db)

    def save_config(self, config: SimulatorConfig) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('config', ?)", (config.model_dump_json(),))
        self.changed = True

    def insert_servers(self, servers: Iterable[SimulatedServer]) -> None:
        # One bulk insert: 100,000 servers in about a second.
        self.db.executemany(
            f"INSERT INTO servers ({_SERVER_COLUMNS}, position) VALUES ({', '.join('?' * (len(_SERVER_FIELDS) + 1))})",
            ((*_server_values(server), position) for position, server in enumerate(servers)),
        )
        self.changed = True

    def server(self, instance_id: str) -> SimulatedServer:
        row = self.db.execute(f"SELECT {_SERVER_COLUMNS} FROM servers WHERE instance_id = ?", (instance_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"instance_id: {instance_id!r} is not a server of this simulated fleet")
        return _server_from_row(row)

    def all_servers(self) -> list[SimulatedServer]:
        return [
            _server_from_row(row) for row in self.db.execute(f"SELECT {_SERVER_COLUMNS} FROM servers ORDER BY position")
        ]

    def save_server(self, server: SimulatedServer) -> None:
        values = _server_values(server)
        self.db.execute(_UPDATE_SERVER, (*values[1:], values[0]))
        self.changed = True

    # --- commands ----------------------------------------------------------------------------------

    def running_commands(self, instance_id: str) -> list[SimulatedCommand]:
        """The server's unfinished commands in the order they were sent."""
        sql = f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE instance_id = ? AND {_RUNNING} ORDER BY rowid"
        return [_command_from_row(row) for row in self.db.execute(sql, (instance_id,))]

    def all_running_commands(self) -> dict[str, list[SimulatedCommand]]:
        """Every unfinished command by server, each list in the order sent."""
        running: dict[str, list[SimulatedCommand]] = {}
        # The order of the partial index itself: no sort, and no scan of finished commands.
        sql = f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE {_RUNNING} ORDER BY instance_id, rowid"
        for row in self.db.execute(sql):
            command = _command_from_row(row)
            running.setdefault(command.instance_id, []).append(command)
        return running

    def command(self, command_id: str) -> SimulatedCommand | None:
        row = self.db.execute(f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE command_id = ?", (command_id,)).fetchone()
        return None if row is None else _command_from_row(row)

    def command_id_by_token(self, instance_id: str, token: str) -> str | None:
        """The newest command sent to the server with ``token`` (a token reused names its last command)."""
        sql = "SELECT command_id FROM commands WHERE instance_id = ? AND token = ? ORDER BY rowid DESC LIMIT 1"
        row = self.db.execute(sql, (instance_id, token)).fetchone()
        return None if row is None else str(row[0])

    def insert_command(self, command: SimulatedCommand) -> None:
        # A plain INSERT: a command id seen twice is a bug in the sequence, and must fail loudly.
        values = tuple(getattr(command, name) for name in _COMMAND_FIELDS)
        self.db.execute(f"INSERT INTO commands ({_COMMAND_COLUMNS}) VALUES ({', '.join('?' * len(values))})", values)
        self.changed = True

    def save_commands(self, commands: Iterable[SimulatedCommand]) -> None:
        """Record how commands ended (an UPDATE keeps their rowid, hence the order they were sent)."""
        rows = [
            (c.status.value, c.exit_code, c.output, c.error, c.started_at, c.duration, c.command_id) for c in commands
        ]
        if rows:
            self.db.executemany(_UPDATE_COMMAND, rows)
            self.changed = True

    # --- install counts and injected faults --------------------------------------------------------

    def count_install(self, instance_id: str, kb: str) -> int:
        """Add one install of ``kb`` on the server, in SQL; return the new count (this install's attempt)."""
        sql = (
            "INSERT INTO install_counts VALUES (?, ?, 1) "
            "ON CONFLICT (instance_id, kb) DO UPDATE SET count = count + 1 RETURNING count"
        )
        count = int(self.db.execute(sql, (instance_id, kb)).fetchone()[0])
        self.changed = True
        return count

    def install_counts(self) -> dict[tuple[str, str], int]:
        rows = self.db.execute("SELECT instance_id, kb, count FROM install_counts ORDER BY rowid")
        return {(instance_id, kb): count for instance_id, kb, count in rows}

    def injected_failure(self, instance_id: str, kb: str) -> tuple[int, int | None] | None:
        """The fault waiting for ``kb`` on the server: (HRESULT, installs it still fails or None for all)."""
        sql = "SELECT hresult, remaining FROM injected_failures WHERE instance_id = ? AND kb = ?"
        row = self.db.execute(sql, (instance_id, kb)).fetchone()
        return None if row is None else (int(row[0]), None if row[1] is None else int(row[1]))

    def use_injected_failure(self, instance_id: str, kb: str) -> None:
        """One install consumed the fault: count it down in SQL, and drop it when it is used up."""
        key = (instance_id, kb)
        self.db.execute("DELETE FROM injected_failures WHERE instance_id = ? AND kb = ? AND remaining <= 1", key)
        self.db.execute("UPDATE injected_failures SET remaining = remaining - 1 WHERE instance_id = ? AND kb = ?", key)
        self.changed = True

    def inject_failure(self, instance_id: str, kb: str, hresult: int, times: int | None) -> None:
        sql = "INSERT OR REPLACE INTO injected_failures VALUES (?, ?, ?, ?)"
        self.db.execute(sql, (instance_id, kb, hresult, times))
        self.changed = True

    # --- EBS snapshots --------------------------------------------------------------------------

    def insert_snapshots(self, snapshots: Iterable[SimulatedSnapshot]) -> None:
        self.db.executemany(
            f"INSERT INTO snapshots ({_SNAPSHOT_COLUMNS}) VALUES ({', '.join('?' * len(_SNAPSHOT_FIELDS))})",
            (_snapshot_values(snapshot) for snapshot in snapshots),
        )
        self.changed = True

    def snapshots(self, snapshot_ids: Iterable[str] | None = None) -> list[SimulatedSnapshot]:
        """The snapshots with these ids (those that exist), or every snapshot; in the order they were taken."""
        rows = self.db.execute(f"SELECT {_SNAPSHOT_COLUMNS} FROM snapshots ORDER BY rowid").fetchall()
        wanted = None if snapshot_ids is None else set(snapshot_ids)
        found = (_snapshot_from_row(row) for row in rows)
        return [snapshot for snapshot in found if wanted is None or snapshot.snapshot_id in wanted]

    def delete_snapshot(self, snapshot_id: str) -> bool:
        deleted = self.db.execute("DELETE FROM snapshots WHERE snapshot_id = ?", (snapshot_id,)).rowcount
        self.changed = True
        return bool(deleted)

    def snapshot_requests(self) -> dict[str, int]:
        """CreateSnapshots calls per server (deleted snapshots no longer count)."""
        sql = "SELECT instance_id, COUNT(DISTINCT request) FROM snapshots GROUP BY instance_id ORDER BY instance_id"
        return {str(instance_id): int(count) for instance_id, count in self.db.execute(sql)}


class SimulatorState:
    """The simulator's SQLite file (``:memory:`` without a path); sqlite3 errors become StoreError.

    One connection per simulator, shared by its threads: a connection runs one transaction at a
    time, so callers serialise ``transact`` with a lock of their own (the simulator does). Other
    processes, and other simulators on the same file, are kept apart by SQLite's file lock.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = str(path) if path is not None else ":memory:"
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            # The timeout first: switching a fresh file to WAL takes a lock another process may hold.
            self.db.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            self._retry_busy(lambda: self.db.execute("PRAGMA journal_mode = WAL"))
            self.db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the simulator state {self.path}: {exc}") from exc

    def peek_config(self) -> SimulatorConfig | None:
        """The stored fleet's config, read without a transaction (None for a file with no fleet yet)."""
        try:
            return self._retry_busy(self._read_config)
        except sqlite3.Error as exc:
            raise StoreError(f"simulator state read failed ({self.path}): {exc}") from exc

    def _read_config(self) -> SimulatorConfig | None:
        if self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
            return None
        return _stored_config(self.db)

    def ensure_schema(self, tx: StateTransaction) -> None:
        """Create the tables on a fresh file (inside the caller's transaction), or check their version."""
        version = tx.db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            for statement in _SCHEMA.split(";"):
                tx.db.execute(statement)
            tx.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version in (1, 2):
            for statement in (*(_UPGRADE_TO_2 if version == 1 else ()), *_UPGRADE_TO_3):
                tx.db.execute(statement)
            tx.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise StoreError(f"{self.path} is simulator state version {version}; expected {SCHEMA_VERSION}")
        for statement in _INDEXES:
            tx.db.execute(statement)

    def transact(
        self, operation: Callable[[StateTransaction], Result], wall_clock: Callable[[], float], time_scale: float
    ) -> Result:
        """Run ``operation`` in one BEGIN IMMEDIATE transaction; retried whole if the file stays locked.

        ``operation`` must keep its effects inside the transaction (it may run more than once).
        Errors it raises roll the transaction back and pass through unchanged.
        """
        try:
            return self._retry_busy(lambda: self._transact_once(operation, wall_clock, time_scale))
        except sqlite3.Error as exc:
            raise StoreError(f"simulator state write failed ({self.path}): {exc}") from exc

    def _transact_once(
        self, operation: Callable[[StateTransaction], Result], wall_clock: Callable[[], float], time_scale: float
    ) -> Result:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            # Read the clock only now, holding the lock: checkpoints then advance in commit order.
            tx = StateTransaction(self.db, wall_clock(), time_scale)
            result = operation(tx)
            tx.finish()
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        return result

    def _retry_busy(self, attempt: Callable[[], Result]) -> Result:
        delay = _BUSY_FIRST_DELAY
        for _ in range(_BUSY_ATTEMPTS - 1):
            try:
                return attempt()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
            # Jitter, so that processes that collided once do not collide again in step.
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, _BUSY_MAX_DELAY)
        return attempt()

    def close(self) -> None:
        self.db.close()

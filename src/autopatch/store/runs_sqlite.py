"""SQLite tables and queries for patch runs: every state, transition and attempt, kept forever.

The original's progress rows expired five minutes after their last update (defect 3); here
nothing has a TTL: runs, per-KB states, their transitions and each attempt's command id, exit
code, timings and output tail are history. Each call is one transaction.

One driver per run, across processes: a run has an owner and a lease (``owner``,
``lease_expires``), taken and renewed by conditional UPDATEs, so a second CLI, the server or a
``resume`` can never drive the same run at once; and a new run claims its servers in the same
transaction that checks no unfinished run holds them.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from autopatch.domain.patching import (
    HELD_SERVER_STATUSES,
    UNFINISHED_RUN_STATUSES,
    KbState,
    RunStatus,
    check_transition,
)
from autopatch.domain.runs import Attempt, RunItem, RunRecord, RunServer, Transition
from autopatch.errors import ConflictError, NotFoundError, StateError
from autopatch.store.base import ATTEMPT_FIELDS, SERVER_FIELDS, now
from autopatch.store.revisions_sqlite import RUNS, bump_revision

RUNS_MIGRATION = """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        options TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        reason TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX runs_by_status ON runs (status);
    CREATE TABLE run_servers (
        run_id TEXT NOT NULL REFERENCES runs ON DELETE CASCADE,
        instance_id TEXT NOT NULL,
        name TEXT NOT NULL,
        product TEXT,
        build_before TEXT,
        status TEXT NOT NULL,
        build_after TEXT,
        reboots INTEGER NOT NULL DEFAULT 0,
        started_at TEXT,
        finished_at TEXT,
        reason TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (run_id, instance_id)
    ) WITHOUT ROWID;
    CREATE TABLE run_items (
        run_id TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        kb TEXT NOT NULL,
        position INTEGER NOT NULL,
        state TEXT NOT NULL,
        subtype TEXT,
        fixed_build TEXT,
        restart_required TEXT,
        reboot_required INTEGER NOT NULL DEFAULT 0,
        reason TEXT NOT NULL DEFAULT '',
        updated_at TEXT NOT NULL,
        PRIMARY KEY (run_id, instance_id, kb),
        FOREIGN KEY (run_id, instance_id) REFERENCES run_servers ON DELETE CASCADE
    ) WITHOUT ROWID;
    CREATE INDEX run_items_by_instance ON run_items (instance_id, updated_at);
    CREATE TABLE item_transitions (
        run_id TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        kb TEXT NOT NULL,
        seq INTEGER NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        at TEXT NOT NULL,
        note TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (run_id, instance_id, kb, seq)
    ) WITHOUT ROWID;
    CREATE TABLE attempts (
        run_id TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        kb TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        token TEXT NOT NULL,
        phase TEXT NOT NULL,
        command_id TEXT,
        sent_at TEXT,
        finished_at TEXT,
        status TEXT,
        exit_code INTEGER,
        hresult INTEGER,
        reboot_required INTEGER,
        output_tail TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (run_id, instance_id, kb, attempt)
    ) WITHOUT ROWID;
    CREATE TABLE notifications (
        run_id TEXT NOT NULL REFERENCES runs ON DELETE CASCADE,
        notifier TEXT NOT NULL,
        ok INTEGER NOT NULL,
        error TEXT,
        at TEXT NOT NULL
    );
"""
RUN_OWNER_MIGRATION = """
    ALTER TABLE runs ADD COLUMN owner TEXT;
    ALTER TABLE runs ADD COLUMN lease_expires REAL;
    ALTER TABLE runs ADD COLUMN planned INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX run_servers_by_instance ON run_servers (instance_id, status)
"""
# When a server's last reboot was asked for, and its boot time before it: the proof of the reboot
# is a scan with a newer boot time (SSM says Online for minutes after a restart was asked for).
RUN_REBOOT_MIGRATION = """
    ALTER TABLE run_servers ADD COLUMN reboot_requested_at TEXT;
    ALTER TABLE run_servers ADD COLUMN boot_before TEXT
"""
# Exploited-first (domain/runs.start_order): servers with open exploited/KEV CVEs are listed, and so started, first.
RUN_EXPLOITED_MIGRATION = """
    ALTER TABLE run_servers ADD COLUMN open_exploited INTEGER NOT NULL DEFAULT 0
"""
_RUN_COLUMNS = (
    "run_id, kind, status, created_at, options, started_at, finished_at, reason, owner, lease_expires, planned"
)
_UNFINISHED = ",".join(f"'{status}'" for status in UNFINISHED_RUN_STATUSES)
_HELD = ",".join(f"'{status}'" for status in HELD_SERVER_STATUSES)


def _run(row: tuple[Any, ...]) -> RunRecord:
    run_id, kind, status, created_at, options, started_at, finished_at, reason, owner, lease_expires, planned = row
    return RunRecord(
        run_id,
        kind,
        RunStatus(status),
        created_at,
        json.loads(options),
        started_at,
        finished_at,
        reason,
        owner,
        lease_expires,
        bool(planned),
    )


def _item(row: tuple[Any, ...]) -> RunItem:
    run_id, instance_id, kb, position, state, subtype, fixed_build, restart, reboot, reason, updated_at = row
    return RunItem(
        run_id,
        instance_id,
        kb,
        position,
        KbState(state),
        subtype,
        fixed_build,
        restart,
        bool(reboot),
        reason,
        updated_at,
    )


def _attempt(row: tuple[Any, ...]) -> Attempt:
    values = list(row)
    values[12] = None if values[12] is None else bool(values[12])
    return Attempt(*values)


class RunTables:
    """Mixed into ``SqliteStore``: needs ``self._db`` and ``self._transaction``/``self._query``."""

    _db: sqlite3.Connection
    _transaction: Any  # context manager provided by SqliteStore
    _query: Any  # provided by SqliteStore

    def create_run(self, run: RunRecord, servers: list[RunServer], items: list[RunItem]) -> None:
        """A run, its servers and their classified KBs, all or nothing.

        Refused with ``ConflictError`` when an unfinished run still has work on one of the servers:
        the check and the insert are one IMMEDIATE transaction, so two processes cannot both pass it.
        ``run.owner``/``run.lease_expires`` make the creator the run's driver from the start.
        """
        stamp = now()
        with self._transaction() as db:
            bump_revision(db, RUNS)  # the status view kept by the API watches it
            ids = [s.instance_id for s in servers]
            for start in range(0, len(ids), 500):
                batch = ids[start : start + 500]
                held = db.execute(
                    f"SELECT s.instance_id, r.run_id, r.status FROM run_servers s JOIN runs r USING (run_id) "
                    f"WHERE s.instance_id IN ({','.join('?' * len(batch))}) AND r.status IN ({_UNFINISHED}) "
                    f"AND s.status IN ({_HELD}) LIMIT 1",
                    batch,
                ).fetchone()
                if held is not None:
                    instance_id, other, status = held
                    raise ConflictError(
                        f"instance_id: {instance_id} is held by run {other} ({status}); wait for it, "
                        f"`autopatch resume` it or `autopatch cancel {other}`"
                    )
            db.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.run_id,
                    run.kind,
                    run.status,
                    run.created_at,
                    json.dumps(run.options),
                    None,
                    None,
                    "",
                    run.owner,
                    run.lease_expires,
                    int(run.planned),
                ),
            )
            db.executemany(
                "INSERT INTO run_servers (run_id, instance_id, name, product, build_before, status, build_after, "
                "reboots, started_at, finished_at, reason, open_exploited) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        s.run_id,
                        s.instance_id,
                        s.name,
                        s.product,
                        s.build_before,
                        s.status,
                        None,
                        0,
                        None,
                        None,
                        s.reason,
                        s.open_exploited,
                    )
                    for s in servers
                ],
            )
            self._insert_items(db, items, stamp)

    def save_plan(self, run_id: str, servers: list[RunServer], items: list[RunItem]) -> None:
        """Store the scanned plan of a run created unplanned (its servers claimed first), all or nothing."""
        stamp = now()
        with self._transaction() as db:
            bump_revision(db, RUNS)  # the status view kept by the API watches it
            row = db.execute("SELECT status, planned FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"run: {run_id!r} is not a known run")
            if row[1]:
                raise StateError(f"run {run_id} is already planned")
            db.executemany(
                "UPDATE run_servers SET product = ?, build_before = ?, status = ?, reason = ?, open_exploited = ? "
                "WHERE run_id = ? AND instance_id = ?",
                [
                    (s.product, s.build_before, s.status, s.reason, s.open_exploited, run_id, s.instance_id)
                    for s in servers
                ],
            )
            self._insert_items(db, items, stamp)
            if row[0] != RunStatus.PENDING:  # cancelled while it was being scanned: nothing starts
                for item in items:
                    if item.state is KbState.PENDING:
                        self._transition(
                            db, run_id, item.instance_id, item.kb, KbState.CANCELLED, "run cancelled", None, stamp
                        )
            db.execute("UPDATE runs SET planned = 1 WHERE run_id = ?", (run_id,))

    @staticmethod
    def _insert_items(db: sqlite3.Connection, items: list[RunItem], stamp: str) -> None:
        for item in items:
            check_transition(None, item.state, f"{item.instance_id}/{item.kb}")
        if items:
            db.executemany(
                "INSERT INTO run_items VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        i.run_id,
                        i.instance_id,
                        i.kb,
                        i.position,
                        i.state,
                        i.subtype,
                        i.fixed_build,
                        i.restart_required,
                        0,
                        i.reason,
                        stamp,
                    )
                    for i in items
                ],
            )
            db.executemany(
                "INSERT INTO item_transitions VALUES (?, ?, ?, 0, NULL, ?, ?, ?)",
                [(i.run_id, i.instance_id, i.kb, i.state, stamp, i.reason) for i in items],
            )

    # --- ownership -------------------------------------------------------------------------------

    def claim_run(self, run_id: str, owner: str, lease_expires: float, now_epoch: float, dead_owner: str = "") -> bool:
        """Become the run's driver if nobody drives it: no owner, an expired lease, or ``dead_owner``.

        ``dead_owner`` is an owner the caller found dead (a local process that no longer exists);
        naming it makes the take-over conditional on that exact owner still being recorded.
        """
        with self._transaction() as db:
            cursor = db.execute(
                f"UPDATE runs SET owner = ?, lease_expires = ? WHERE run_id = ? AND status IN ({_UNFINISHED}) "
                "AND (owner IS NULL OR lease_expires IS NULL OR lease_expires < ? OR owner = ? OR owner = ?)",
                (owner, lease_expires, run_id, now_epoch, owner, dead_owner or owner),
            )
            return bool(cursor.rowcount == 1)

    def renew_lease(self, run_id: str, owner: str, lease_expires: float) -> bool:
        """Extend our lease; False when another process took the run over (our lease had lapsed)."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE runs SET lease_expires = ? WHERE run_id = ? AND owner = ?", (lease_expires, run_id, owner)
            )
            return bool(cursor.rowcount == 1)

    def release_run(self, run_id: str, owner: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET owner = NULL, lease_expires = NULL WHERE run_id = ? AND owner = ?", (run_id, owner)
            )

    def cancel_run(self, run_id: str, reason: str) -> RunStatus:
        """Cancel at once: KBs not started become Cancelled, servers with nothing in flight are done.

        The run is Cancelled when nothing is in flight, else Cancelling until its driver has
        recorded the in-flight installs' results (a KB being installed is never cut half-way).
        """
        stamp = now()
        with self._transaction() as db:
            bump_revision(db, RUNS)  # the status view kept by the API watches it
            row = db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"run: {run_id!r} is not a known run (see `autopatch runs`)")
            if RunStatus(row[0]).is_terminal:
                raise StateError(f"run {run_id} is already {row[0]}")
            pending = db.execute(
                "SELECT instance_id, kb FROM run_items WHERE run_id = ? AND state = ?", (run_id, KbState.PENDING)
            ).fetchall()
            for instance_id, kb in pending:
                self._transition(db, run_id, instance_id, kb, KbState.CANCELLED, reason, None, stamp)
            busy = {
                instance_id
                for (instance_id,) in db.execute(
                    "SELECT DISTINCT instance_id FROM run_items WHERE run_id = ? AND state = ?",
                    (run_id, KbState.IN_PROGRESS),
                )
            }
            servers = db.execute(
                f"SELECT instance_id FROM run_servers WHERE run_id = ? AND status IN ({_HELD})", (run_id,)
            ).fetchall()
            for (instance_id,) in servers:
                if instance_id not in busy:
                    db.execute(
                        "UPDATE run_servers SET status = 'Cancelled', reason = ?, finished_at = ? "
                        "WHERE run_id = ? AND instance_id = ?",
                        (reason, stamp, run_id, instance_id),
                    )
            status = RunStatus.CANCELLING if busy else RunStatus.CANCELLED
            db.execute(
                "UPDATE runs SET status = ?, reason = ?, finished_at = CASE WHEN ? THEN ? ELSE finished_at END "
                "WHERE run_id = ?",
                (status, reason, status.is_terminal, stamp, run_id),
            )
            return status

    def transition_item(
        self,
        run_id: str,
        instance_id: str,
        kb: str,
        new: KbState,
        reason: str = "",
        reboot_required: bool | None = None,
    ) -> None:
        """Move one KB to ``new`` if the state machine allows it, recording when and why."""
        with self._transaction() as db:
            bump_revision(db, RUNS)  # the status view kept by the API watches it
            self._transition(db, run_id, instance_id, kb, new, reason, reboot_required, now())

    @staticmethod
    def _transition(
        db: sqlite3.Connection,
        run_id: str,
        instance_id: str,
        kb: str,
        new: KbState,
        reason: str,
        reboot_required: bool | None,
        stamp: str,
    ) -> None:
        row = db.execute(
            "SELECT state FROM run_items WHERE run_id = ? AND instance_id = ? AND kb = ?", (run_id, instance_id, kb)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"run {run_id} has no KB {kb} for instance {instance_id}")
        current = KbState(row[0])
        check_transition(current, new, f"{run_id}/{instance_id}/{kb}")
        db.execute(
            "UPDATE run_items SET state = ?, reason = ?, updated_at = ?, "
            "reboot_required = coalesce(?, reboot_required) WHERE run_id = ? AND instance_id = ? AND kb = ?",
            (new, reason, stamp, reboot_required, run_id, instance_id, kb),
        )
        db.execute(
            "INSERT INTO item_transitions SELECT ?, ?, ?, coalesce(max(seq), -1) + 1, ?, ?, ?, ? "
            "FROM item_transitions WHERE run_id = ? AND instance_id = ? AND kb = ?",
            (run_id, instance_id, kb, current, new, stamp, reason, run_id, instance_id, kb),
        )

    def start_attempt(self, run_id: str, instance_id: str, kb: str, token: str) -> int:
        """Record the intent to send BEFORE sending: a crash after it is never blind."""
        with self._transaction() as db:
            number = db.execute(
                "SELECT coalesce(max(attempt), 0) + 1 FROM attempts WHERE run_id = ? AND instance_id = ? AND kb = ?",
                (run_id, instance_id, kb),
            ).fetchone()[0]
            db.execute(  # sent_at is the intent's time: find_command looks for the command from then on
                "INSERT INTO attempts (run_id, instance_id, kb, attempt, token, phase, sent_at) "
                "VALUES (?, ?, ?, ?, ?, 'sending', ?)",
                (run_id, instance_id, kb, number, token, now()),
            )
        return int(number)

    def update_attempt(self, run_id: str, instance_id: str, kb: str, attempt: int, **fields: Any) -> None:
        unknown = set(fields) - ATTEMPT_FIELDS
        if unknown:
            raise ValueError(f"unknown attempt fields {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._transaction() as db:
            db.execute(
                f"UPDATE attempts SET {assignments} WHERE run_id = ? AND instance_id = ? AND kb = ? AND attempt = ?",
                (*fields.values(), run_id, instance_id, kb, attempt),
            )

    def update_server(self, run_id: str, instance_id: str, **fields: Any) -> None:
        if set(fields) - SERVER_FIELDS:
            raise ValueError(f"unknown server fields {sorted(set(fields) - SERVER_FIELDS)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._transaction() as db:
            db.execute(
                f"UPDATE run_servers SET {assignments} WHERE run_id = ? AND instance_id = ?",
                (*fields.values(), run_id, instance_id),
            )

    def record_reboot(
        self,
        run_id: str,
        instance_id: str,
        attempts: list[tuple[str, int]],
        requested_at: str | None = None,
        boot_before: str | None = None,
    ) -> None:
        """A reboot happened for these (KB, attempt)s: their phase and the server's count move together."""
        with self._transaction() as db:
            db.execute(
                "UPDATE run_servers SET reboots = reboots + 1, reboot_requested_at = coalesce(?, reboot_requested_at), "
                "boot_before = coalesce(?, boot_before) WHERE run_id = ? AND instance_id = ?",
                (requested_at, boot_before, run_id, instance_id),
            )
            db.executemany(
                "UPDATE attempts SET phase = 'rebooting' "
                "WHERE run_id = ? AND instance_id = ? AND kb = ? AND attempt = ?",
                [(run_id, instance_id, kb, attempt) for kb, attempt in attempts],
            )

    def set_run_status(self, run_id: str, status: RunStatus, reason: str = "") -> None:
        stamp = now()
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET status = ?, reason = ?, started_at = coalesce(started_at, ?), "
                "finished_at = CASE WHEN ? THEN ? ELSE finished_at END WHERE run_id = ?",
                (status, reason, stamp, status.is_terminal, stamp, run_id),
            )

    def record_notification(self, run_id: str, notifier: str, ok: bool, error: str | None) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO notifications VALUES (?, ?, ?, ?, ?)", (run_id, notifier, int(ok), error, now()))

    # --- reads ---------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord:
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise NotFoundError(f"run: {run_id!r} is not a known run (see `autopatch runs`)")
        return _run(rows[0])

    def list_runs(self, limit: int = 50, offset: int = 0) -> list[RunRecord]:
        # run_id breaks ties between runs created in the same millisecond, so pages never overlap.
        rows = self._query(
            f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY created_at DESC, run_id DESC LIMIT ? OFFSET ?", (limit, offset)
        )
        return [_run(row) for row in rows]

    def count_runs(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM runs")[0][0])

    def run_holding(self, instance_id: str) -> str | None:
        """The unfinished run that still has work on this server, if any."""
        rows = self._query(
            f"SELECT r.run_id FROM run_servers s JOIN runs r USING (run_id) WHERE s.instance_id = ? "
            f"AND r.status IN ({_UNFINISHED}) AND s.status IN ({_HELD}) LIMIT 1",
            (instance_id,),
        )
        return str(rows[0][0]) if rows else None

    def unfinished_runs(self) -> list[RunRecord]:
        rows = self._query(f"SELECT {_RUN_COLUMNS} FROM runs WHERE status IN ({_UNFINISHED}) ORDER BY created_at")
        return [_run(row) for row in rows]

    def run_servers(self, run_id: str) -> list[RunServer]:
        rows = self._query(
            "SELECT * FROM run_servers WHERE run_id = ? ORDER BY open_exploited DESC, name, instance_id", (run_id,)
        )
        return [RunServer(*row) for row in rows]

    def run_item(self, run_id: str, instance_id: str, kb: str) -> RunItem:
        rows = self._query(
            "SELECT * FROM run_items WHERE run_id = ? AND instance_id = ? AND kb = ?", (run_id, instance_id, kb)
        )
        if not rows:
            raise NotFoundError(f"run {run_id} has no KB {kb} for instance {instance_id}")
        return _item(rows[0])

    def run_server(self, run_id: str, instance_id: str) -> RunServer:
        rows = self._query("SELECT * FROM run_servers WHERE run_id = ? AND instance_id = ?", (run_id, instance_id))
        if not rows:
            raise NotFoundError(f"run {run_id} has no server {instance_id}")
        return RunServer(*rows[0])

    def run_items(self, run_id: str, instance_id: str | None = None) -> list[RunItem]:
        sql = "SELECT * FROM run_items WHERE run_id = ?"
        parameters: list[Any] = [run_id]
        if instance_id is not None:
            sql += " AND instance_id = ?"
            parameters.append(instance_id)
        return [_item(row) for row in self._query(sql + " ORDER BY instance_id, position", parameters)]

    def items_of_instance(self, instance_id: str) -> list[RunItem]:
        """The latest item per KB for one instance across runs (the status view)."""
        rows = self._query(
            "SELECT i.* FROM run_items i JOIN runs r USING (run_id) WHERE i.instance_id = ? "
            "ORDER BY r.created_at, i.position",
            (instance_id,),
        )
        latest: dict[str, RunItem] = {}
        for item in map(_item, rows):
            latest[item.kb] = item
        return sorted(latest.values(), key=lambda item: item.updated_at)

    def attempts(self, run_id: str, instance_id: str | None = None, kb: str | None = None) -> list[Attempt]:
        sql = "SELECT * FROM attempts WHERE run_id = ?"
        parameters: list[Any] = [run_id]
        for column, value in (("instance_id", instance_id), ("kb", kb)):
            if value is not None:
                sql += f" AND {column} = ?"
                parameters.append(value)
        return [_attempt(row) for row in self._query(sql + " ORDER BY instance_id, kb, attempt", parameters)]

    def transitions(self, run_id: str) -> list[Transition]:
        rows = self._query(
            "SELECT run_id, instance_id, kb, from_state, to_state, at, note FROM item_transitions "
            "WHERE run_id = ? ORDER BY instance_id, kb, seq",
            (run_id,),
        )
        return [Transition(*row) for row in rows]

    def notifications(self, run_id: str) -> list[tuple[str, bool, str | None]]:
        rows = self._query("SELECT notifier, ok, error FROM notifications WHERE run_id = ?", (run_id,))
        return [(str(name), bool(ok), error) for name, ok, error in rows]

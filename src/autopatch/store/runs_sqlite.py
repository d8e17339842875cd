"""SQLite tables and queries for patch runs: every state, transition and attempt, kept forever.

The original's progress rows expired five minutes after their last update (defect 3); here
nothing has a TTL: runs, per-KB states, their transitions and each attempt's command id, exit
code, timings and output tail are history. Each call is one transaction.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

from autopatch.domain.patching import KbState, RunStatus, check_transition
from autopatch.domain.runs import Attempt, RunItem, RunRecord, RunServer, Transition
from autopatch.errors import NotFoundError

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


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _run(row: tuple[Any, ...]) -> RunRecord:
    run_id, kind, status, created_at, options, started_at, finished_at, reason = row
    return RunRecord(run_id, kind, RunStatus(status), created_at, json.loads(options), started_at, finished_at, reason)


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
        """A run, its servers and their classified KBs, all or nothing."""
        stamp = now()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run.run_id, run.kind, run.status, run.created_at, json.dumps(run.options), None, None, ""),
            )
            db.executemany(
                "INSERT INTO run_servers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    )
                    for s in servers
                ],
            )
            for item in items:
                check_transition(None, item.state, f"{item.instance_id}/{item.kb}")
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
            row = db.execute(
                "SELECT state FROM run_items WHERE run_id = ? AND instance_id = ? AND kb = ?", (run_id, instance_id, kb)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"run {run_id} has no KB {kb} for instance {instance_id}")
            current = KbState(row[0])
            check_transition(current, new, f"{run_id}/{instance_id}/{kb}")
            stamp = now()
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
            db.execute(
                "INSERT INTO attempts (run_id, instance_id, kb, attempt, token, phase) "
                "VALUES (?, ?, ?, ?, ?, 'sending')",
                (run_id, instance_id, kb, number, token),
            )
        return int(number)

    def update_attempt(self, run_id: str, instance_id: str, kb: str, attempt: int, **fields: Any) -> None:
        allowed = {
            "phase",
            "command_id",
            "sent_at",
            "finished_at",
            "status",
            "exit_code",
            "hresult",
            "reboot_required",
            "output_tail",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown attempt fields {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._transaction() as db:
            db.execute(
                f"UPDATE attempts SET {assignments} WHERE run_id = ? AND instance_id = ? AND kb = ? AND attempt = ?",
                (*fields.values(), run_id, instance_id, kb, attempt),
            )

    def update_server(self, run_id: str, instance_id: str, **fields: Any) -> None:
        allowed = {"status", "build_after", "reboots", "started_at", "finished_at", "reason", "product", "build_before"}
        if set(fields) - allowed:
            raise ValueError(f"unknown server fields {sorted(set(fields) - allowed)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._transaction() as db:
            db.execute(
                f"UPDATE run_servers SET {assignments} WHERE run_id = ? AND instance_id = ?",
                (*fields.values(), run_id, instance_id),
            )

    def count_reboot(self, run_id: str, instance_id: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE run_servers SET reboots = reboots + 1 WHERE run_id = ? AND instance_id = ?",
                (run_id, instance_id),
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
        rows = self._query("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise NotFoundError(f"run: {run_id!r} is not a known run (see `autopatch runs`)")
        return _run(rows[0])

    def list_runs(self, limit: int = 50) -> list[RunRecord]:
        return [_run(row) for row in self._query("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,))]

    def unfinished_runs(self) -> list[RunRecord]:
        rows = self._query("SELECT * FROM runs WHERE status IN ('Pending', 'Running') ORDER BY created_at")
        return [_run(row) for row in rows]

    def run_servers(self, run_id: str) -> list[RunServer]:
        rows = self._query("SELECT * FROM run_servers WHERE run_id = ? ORDER BY name, instance_id", (run_id,))
        return [RunServer(*row) for row in rows]

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

"""SQLite tables of a run's rings and their health gates (the ``RingStore`` port).

One row per ring (its gate's state) and one per server of a ring (its check in the latest round):
a ring of 10,000 servers is 10,000 small rows, never one row that grows with the fleet.
"""

from __future__ import annotations

from typing import Any

from autopatch.domain.ring_gates import GateStatus, MemberCheck, RingGate, RingMember
from autopatch.errors import NotFoundError, StateError, ValidationError

RINGS_MIGRATION = """
    CREATE TABLE ring_gates (
        run_id TEXT NOT NULL REFERENCES runs ON DELETE CASCADE,
        position INTEGER NOT NULL,
        name TEXT NOT NULL,
        selector TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        soak_until TEXT,
        started_at TEXT,
        finished_at TEXT,
        PRIMARY KEY (run_id, position)
    ) WITHOUT ROWID;
    CREATE TABLE ring_members (
        run_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        instance_id TEXT NOT NULL,
        result TEXT NOT NULL,
        round INTEGER NOT NULL DEFAULT 0,
        detail TEXT NOT NULL DEFAULT '',
        command_id TEXT,
        checked_at TEXT,
        PRIMARY KEY (run_id, position, instance_id),
        FOREIGN KEY (run_id, position) REFERENCES ring_gates ON DELETE CASCADE
    ) WITHOUT ROWID
"""
_GATE_COLUMNS = "run_id, position, name, selector, status, reason, soak_until, started_at, finished_at"
_MEMBER_COLUMNS = "run_id, position, instance_id, result, round, detail, command_id, checked_at"
# Column names written into UPDATE statements: only these, never a caller's text.
_GATE_UPDATES = {name: name for name in ("status", "reason", "soak_until", "started_at", "finished_at")}
_MEMBER_UPDATES = {"check": "result"} | {name: name for name in ("round", "detail", "command_id", "checked_at")}


def _gate(row: tuple[Any, ...]) -> RingGate:
    run_id, position, name, selector, status, reason, soak_until, started_at, finished_at = row
    return RingGate(run_id, position, name, selector, GateStatus(status), reason, soak_until, started_at, finished_at)


def _member(row: tuple[Any, ...]) -> RingMember:
    run_id, position, instance_id, check, round_, detail, command_id, checked_at = row
    return RingMember(run_id, position, instance_id, MemberCheck(check), round_, detail, command_id, checked_at)


def _assignments(fields: dict[str, Any], columns: dict[str, str], what: str) -> tuple[str, list[Any]]:
    unknown = set(fields) - set(columns)
    if unknown or not fields:
        raise ValidationError("fields", sorted(unknown), f"a {what} update sets some of {sorted(columns)}")
    values = [str(value) if name in ("status", "check") else value for name, value in fields.items()]
    return ", ".join(f"{columns[name]} = ?" for name in fields), values


class RingTables:
    """Mixed into ``SqliteStore``: needs ``self._transaction``/``self._query``."""

    _transaction: Any  # context manager provided by SqliteStore
    _query: Any  # provided by SqliteStore

    def create_rings(self, gates: list[RingGate], members: list[RingMember]) -> list[RingGate]:
        if not gates:
            return []
        run_id = gates[0].run_id
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM ring_gates WHERE run_id = ? LIMIT 1", (run_id,)).fetchone() is None:
                db.executemany(
                    f"INSERT INTO ring_gates ({_GATE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            g.run_id,
                            g.position,
                            g.name,
                            g.selector,
                            str(g.status),
                            g.reason,
                            g.soak_until,
                            g.started_at,
                            g.finished_at,
                        )
                        for g in gates
                    ],
                )
                db.executemany(
                    f"INSERT INTO ring_members ({_MEMBER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            m.run_id,
                            m.position,
                            m.instance_id,
                            str(m.check),
                            m.round,
                            m.detail,
                            m.command_id,
                            m.checked_at,
                        )
                        for m in members
                    ],
                )
        return self.ring_gates(run_id)

    def ring_gates(self, run_id: str) -> list[RingGate]:
        rows = self._query(f"SELECT {_GATE_COLUMNS} FROM ring_gates WHERE run_id = ? ORDER BY position", (run_id,))
        return [_gate(row) for row in rows]

    def ring_members(self, run_id: str, position: int | None = None) -> list[RingMember]:
        if position is None:
            sql, parameters = "WHERE run_id = ?", (run_id,)
        else:
            sql, parameters = "WHERE run_id = ? AND position = ?", (run_id, position)  # type: ignore[assignment]
        rows = self._query(
            f"SELECT {_MEMBER_COLUMNS} FROM ring_members {sql} ORDER BY position, instance_id", parameters
        )
        return [_member(row) for row in rows]

    def update_ring_gate(self, run_id: str, position: int, expected: GateStatus, **fields: Any) -> None:
        assignments, values = _assignments(fields, _GATE_UPDATES, "ring gate")
        with self._transaction() as db:
            row = db.execute(
                "SELECT status FROM ring_gates WHERE run_id = ? AND position = ?", (run_id, position)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"run {run_id} has no ring {position}")
            if row[0] != expected:
                raise StateError(
                    f"ring {position} of run {run_id} is {row[0]}, not {expected}: another driver moved it"
                )
            db.execute(
                f"UPDATE ring_gates SET {assignments} WHERE run_id = ? AND position = ?", (*values, run_id, position)
            )

    def update_ring_member(self, run_id: str, position: int, instance_id: str, **fields: Any) -> None:
        assignments, values = _assignments(fields, _MEMBER_UPDATES, "ring member")
        with self._transaction() as db:
            changed = db.execute(
                f"UPDATE ring_members SET {assignments} WHERE run_id = ? AND position = ? AND instance_id = ?",
                (*values, run_id, position, instance_id),
            ).rowcount
        if not changed:
            raise NotFoundError(f"ring {position} of run {run_id} has no server {instance_id}")

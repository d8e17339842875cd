"""SQLite tables and queries for API tokens and the audit log (the ``AccessStore`` port).

Tokens are kept by SHA-256 digest only (see ``domain.access.token_digest``), looked up by a unique
index on it. A partial unique index allows one *live* token per name, so a revoked name can be
given again while the revoked row stays as history; the check runs inside the IMMEDIATE
transaction, so two processes cannot both create the same name.

Every request authenticates, and most only read: ``last_used_at`` is written only when the stored
value is more than ``LAST_USED_PRECISION`` old, so a busy client does not turn reads into writes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from autopatch.domain.access import AuditEntry, Principal, Role, TokenRecord
from autopatch.errors import ConflictError, NotFoundError

ACCESS_MIGRATION = """
    CREATE TABLE api_tokens (
        token_id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        digest TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        revoked_at TEXT,
        last_used_at TEXT
    );
    CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;
    CREATE TABLE audit_log (
        entry_id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        result TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX audit_log_by_time ON audit_log (at, entry_id)
"""
LAST_USED_PRECISION = timedelta(minutes=1)
_TOKEN_COLUMNS = "name, role, created_at, revoked_at, last_used_at"


def _stamp(moment: datetime) -> str:
    """UTC with a fixed width (microseconds always present), so text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _token(row: tuple[Any, ...]) -> TokenRecord:
    name, role, created_at, revoked_at, last_used_at = row
    return TokenRecord(
        name=name,
        role=Role(role),
        created_at=datetime.fromisoformat(created_at),
        revoked_at=_moment(revoked_at),
        last_used_at=_moment(last_used_at),
    )


class AccessTables:
    """Mixed into ``SqliteStore``: needs ``self._transaction``/``self._query`` and ``self.read_only``."""

    read_only: bool
    _transaction: Any  # context manager provided by SqliteStore
    _query: Any  # provided by SqliteStore

    def create_token(self, name: str, role: Role, digest: str, created_at: datetime) -> TokenRecord:
        """Store a token by its digest; ``ConflictError`` when a live token already has this name."""
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM api_tokens WHERE name = ? AND revoked_at IS NULL", (name,)).fetchone():
                raise ConflictError(f"name: a token named {name!r} already exists; revoke it first or pick another")
            db.execute(
                "INSERT INTO api_tokens (name, role, digest, created_at) VALUES (?, ?, ?, ?)",
                (name, str(role), digest, _stamp(created_at)),
            )
        return TokenRecord(name, role, datetime.fromisoformat(_stamp(created_at)), None, None)

    def list_tokens(self) -> list[TokenRecord]:
        rows = self._query(f"SELECT {_TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, token_id")
        return [_token(row) for row in rows]

    def revoke_token(self, name: str, at: datetime) -> TokenRecord:
        """Revoke the live token ``name``; the next request bearing it is refused."""
        with self._transaction() as db:
            row = db.execute(
                f"UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL "
                f"RETURNING {_TOKEN_COLUMNS}",
                (_stamp(at), name),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"name: {name!r} is not a live token (see `autopatch token list`)")
        return _token(row)

    def principal_for_digest(self, digest: str, at: datetime) -> Principal | None:
        """The live token with this digest as a principal, or None; its ``last_used_at`` is kept to the minute."""
        rows = self._query(
            "SELECT token_id, name, role, last_used_at FROM api_tokens WHERE digest = ? AND revoked_at IS NULL",
            (digest,),
        )
        if not rows:
            return None
        token_id, name, role, last_used_at = rows[0]
        used = _moment(last_used_at)
        if not self.read_only and (used is None or at - used >= LAST_USED_PRECISION):
            with self._transaction() as db:
                db.execute("UPDATE api_tokens SET last_used_at = ? WHERE token_id = ?", (_stamp(at), token_id))
        return Principal(name, Role(role))

    def record_audit(self, entry: AuditEntry) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO audit_log (at, actor, action, target, result, detail) VALUES (?, ?, ?, ?, ?, ?)",
                (_stamp(entry.at), entry.actor, entry.action, entry.target, entry.result, entry.detail),
            )

    def list_audit(self, limit: int, offset: int) -> tuple[list[AuditEntry], int]:
        """A page of entries, newest first (ties in time by insertion order), and the total."""
        rows = self._query(
            "SELECT at, actor, action, target, result, detail FROM audit_log "
            "ORDER BY at DESC, entry_id DESC LIMIT ? OFFSET ?",
            (limit, offset),
        )
        total = self._query("SELECT count(*) FROM audit_log")[0][0]
        entries = [AuditEntry(datetime.fromisoformat(at), *rest) for at, *rest in rows]
        return entries, int(total)

"""DynamoDB items of API tokens, the audit log, settings and waiters (``AccessStore``, ``SettingsStore``…).

Items (state table)::

    TOKENS   / DIGEST#<sha256>            a token, live or revoked (history); looked up by digest
    TOKENS   / NAME#<name>                the lock that makes a name unique among live tokens
    AUDIT    / <at>#<nanoseconds>#<nonce> one entry; newest first is a backwards Query
    SETTINGS / <key>                      one admin override
    WAITER#<key> / WAITER                 a Step Functions task token waiting for <key> to end
    COUNTERS / audit                      the number of audit entries (the total beside a page)

Authenticating a request is one GetItem by digest. A token is created in one transaction with its
name lock, both conditional on not existing, so two processes cannot both create a live "ci"
token; revoking deletes the lock in the same transaction that stamps ``revoked_at``, after which
the name may be given again while the revoked token stays as history.

An audit entry and the audit counter move in one transaction, so the total always counts exactly
the entries a page is cut from (a ``Select=COUNT`` Query would read the whole log each time).
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from autopatch.domain.access import AuditEntry, Principal, Role, TokenRecord
from autopatch.errors import ConflictError, NotFoundError, StoreError
from autopatch.store.dynamodb_fleet import counter_action, read_counter
from autopatch.store.dynamodb_io import (
    PK,
    SK,
    DynamoIO,
    Item,
    TransactionCancelled,
    check_action,
    delete_action,
    pk_sk,
    put_action,
    update_action,
)

TOKENS = "TOKENS"
AUDIT = "AUDIT"
AUDIT_COUNTER = "audit"
SETTINGS = "SETTINGS"
LAST_USED_PRECISION = timedelta(minutes=1)


def _stamp(moment: datetime) -> str:
    """UTC with a fixed width (microseconds always present), so text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _token(item: Item) -> TokenRecord:
    return TokenRecord(
        name=item["name"],
        role=Role(item["role"]),
        created_at=datetime.fromisoformat(item["created_at"]),
        revoked_at=_moment(item.get("revoked_at")),
        last_used_at=_moment(item.get("last_used_at")),
    )


def unique_suffix() -> str:
    """Nanoseconds and a nonce: orders entries written in the same microsecond, never collides."""
    return f"{time.time_ns():020d}#{os.urandom(4).hex()}"


class AccessItems:
    """Mixed into ``DynamoStore``: needs ``self._io`` and ``self.state_table``."""

    _io: DynamoIO
    state_table: str

    def create_token(self, name: str, role: Role, digest: str, created_at: datetime) -> TokenRecord:
        """Store a token by its digest; ``ConflictError`` when a live token already has this name."""
        stamp = _stamp(created_at)
        token = {PK: TOKENS, SK: f"DIGEST#{digest}", "name": name, "role": str(role), "created_at": stamp}
        # The creation order of tokens created in the same microsecond (SQLite's row id).
        token |= {"seq": f"{time.time_ns():020d}"}
        try:
            self._io.transact(
                [
                    put_action(
                        self.state_table,
                        {PK: TOKENS, SK: f"NAME#{name}", "digest": digest},
                        "attribute_not_exists(#pk)",
                    ),
                    put_action(self.state_table, token, "attribute_not_exists(#pk)"),
                ]
            )
        except TransactionCancelled as exc:
            if 0 in exc.failed():
                raise ConflictError(
                    f"name: a token named {name!r} already exists; revoke it first or pick another"
                ) from None
            raise StoreError("a token with this digest is already stored") from exc
        return TokenRecord(name, role, datetime.fromisoformat(stamp), None, None)

    def list_tokens(self) -> list[TokenRecord]:
        items = sorted(self._io.query(self.state_table, TOKENS, "DIGEST#"), key=lambda i: (i["created_at"], i["seq"]))
        return [_token(item) for item in items]

    def revoke_token(self, name: str, at: datetime) -> TokenRecord:
        """Revoke the live token ``name``; the next request bearing it is refused."""
        lock = self._io.get(self.state_table, pk_sk(TOKENS, f"NAME#{name}"))
        if lock is None:
            raise NotFoundError(f"name: {name!r} is not a live token (see `autopatch token list`)")
        token_key = pk_sk(TOKENS, f"DIGEST#{lock['digest']}")
        try:
            self._io.transact(
                [
                    delete_action(
                        self.state_table, pk_sk(TOKENS, f"NAME#{name}"), "#digest = :d", {":d": lock["digest"]}
                    ),
                    update_action(
                        self.state_table,
                        token_key,
                        "SET #revoked_at = :at",
                        {":at": _stamp(at)},
                        "attribute_exists(#pk) AND attribute_not_exists(#revoked_at)",
                    ),
                ]
            )
        except TransactionCancelled:  # revoked (and maybe re-created) by someone else meanwhile
            raise NotFoundError(f"name: {name!r} is not a live token (see `autopatch token list`)") from None
        item = self._io.get(self.state_table, token_key)
        assert item is not None  # revoked tokens are never deleted
        return _token(item)

    def principal_for_digest(self, digest: str, at: datetime) -> Principal | None:
        """The live token with this digest as a principal, or None; its ``last_used_at`` is kept to the minute."""
        item = self._io.get(self.state_table, pk_sk(TOKENS, f"DIGEST#{digest}"))
        if item is None or item.get("revoked_at"):
            return None
        used = _moment(item.get("last_used_at"))
        if used is None or at - used >= LAST_USED_PRECISION:
            self._io.update(
                self.state_table, pk_sk(TOKENS, f"DIGEST#{digest}"), "SET #last_used_at = :at", {":at": _stamp(at)}
            )
        return Principal(item["name"], Role(item["role"]))

    def record_audit(self, entry: AuditEntry) -> None:
        item = {
            PK: AUDIT,
            SK: f"{_stamp(entry.at)}#{unique_suffix()}",
            "at": _stamp(entry.at),
            "actor": entry.actor,
            "action": entry.action,
            "target": entry.target,
            "result": entry.result,
            "detail": entry.detail,
        }
        self._io.transact([put_action(self.state_table, item), counter_action(self.state_table, AUDIT_COUNTER)])

    def list_audit(self, limit: int, offset: int) -> tuple[list[AuditEntry], int]:
        """A page of entries, newest first (ties in time by insertion order), and the total."""
        items = list(self._io.query(self.state_table, AUDIT, forward=False, limit=offset + limit))[offset:]
        entries = [
            AuditEntry(
                datetime.fromisoformat(i["at"]), i["actor"], i["action"], i["target"], i["result"], i.get("detail", "")
            )
            for i in items
        ]
        return entries, read_counter(self._io, self.state_table, AUDIT_COUNTER)


class SettingsItems:
    """Admin settings and runs' exposure snapshots, as ``settings_sqlite`` keeps them."""

    _io: DynamoIO
    state_table: str

    def stored_settings(self) -> dict[str, str]:
        return {item[SK]: item["value"] for item in self._io.query(self.state_table, SETTINGS)}

    def put_setting(self, key: str, value: str) -> None:
        updated_at = datetime.now(UTC).isoformat(timespec="seconds")
        self._io.put(self.state_table, {PK: SETTINGS, SK: key, "value": value, "updated_at": updated_at})

    def delete_setting(self, key: str) -> bool:
        return bool(self._io.delete(self.state_table, pk_sk(SETTINGS, key)))

    def save_run_exposure(self, run_id: str, phase: str, counts: dict[str, Any]) -> None:
        """Replace one phase's counts, conditional on the run existing (checked in the same transaction)."""
        item = {PK: f"RUN#{run_id}", SK: f"EXPOSURE#{phase}", "counts": json.dumps(counts, sort_keys=True)}
        try:
            self._io.transact(
                [
                    check_action(
                        self.state_table,
                        pk_sk(f"RUN#{run_id}", "RUN"),
                        "attribute_exists(#pk) AND attribute_not_exists(#aborted)",
                    ),
                    put_action(self.state_table, item),
                ]
            )
        except TransactionCancelled:
            raise NotFoundError(f"run: {run_id!r} is not a known run") from None

    def put_waiter(self, key: str, token: str) -> None:
        """Keep a Step Functions task token under what it waits for (a new one replaces the old)."""
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        self._io.put(self.state_table, pk_sk(f"WAITER#{key}", "WAITER") | {"token": token, "created_at": stamp})

    def take_waiter(self, key: str) -> str | None:
        """The token, deleted by the same DeleteItem that returns it: of two takes, one gets it."""
        taken = self._io.delete(self.state_table, pk_sk(f"WAITER#{key}", "WAITER"))
        return str(taken["token"]) if taken else None

    def run_exposure(self, run_id: str) -> dict[str, dict[str, Any]]:
        items = self._io.query(self.state_table, f"RUN#{run_id}", "EXPOSURE#")
        return {item[SK].removeprefix("EXPOSURE#"): json.loads(item["counts"]) for item in items}

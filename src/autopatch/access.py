"""The access steps the CLI and the HTTP API share: make and revoke tokens, authenticate, audit.

Each step validates its input here (so both edges refuse the same names with the same message),
and hands the store only digests: the plain token exists in memory once, to be shown once.
"""

from __future__ import annotations

from datetime import UTC, datetime

from autopatch.domain.access import (
    AuditEntry,
    Principal,
    Role,
    TokenRecord,
    new_token,
    parse_role,
    parse_token_name,
    token_digest,
)
from autopatch.errors import shorten
from autopatch.store.base import AccessStore

# A bearer value longer than this cannot be one of ours (``ap_`` + 43 characters): refused before hashing.
MAX_TOKEN_LENGTH = 256
# Audit text is capped so a hostile request (ten thousand instance ids) cannot bloat the log.
MAX_AUDIT_TEXT = 2000
RESULT_OK = "ok"


def create_token(
    store: AccessStore, name: str, role: Role | str, now: datetime | None = None
) -> tuple[TokenRecord, str]:
    """A new token named ``name`` with ``role``: its stored record and the plain token, which is never kept.

    ``ValidationError`` for a bad name or role; ``ConflictError`` when a live token has the name.
    """
    checked_name, checked_role = parse_token_name(name), parse_role(role)
    token = new_token()
    record = store.create_token(checked_name, checked_role, token_digest(token), now or datetime.now(UTC))
    return record, token


def revoke_token(store: AccessStore, name: str, now: datetime | None = None) -> TokenRecord:
    """Revoke the live token ``name`` at once; ``NotFoundError`` when there is none."""
    return store.revoke_token(parse_token_name(name), now or datetime.now(UTC))


def authenticate(store: AccessStore, token: str, now: datetime | None = None) -> Principal | None:
    """The principal a bearer token acts as, or None when it is missing, malformed, unknown or revoked."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    return store.principal_for_digest(token_digest(token), now or datetime.now(UTC))


def audit(
    store: AccessStore,
    principal_name: str,
    action: str,
    target: str,
    result: str,
    detail: str = "",
    now: datetime | None = None,
) -> AuditEntry:
    """Record one mutating request (who, what, on what, how it ended) and return the entry written."""
    entry = AuditEntry(
        at=now or datetime.now(UTC),
        actor=shorten(principal_name, MAX_AUDIT_TEXT),
        action=shorten(action, MAX_AUDIT_TEXT),
        target=shorten(target, MAX_AUDIT_TEXT),
        result=shorten(result, MAX_AUDIT_TEXT),
        detail=shorten(detail, MAX_AUDIT_TEXT),
    )
    store.record_audit(entry)
    return entry

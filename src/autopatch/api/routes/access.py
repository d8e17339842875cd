"""``/tokens`` and ``/audit`` (admin): make, list and revoke API tokens; read the audit log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from autopatch.access import create_token, revoke_token
from autopatch.api.deps import AccessStoreDep, AuditTrail, audited, require
from autopatch.api.models import AuditItem, Limit, Offset, Page, TokenCreated, TokenItem, TokenRequest
from autopatch.domain.access import AuditEntry, Role, TokenRecord

# Mutating routes check the role in ``audited`` (so a refusal is logged too); reads check it here.
router = APIRouter(tags=["tokens and audit"])
ADMIN_ONLY = [Depends(require(Role.ADMIN))]


def token_item(record: TokenRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "role": str(record.role),
        "created_at": record.created_at.isoformat(timespec="seconds"),
        "revoked_at": record.revoked_at.isoformat(timespec="seconds") if record.revoked_at else None,
        "last_used_at": record.last_used_at.isoformat(timespec="seconds") if record.last_used_at else None,
        "active": record.active,
    }


def audit_item(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": entry.at.isoformat(timespec="seconds"),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "result": entry.result,
        "detail": entry.detail,
    }


@router.get("/tokens", response_model=Page[TokenItem], dependencies=ADMIN_ONLY)
def list_tokens(store: AccessStoreDep, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    """Every token, live and revoked, oldest first; never a secret."""
    records = store.list_tokens()
    return {"items": [token_item(r) for r in records[offset : offset + limit]], "total": len(records)}


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def make_token(
    body: TokenRequest,
    store: AccessStoreDep,
    trail: Annotated[AuditTrail, Depends(audited("token.create", Role.ADMIN))],
) -> dict[str, Any]:
    """A new token with a role; the answer is the only place the token ever appears."""
    trail.target = body.name
    record, token = create_token(store, body.name, body.role)
    trail.detail = f"role {record.role}"
    return {
        "name": record.name,
        "role": str(record.role),
        "token": token,
        "created_at": record.created_at.isoformat(timespec="seconds"),
    }


@router.delete("/tokens/{name}", response_model=TokenItem)
def delete_token(
    name: str, store: AccessStoreDep, trail: Annotated[AuditTrail, Depends(audited("token.revoke", Role.ADMIN))]
) -> dict[str, Any]:
    """Revoke a token: it stops working at once (404 when no live token has the name)."""
    return token_item(revoke_token(store, name))


@router.get("/audit", response_model=Page[AuditItem], dependencies=ADMIN_ONLY)
def read_audit(store: AccessStoreDep, limit: Limit = 100, offset: Offset = 0) -> dict[str, Any]:
    """The audit log of mutating requests, newest first."""
    entries, total = store.list_audit(limit, offset)
    return {"items": [audit_item(e) for e in entries], "total": total}

"""Who may do what: API token roles, the principal a request acts as, and audit entries.

Pure: no I/O, no adapter import. Three roles, each a superset of the one below it, so "may this
principal do X" is one comparison instead of a permission table to keep in step:

- ``viewer`` reads (catalog, fleet, exposure, runs);
- ``operator`` also scans, patches, retries, reboots and cancels;
- ``admin`` also manages tokens, settings and the catalog, and reads the audit log.

A token is shown once, when it is made, and only its digest is stored: a copy of the database (a
backup, a copy handed to an auditor) then holds nothing that authenticates.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from autopatch.errors import ValidationError

TOKEN_PREFIX = "ap_"  # makes a leaked token recognisable to secret scanners and in logs
TOKEN_BYTES = 32  # 256 bits of randomness
_TOKEN_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
TOKEN_NAME_RULE = "a token name is 1 to 64 ASCII letters, digits, '.', '_' or '-', e.g. ci-deploy"


class Role(StrEnum):
    """A token's role; each role may do everything the roles below it may."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        """True when this role may do what ``needed`` may (admin ⊃ operator ⊃ viewer)."""
        return self.rank >= needed.rank


_RANKS = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}
ROLE_RULE = "a role is one of " + ", ".join(role.value for role in Role)


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the token's name (the audit log's actor) and its role."""

    name: str
    role: Role


@dataclass(frozen=True)
class TokenRecord:
    """A stored token without its secret: what ``token list`` and the API may show."""

    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class AuditEntry:
    """One mutating request: who (token name or ``cli:<user>``), what, on which target, and how it ended."""

    at: datetime
    actor: str
    action: str
    target: str
    result: str
    detail: str = ""


def parse_token_name(value: object) -> str:
    """A token name as given, or ``ValidationError("name", …)``: it becomes the audit log's actor."""
    if not isinstance(value, str) or _TOKEN_NAME.fullmatch(value) is None:
        raise ValidationError("name", value, TOKEN_NAME_RULE)
    return value


def parse_role(value: object) -> Role:
    """The role named by ``value`` (any case, surrounding spaces ignored), or ``ValidationError("role", …)``."""
    if isinstance(value, Role):
        return value
    if isinstance(value, str):
        try:
            return Role(value.strip().lower())
        except ValueError:
            pass
    raise ValidationError("role", value, ROLE_RULE)


def new_token() -> str:
    """A fresh bearer token: the ``ap_`` prefix and 256 random bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> str:
    """The SHA-256 hex digest under which a token is stored and looked up.

    Passwords need a slow, salted hash because people choose guessable ones; these tokens are 256
    random bits, so no dictionary or precomputed table can reach them and a fast unsalted hash is
    as strong as a slow one. Unsalted also makes the digest a direct index key: authenticating a
    request is one indexed lookup, not a scan that hashes every stored token with its salt.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()

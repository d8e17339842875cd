"""Per-request wiring: the store, the fleet adapter, who is asking, and the audit of what they change.

This is the only API module that names an adapter. Each request opens its own ``SqliteStore`` and
closes it afterwards: SQLite in WAL mode lets readers proceed while another connection writes, so
a status read never waits behind a patch run's writes or a catalog import. The fleet adapter is
one per app (the simulator's state file and SSM's clients are safe to share between threads).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from autopatch.access import RESULT_OK, audit, authenticate
from autopatch.api.errors import describe_failure
from autopatch.domain.access import Principal, Role
from autopatch.fleet.base import FleetAdapter
from autopatch.settings import Settings
from autopatch.store.base import AccessStore, Store
from autopatch.wiring import build_fleet

BEARER = HTTPBearer(auto_error=False, description="an AutoPatch API token (`autopatch token create`)")
CHALLENGE = {"WWW-Authenticate": "Bearer"}
INVALID_TOKEN_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class FleetProvider:
    """The configured fleet adapter, built on first use (the simulator reads the catalog when it starts)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._fleet: FleetAdapter | None = None
        self._lock = threading.Lock()

    def get(self, store: Store) -> FleetAdapter:
        with self._lock:
            if self._fleet is None:
                self._fleet = build_fleet(self._settings, store)
            return self._fleet

    def close(self) -> None:
        close_fleet = getattr(self._fleet, "close", None)
        if callable(close_fleet):
            close_fleet()
        self._fleet = None


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


class StorePool:
    """Open stores kept between requests: opening SQLite (connect, pragmas, schema check) costs more than a read.

    A request holds one store from its authentication to its audit entry and then gives it back;
    no two requests share one at the same time. Idle stores beyond ``keep`` are closed.
    """

    def __init__(self, opener: Callable[[], Store], keep: int = 16) -> None:
        self._opener = opener
        self._keep = keep
        self._idle: list[Store] = []
        self._lock = threading.Lock()
        self._closed = False

    def acquire(self) -> Store:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._opener()

    def release(self, store: Store) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._keep:
                self._idle.append(store)
                return
        store.close()

    def close(self) -> None:
        with self._lock:
            self._closed, idle, self._idle = True, self._idle, []
        for store in idle:
            store.close()


async def open_store(request: Request) -> AsyncIterator[Store]:
    """The request's store, from the app's pool (async: no worker-thread hop just to hand it over)."""
    pool: StorePool = request.app.state.stores
    store = pool.acquire()
    try:
        yield store
    finally:
        pool.release(store)


def fleet_of(request: Request, store: Store) -> FleetAdapter:
    """The app's fleet adapter; the first call builds it (the simulator reads the catalog): not on the event loop."""
    provider: FleetProvider = request.app.state.fleet
    return provider.get(store)


def get_fleet(request: Request, store: Annotated[Store, Depends(open_store)]) -> FleetAdapter:
    return fleet_of(request, store)


StoreDep = Annotated[Store, Depends(open_store)]
AccessStoreDep = Annotated[AccessStore, Depends(open_store)]
FleetDep = Annotated[FleetAdapter, Depends(get_fleet)]


async def current_principal(
    store: AccessStoreDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]
) -> Principal:
    """Who sends the request: 401 (with a Bearer challenge) when the token is missing, unknown or revoked."""
    if credentials is None:
        raise HTTPException(401, "missing token: send Authorization: Bearer <token>", headers=CHALLENGE)
    principal = authenticate(store, credentials.credentials)
    if principal is None:
        raise HTTPException(401, "invalid or revoked token", headers=INVALID_TOKEN_CHALLENGE)
    return principal


def _forbidden(principal: Principal, needed: Role) -> HTTPException:
    return HTTPException(403, f"token {principal.name!r} has role {principal.role}: this needs {needed} or higher")


def require(needed: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets a request through only when its token's role allows ``needed`` (else 403)."""

    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.role.allows(needed):
            raise _forbidden(principal, needed)
        return principal

    return dependency


@dataclass
class AuditTrail:
    """One mutating request's audit entry: the route may sharpen ``target`` and ``detail`` before it ends."""

    principal: Principal
    action: str
    target: str
    detail: str = ""


def error_result(exc: BaseException) -> str:
    """The audit result of a refused or failed request: its HTTP status and one line of why."""
    return f"error: {describe_failure(exc)}"


def audited(action: str, needed: Role = Role.OPERATOR) -> Callable[..., Iterator[AuditTrail]]:
    """A dependency for a mutating route: checks the role and writes one audit entry however the request ends.

    A request refused for its role (403), its input (422) or the state (409) is recorded as well
    as one that succeeded: the log answers "who tried to reboot this server", not only "who did".
    """

    def dependency(
        request: Request, store: AccessStoreDep, principal: Annotated[Principal, Depends(current_principal)]
    ) -> Iterator[AuditTrail]:
        target = "/".join(str(value) for value in request.path_params.values())
        trail = AuditTrail(principal, action, target)
        if not principal.role.allows(needed):
            refusal = _forbidden(principal, needed)
            audit(store, principal.name, action, trail.target, error_result(refusal))
            raise refusal
        try:
            yield trail
        except Exception as exc:
            audit(store, principal.name, action, trail.target, error_result(exc), trail.detail)
            raise
        audit(store, principal.name, action, trail.target, RESULT_OK, trail.detail)

    return dependency

"""The FastAPI app factory: routers under ``/api/v1``, error handlers, CORS, the fleet adapter's lifetime.

What this slice serves: health, instances (list, one, status, scan, reboot), catalog queries,
exposure, runs (list, show, cancel, dry-run plans), tokens and the audit log. Not yet here:
starting patch runs from the API and driving them in this process (a worker pool holding the
runs' leases, resuming runs whose lease expired at start), retries, ``/runs/{id}/events``,
catalog update jobs, the original's compatibility endpoints and the dashboard. Until then, runs
are started with ``autopatch patch``; they show up in the API at once (the same database).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from autopatch import __version__
from autopatch.api.deps import FleetProvider
from autopatch.api.errors import install_error_handlers
from autopatch.api.models import ErrorBody, Health
from autopatch.api.routes import access, catalog, exposure, instances, runs
from autopatch.settings import Settings

API_PREFIX = "/api/v1"
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (401, "missing, unknown or revoked token"),
        (403, "the token's role is too low"),
        (404, "unknown instance, run, KB or token"),
        (409, "the request collides with the current state (a live run holds the server)"),
        (422, "bad input: the field and the rule it breaks"),
        (503, "the database, the fleet or MSRC failed; retrying later may help"),
    )
}


def health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/health", response_model=Health)
    def health() -> Health:
        """Liveness, without a token (load balancers and monitors have none)."""
        return Health(status="ok", version=__version__)

    return router


def create_app(settings: Settings) -> FastAPI:
    """The API for ``settings``: every request opens its own store on ``settings.db``."""
    fleet = FleetProvider(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        fleet.close()

    app = FastAPI(
        title="AutoPatch",
        version=__version__,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.fleet = fleet
    install_error_handlers(app)
    app.include_router(health_router(), prefix=API_PREFIX)
    for module in (instances, exposure, catalog, runs, access):
        app.include_router(module.router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    if settings.cors_origin_list:  # closed by default: no header at all, so browsers refuse cross-origin reads
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app

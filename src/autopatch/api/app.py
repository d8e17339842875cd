"""The FastAPI app factory: routers under ``/api/v1``, error handlers, CORS, the fleet adapter's lifetime.

Served: health, instances (list, one, status, scan, reboot), catalog queries and update jobs,
exposure, runs (list, show, start, retry, cancel, dry-run plans, live events), tokens, the
audit log and run-time settings, maintenance windows, patch baselines, who a token is (``/me``), and the dashboard's
static files at ``/``. Runs started here are driven in this process by ``RunWorker`` (a thread pool
holding the runs' leases; at start it resumes runs whose lease expired); runs started with
``autopatch patch`` show up at once (the same database). The maintenance-window scheduler runs
here too (``api/window_scheduler.py``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from autopatch import __version__
from autopatch.api import compat
from autopatch.api.deps import FleetProvider, StorePool
from autopatch.api.errors import describe_failure, install_error_handlers
from autopatch.api.jobs import JobBoard
from autopatch.api.models import ErrorBody, Health
from autopatch.api.rendered import RenderedByRevision
from autopatch.api.routes import access, catalog, exposure, instances, jobs, me, runs, snapshots
from autopatch.api.routes import baselines as baseline_routes
from autopatch.api.routes import deadlines as deadline_routes
from autopatch.api.routes import reports as report_routes
from autopatch.api.routes import settings as settings_routes
from autopatch.api.routes import windows as window_routes
from autopatch.api.run_worker import RunDriver, RunWorker
from autopatch.api.window_scheduler import serve_scheduler
from autopatch.errors import AutoPatchError
from autopatch.exposure_cache import FleetExposureCache
from autopatch.settings import Settings
from autopatch.wiring import open_store

log = logging.getLogger(__name__)
DASHBOARD = Path(__file__).resolve().parent.parent / "dashboard"
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


def warm_fleet_summary(stores: StorePool, exposure: FleetExposureCache) -> None:
    store = stores.acquire()
    try:
        exposure.get(store)
    except AutoPatchError as exc:  # only a head start: the first request computes it then
        log.warning("the fleet summary was not computed at start: %s", exc)
    finally:
        stores.release(store)


def run_driver(settings: Settings, fleet: FleetProvider) -> RunDriver:
    """Runs are driven here (``autopatch serve``) unless a Step Functions workflow is configured (AWS)."""
    if settings.state_machine_arn is None:
        return RunWorker(settings, fleet=fleet)
    import boto3  # type: ignore[import-untyped, unused-ignore]

    from autopatch.aws.run_starter import StepFunctionsRuns

    return StepFunctionsRuns(
        lambda: open_store(settings),
        fleet.get,
        settings.state_machine_arn,
        settings.retry_state_machine_arn,
        boto3.client("stepfunctions", region_name=settings.aws_region),
    )


def create_app(settings: Settings, start_worker: bool = True, start_scheduler: bool | None = None) -> FastAPI:
    """The API for ``settings``: every request opens its own store on ``settings.db``.

    ``start_worker=False`` leaves unfinished runs alone at start (tests that set runs up by hand);
    runs submitted through the API are driven either way. ``start_scheduler`` (default: as
    ``start_worker``) runs the maintenance-window scheduler's passes in the background.
    """
    fleet = FleetProvider(settings)
    stores = StorePool(lambda: open_store(settings))
    fleet_summary = FleetExposureCache()
    worker = run_driver(settings, fleet)
    wants_scheduler = start_worker if start_scheduler is None else start_scheduler
    scheduler = serve_scheduler(settings, fleet) if wants_scheduler else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start_worker:
            worker.start()
        # The fleet summary takes seconds at 10,000 servers: assessed once now, off the event loop,
        # so that the first dashboard to open finds it ready.
        threading.Thread(
            target=warm_fleet_summary, args=(stores, fleet_summary), name="warm-exposure", daemon=True
        ).start()
        if scheduler is not None:
            scheduler.start()
        yield
        if scheduler is not None:
            scheduler.shutdown()
        worker.shutdown()
        fleet.close()
        stores.close()

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
    app.state.stores = stores
    app.state.exposure = fleet_summary
    app.state.status_views = RenderedByRevision()
    app.state.run_worker = worker
    app.state.jobs = JobBoard(lambda: open_store(settings), describe_failure)
    install_error_handlers(app)
    app.include_router(health_router(), prefix=API_PREFIX)
    routers = (instances, exposure, catalog, runs, jobs, access, settings_routes, me, snapshots, window_routes)
    for module in (*routers, baseline_routes, deadline_routes, report_routes):
        app.include_router(module.router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.include_router(compat.router, responses=ERROR_RESPONSES)  # the original's seven, at the root
    if settings.cors_origin_list:  # closed by default: no header at all, so browsers refuse cross-origin reads
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "PUT", "DELETE"],  # PUT: settings, windows and baselines
            allow_headers=["Authorization", "Content-Type"],
        )
    # Last, so every route above wins: the dashboard's static files (no token; they call /api/v1 with one).
    app.mount("/", StaticFiles(directory=DASHBOARD, html=True), name="dashboard")
    return app

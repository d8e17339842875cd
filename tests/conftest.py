"""Shared fixtures: the real MSRC documents in ../shared/data/msrc (read, never copied)."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from autopatch.catalog.ingest import import_paths
from autopatch.cli.context import load_settings
from autopatch.fleet.simulator import FleetSimulator, SimulatorConfig
from autopatch.store.sqlite import SqliteStore
from autopatch.wiring import build_fleet


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the settings they set: ``make`` exports AUTOPATCH_CATALOG_DIR for the demo."""
    for name in [name for name in os.environ if name.startswith("AUTOPATCH_")]:
        monkeypatch.delenv(name)


MSRC_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "msrc"
CVRF_XML = MSRC_DATA / "cvrf-xml"
CVRF_JSON = MSRC_DATA / "cvrf-json"
SUG = MSRC_DATA / "sug"
# Months the catalog tests need: a year of Windows Server 2022 cumulative updates plus the
# months MSRC_DATA.md quotes as worked examples.
CATALOG_MONTHS = (
    "2021-Jul",
    "2023-Oct",
    "2023-Nov",
    "2023-Dec",
    "2024-Jan",
    "2024-Feb",
    "2024-Mar",
    "2024-Nov",
    "2025-Jan",
    "2025-Sep",
    "2025-Oct",
)


# The history exposure tests need: Windows Server 2016's first cumulative updates through February
# 2019 (the chains, their holes, 2017-May-B and 2018-FEB), the months that fixed Zerologon,
# PrintNightmare and MSHTML, and the months where MSRC lists a fix on another build branch.
HISTORY_MONTHS = (
    *(f"{year}-{month}" for year, month in (("2016", "Oct"), ("2016", "Nov"), ("2016", "Dec"))),
    *(f"2017-{month}" for month in ("Jan", "Feb", "Mar", "Apr", "May", "May-B", "Jun", "Jul", "Aug", "Sep")),
    *(f"2017-{month}" for month in ("Oct", "Nov", "Dec")),
    *(f"2018-{month}" for month in ("Jan", "FEB", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct")),
    *(f"{year}-{month}" for year, month in (("2018", "Nov"), ("2018", "Dec"), ("2019", "Jan"), ("2019", "Feb"))),
    "2020-Aug",
    "2021-Jul",
    "2021-Sep",
    "2024-Oct",
    "2025-Jun",
    "2025-Jul",
)


def xml_path(month: str) -> Path:
    return CVRF_XML / f"{month}.xml.gz"


@contextmanager
def _shared_lock(path: Path) -> Iterator[None]:
    """One builder at a time across pytest-xdist workers (they share the base temp folder)."""
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session", autouse=True)
def _require_shared_data() -> None:
    if not CVRF_XML.is_dir():
        pytest.skip(f"the team's MSRC data is not at {MSRC_DATA}", allow_module_level=True)


@pytest.fixture(scope="session")
def catalog_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog database built once per test session from real monthly documents."""
    path = tmp_path_factory.mktemp("catalog") / "catalog.db"
    store = SqliteStore(path)
    import_paths(store, [xml_path(month) for month in CATALOG_MONTHS], workers=1)
    store.close()
    return path


@pytest.fixture(scope="session")
def history_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The history catalog, built once for all xdist workers (about 40 documents)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the run's own folder either way
    path = shared / "history.db"
    with _shared_lock(shared / "history.lock"):
        if not path.exists():
            building = shared / "history.building.db"
            building.unlink(missing_ok=True)
            store = SqliteStore(building)
            import_paths(store, [xml_path(month) for month in HISTORY_MONTHS], workers=2)
            store.close()
            building.rename(path)
    return path


@pytest.fixture
def history(history_db: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(history_db)
    yield store
    store.close()


@pytest.fixture
def catalog(catalog_db: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(catalog_db)
    yield store
    store.close()


@pytest.fixture
def empty_store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "empty.db")
    yield store
    store.close()


@pytest.fixture
def lab(catalog_db: Path, tmp_path: Path) -> Iterator[tuple[SqliteStore, FleetSimulator]]:
    """A copy of the session catalog for runs, plus a fresh 10-server Windows Server 2022 fleet."""
    shutil.copyfile(catalog_db, tmp_path / "runs.db")  # the session store is closed: no WAL left
    store = SqliteStore(tmp_path / "runs.db")
    catalog = SqliteStore(catalog_db)
    config = SimulatorConfig(
        servers=10,
        seed=11,
        offline_fraction=0.0,
        failure_rate=0.0,
        time_scale=100_000.0,
        products=["Windows Server 2022"],
        core_fraction=0.0,
    )
    fleet = FleetSimulator(catalog, config, state_path=tmp_path / "fleet.db")
    yield store, fleet
    fleet.close()
    store.close()
    catalog.close()


@pytest.fixture
def env(tmp_path: Path, catalog_db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's environment: a copy of the session catalog and six simulated servers (seed 11, one offline)."""
    db = tmp_path / "cli.db"
    db.write_bytes(catalog_db.read_bytes())
    monkeypatch.setenv("AUTOPATCH_DB", str(db))
    monkeypatch.setenv("AUTOPATCH_SIMULATOR_SERVERS", "6")
    monkeypatch.setenv("AUTOPATCH_SIMULATOR_SEED", "11")
    monkeypatch.setenv("AUTOPATCH_SIMULATOR_TIME_SCALE", "50000")
    monkeypatch.setenv("AUTOPATCH_NOTIFY", "")
    return db


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``autopatch`` in-process through its real entry point: (exit code, stdout, stderr)."""
    from autopatch.cli.app import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@contextmanager
def configured_simulator() -> Iterator[FleetSimulator]:
    """The very fleet the CLI or the server drives (same settings, same state file), to look at or inject faults."""
    settings = load_settings()
    store = SqliteStore(settings.db)
    fleet = build_fleet(settings, store)
    assert isinstance(fleet, FleetSimulator)
    try:
        yield fleet
    finally:
        fleet.close()
        store.close()


@pytest.fixture
def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's AWS: fake credentials and us-east-1, so no test ever reaches a real account."""
    for variable, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(variable, value)

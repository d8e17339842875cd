"""A simulated fleet as it stood in December 2023, planned against the session's later catalog.

Baseline rules only show at a Patch Tuesday: a server must lack January's and February's 2024
cumulative updates. The simulator puts servers on the cumulative updates its catalog knows, so the
fleet is made from October-December 2023 alone (seed 3: two Windows Server 2022 servers at
KB5033118, 10.0.20348.2159, one tagged Environment=prod and one Environment=test; Windows Server
2019 at KB5033371; 23H2 Core), and kept beside a copy of the session catalog
(``CATALOG_MONTHS``, 2021-Jul … 2025-Oct), as a fleet is kept while new months are imported.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from autopatch.catalog.ingest import import_paths
from autopatch.fleet.simulator import FleetSimulator, SimulatorConfig
from autopatch.store.sqlite import SqliteStore

from .conftest import xml_path

FLEET_MONTHS = ("2023-Oct", "2023-Nov", "2023-Dec")
SEED = 3
SERVERS = 6
TIME_SCALE = 50_000.0
WS2022_PROD = "sim-ws2022-004"  # Windows Server 2022 at 10.0.20348.2159, Environment=prod
WS2022_TEST = "sim-ws2022-005"  # Windows Server 2022 at 10.0.20348.2159, Environment=test
DECEMBER_2023_BUILD = "10.0.20348.2159"


def simulator_config() -> SimulatorConfig:
    """What ``wiring.build_fleet`` makes of AUTOPATCH_SIMULATOR_SERVERS/SEED/TIME_SCALE below."""
    return SimulatorConfig(servers=SERVERS, seed=SEED, time_scale=TIME_SCALE)


def build_template(folder: Path, catalog_db: Path) -> Path:
    """``folder/aged.db`` (the session catalog) and ``aged.simulator.db`` (servers from 2023's last quarter)."""
    fleet_catalog = SqliteStore(folder / "fleet-catalog.db")
    try:
        import_paths(fleet_catalog, [xml_path(month) for month in FLEET_MONTHS], workers=1)
        FleetSimulator(fleet_catalog, simulator_config(), state_path=folder / "aged.simulator.db").close()
    finally:
        fleet_catalog.close()
    shutil.copyfile(catalog_db, folder / "aged.db")
    return folder / "aged.db"


@pytest.fixture(scope="session")
def aged_template(tmp_path_factory: pytest.TempPathFactory, catalog_db: Path) -> Path:
    return build_template(tmp_path_factory.mktemp("aged"), catalog_db)


def copy_aged(template: Path, folder: Path) -> Path:
    """A fresh copy of the template (database and simulator state) in ``folder``."""
    db = folder / "aged.db"
    shutil.copyfile(template, db)
    shutil.copyfile(template.with_suffix(".simulator.db"), db.with_suffix(".simulator.db"))
    return db


@pytest.fixture
def aged_env(aged_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's and the API's environment on a copy of the aged fleet."""
    db = copy_aged(aged_template, tmp_path)
    monkeypatch.setenv("AUTOPATCH_DB", str(db))
    monkeypatch.setenv("AUTOPATCH_SIMULATOR_SERVERS", str(SERVERS))
    monkeypatch.setenv("AUTOPATCH_SIMULATOR_SEED", str(SEED))
    monkeypatch.setenv("AUTOPATCH_SIMULATOR_TIME_SCALE", str(int(TIME_SCALE)))
    monkeypatch.setenv("AUTOPATCH_NOTIFY", "")
    assert db.with_suffix(".simulator.db").exists()
    return db

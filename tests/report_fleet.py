"""A simulated fleet patched over four simulated months, with its exposure history: what the reports read.

Two databases, as two roles:

- the *engine's* (``engine.db``): the catalog as it grows month by month, the fleet simulator on it
  (Windows Update offers the newest cumulative update the catalog knows), and the patch runs —
  planned, installed, rebooted and verified by the real engine. Its own scans are stamped with
  today's time, so its history is not the one looked at.
- the *reports'* (``reports.db``): the same months imported as they come out, the same servers
  discovered, and the fleet's scans stamped with the simulated day they stand for, stored with
  ``scan_history.store_scans`` — the very call every fleet scan makes.

Each month: its catalog is imported (a Patch Tuesday), the fleet is scanned (the new CVEs are
open), some servers are patched by a run, and the fleet is scanned again a week later. One server
(the laggard) is patched only in the last month; another server is never patched at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from autopatch.assessment import fleet_exposure
from autopatch.catalog.ingest import import_paths
from autopatch.domain.fleet import Instance, ScanReport
from autopatch.domain.polling import PollPolicy
from autopatch.engine.options import RunOptions
from autopatch.engine.planning import plan_run, store_plan
from autopatch.engine.runner import Engine
from autopatch.fleet.simulator import FleetSimulator, SimulatorConfig
from autopatch.scan_history import store_scans
from autopatch.scanning import discover_instances, scan_instances
from autopatch.store.sqlite import SqliteStore

from .conftest import xml_path

FAST = PollPolicy(first_delay=0.001, factor=1.5, max_delay=0.01, timeout=5.0)
FIRST_MONTHS = ("2023-Oct", "2023-Nov", "2023-Dec")
# (month imported before the scan or None, the pre-patch scan's day): the post-patch scan is a week later.
MONTHS: tuple[tuple[str | None, date], ...] = (
    (None, date(2023, 12, 20)),
    ("2024-Jan", date(2024, 1, 17)),
    ("2024-Feb", date(2024, 2, 21)),
    ("2024-Mar", date(2024, 3, 20)),
)
AFTER = timedelta(days=7)
LAST_DAY = date(2024, 3, 31)
SERVERS = 6


SEED = 5


def config() -> SimulatorConfig:
    """The shape ``autopatch serve`` makes of AUTOPATCH_SIMULATOR_SERVERS=6 and _SEED=5 (one server offline)."""
    return SimulatorConfig(servers=SERVERS, seed=SEED, failure_rate=0.0, time_scale=100_000.0)


@dataclass
class SimulatedHistory:
    """What the simulation did: the reports' database, the scans it stored per simulated day, who was patched when."""

    reports_db: Path
    engine_db: Path
    servers: list[str]
    laggard: str  # patched in the last month only
    never: str  # never patched
    scans: dict[datetime, dict[str, ScanReport]] = field(default_factory=dict)
    patched: dict[date, list[str]] = field(default_factory=dict)
    # What ``autopatch exposure`` (every CVE decided with its reason) said right after each scan was
    # stored: per time, per server, each open CVE with its severity and due date. The other way to count.
    exposure: dict[datetime, dict[str, dict[str, tuple[str | None, str | None]]]] = field(default_factory=dict)


def at_nine(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 9, 0, tzinfo=UTC)


def _scan(
    history: SimulatedHistory, fleet: FleetSimulator, store: SqliteStore, instances: list[Instance], at: datetime
) -> None:
    """Scan the fleet now, store the reports as taken at ``at`` (the simulated day), and note what exposure says."""
    outcome = scan_instances(fleet, store, instances, policy=FAST, sleep=lambda _: None, save=False)
    reports = {key: replace(report, scanned_at=at) for key, report in outcome.reports.items()}
    store_scans(store, reports.values(), instances)
    history.scans[at] = reports
    history.exposure[at] = {
        row["instance_id"]: {
            cve["cve"]: (cve["severity"], cve.get("due")) for cve in row["cves"] if cve["status"] == "open"
        }
        for row in fleet_exposure(store, with_cves=True)
        if row["status"] == "assessed"
    }


def simulate_months(folder: Path) -> SimulatedHistory:
    engine = SqliteStore(folder / "engine.db")
    reports = SqliteStore(folder / "reports.db")
    state = folder / "reports.simulator.db"
    try:
        for store in (engine, reports):
            import_paths(store, [xml_path(month) for month in FIRST_MONTHS], workers=1)
        fleet = FleetSimulator(engine, config(), state_path=state)
        instances = discover_instances(fleet, engine)
        reports.save_instances(instances, at_nine(MONTHS[0][1]))
        ids = sorted(instance.instance_id for instance in instances if instance.online)
        history = SimulatedHistory(folder / "reports.db", folder / "engine.db", ids, laggard="", never="")
        for index, (month, day) in enumerate(MONTHS):
            if month is not None:
                for store in (engine, reports):
                    import_paths(store, [xml_path(month)], workers=1)
                fleet.close()
                fleet = FleetSimulator(engine, config(), state_path=state)  # Windows Update offers the new month
            _scan(history, fleet, reports, instances, at_nine(day))
            if index == 0:  # the two servers furthest behind: one is never patched, one only in the last month
                behind = sorted(ids, key=lambda i: (-len(history.exposure[at_nine(day)].get(i, {})), i))
                history.never, history.laggard = behind[0], behind[1]
            last = index == len(MONTHS) - 1
            chosen = [
                i for i in instances if i.instance_id != history.never and (last or i.instance_id != history.laggard)
            ]
            plan = plan_run(engine, fleet, chosen)
            store_plan(engine, plan)
            options = RunOptions(concurrency=3, poll=FAST, reboot_timeout=2.0, install_timeout=2.0)
            Engine(engine, fleet).execute(plan.run.run_id, options)
            history.patched[day] = sorted({item.instance_id for item in plan.items if item.state.value == "Pending"})
            _scan(history, fleet, reports, instances, at_nine(day + AFTER))
        fleet.close()
        return history
    finally:
        engine.close()
        reports.close()

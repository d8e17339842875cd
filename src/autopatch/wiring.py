"""Adapters built from settings, in one place for every entry point (the CLI, ``autopatch serve``).

The fleet adapter and the engine's poll policy depend on which fleet is configured; the CLI and
the server's run worker both drive runs, so both read them from here and cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

from autopatch.domain.polling import PollPolicy
from autopatch.fleet.base import FleetAdapter
from autopatch.settings import Settings
from autopatch.store.base import CatalogStore, Store

# Simulated servers answer in (scaled) seconds: poll them often.
SIMULATOR_POLL = PollPolicy(first_delay=0.05, factor=1.5, max_delay=2.0, timeout=600.0)


def simulator_state_path(settings: Settings) -> Path:
    return Path(settings.db).with_suffix(".simulator.db")


def build_fleet(settings: Settings, store: CatalogStore) -> FleetAdapter:
    """The configured fleet adapter (the simulator keeps its state beside the database)."""
    if settings.fleet == "ssm":
        from autopatch.fleet.ssm import SsmFleet

        return SsmFleet(
            region=settings.aws_region,
            output_s3_bucket=settings.ssm_output_bucket,
            cloudwatch_output=settings.ssm_cloudwatch_output,
        )
    from autopatch.fleet.simulator import FleetSimulator, SimulatorConfig

    config = SimulatorConfig(
        servers=settings.simulator_servers, seed=settings.simulator_seed, time_scale=settings.simulator_time_scale
    )
    return FleetSimulator(store, config, state_path=simulator_state_path(settings))


def fleet_poll(settings: Settings) -> PollPolicy | None:
    """The poll policy runs use on the configured fleet; None keeps the engine's default (real servers)."""
    return SIMULATOR_POLL if settings.fleet == "simulator" else None


def open_store(settings: Settings) -> Store:
    """The configured store: SQLite on ``settings.db``, or DynamoDB on the two tables of the AWS deployment."""
    if settings.store == "dynamodb":
        from autopatch.store.dynamodb import DynamoStore

        return DynamoStore(settings.catalog_table, settings.state_table, region=settings.aws_region)
    from autopatch.store.sqlite import SqliteStore

    return SqliteStore(settings.db)

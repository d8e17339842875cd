"""Wiring for CLI commands: settings, the store and the MSRC client, built in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

import pydantic
from rich.console import Console

from autopatch.admin_settings import effective_settings
from autopatch.errors import ValidationError
from autopatch.fleet.base import FleetAdapter
from autopatch.notify.base import Notifier
from autopatch.notify.factory import notifiers_from_settings
from autopatch.settings import Settings
from autopatch.store.base import Store
from autopatch.wiring import build_fleet, open_store


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with CLI flags (non-None) on top; errors name the variable."""
    try:
        settings = Settings()
        values = {key: value for key, value in overrides.items() if value is not None}
        # Only what the environment and the flags set stays "set": stored settings fill the rest.
        return Settings.model_validate({**settings.model_dump(exclude_unset=True), **values}) if values else settings
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        name = "AUTOPATCH_" + str(error["loc"][0]).upper() if error["loc"] else "settings"
        raise ValidationError(name, error.get("input"), error["msg"]) from exc


@dataclass
class CliContext:
    settings: Settings
    console: Console = field(default_factory=lambda: Console(stderr=True))
    _store: Store | None = None
    _fleet: FleetAdapter | None = None

    @property
    def store(self) -> Store:
        """The configured store: SQLite on AUTOPATCH_DB, or the AWS deployment's DynamoDB tables."""
        if self._store is None:
            self._store = open_store(self.settings)
        return self._store

    @property
    def fleet(self) -> FleetAdapter:
        """The configured fleet adapter, built on first use (the simulator keeps its state beside the db)."""
        if self._fleet is None:
            self._fleet = build_fleet(self.settings, self.store)
        return self._fleet

    @property
    def effective_settings(self) -> Settings:
        """The settings with what an admin stored (``autopatch settings set``) where the environment is silent."""
        return effective_settings(self.settings, self.store)

    @property
    def notifiers(self) -> list[Notifier]:
        return notifiers_from_settings(self.effective_settings.notify)

    def close(self) -> None:
        close_fleet = getattr(self._fleet, "close", None)
        if callable(close_fleet):
            close_fleet()
        if self._store is not None:
            self._store.close()

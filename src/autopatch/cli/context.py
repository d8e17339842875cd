"""Wiring for CLI commands: settings, the store and the MSRC client, built in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pydantic
from rich.console import Console

from autopatch.errors import ValidationError
from autopatch.settings import Settings
from autopatch.store.sqlite import SqliteStore


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with CLI flags (non-None) on top; errors name the variable."""
    try:
        settings = Settings()
        values = {key: value for key, value in overrides.items() if value is not None}
        return Settings.model_validate({**settings.model_dump(), **values}) if values else settings
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        name = "AUTOPATCH_" + str(error["loc"][0]).upper() if error["loc"] else "settings"
        raise ValidationError(name, error.get("input"), error["msg"]) from exc


@dataclass
class CliContext:
    settings: Settings
    console: Console = field(default_factory=lambda: Console(stderr=True))
    _store: SqliteStore | None = None

    @property
    def store(self) -> SqliteStore:
        if self._store is None:
            self._store = SqliteStore(Path(self.settings.db))
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

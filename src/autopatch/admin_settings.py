"""Settings an admin changes while AutoPatch runs (``autopatch settings``, ``/api/v1/settings``).

Only a few settings make sense to change without a restart and from afar: where run summaries go
and how patient MSRC downloads are. The database, the fleet and CORS stay with the environment
(a remote admin must not point the server at another database, or read files through a catalog
folder). Precedence: an ``AUTOPATCH_*`` variable (or CLI flag) > a stored value > the default. A
value is checked by the same ``Settings`` model as the environment before it is stored, so a
stored value never stops the next start; the notifier setting is also parsed once, and it is only
ever shown masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pydantic

from autopatch.errors import ValidationError
from autopatch.notify.factory import masked_spec, notifiers_from_settings
from autopatch.settings import Settings
from autopatch.store.base import SettingsStore


@dataclass(frozen=True)
class ManagedSetting:
    key: str
    description: str
    secret: bool = False


MANAGED: dict[str, ManagedSetting] = {
    setting.key: setting
    for setting in (
        ManagedSetting(
            "notify",
            "where run summaries go: console, webhook+URL, slack+URL, sns:TOPIC-ARN, smtp://… (comma-separated)",
            secret=True,
        ),
        ManagedSetting("http_timeout", "seconds per request to MSRC"),
        ManagedSetting("http_retries", "retries after a 429/5xx/network error (1-10)"),
        ManagedSetting("import_workers", "parser processes for folder imports (1-16)"),
    )
}


def parse_key(key: str) -> str:
    if key not in MANAGED:
        raise ValidationError("key", key, f"is not a setting an admin can change; one of: {', '.join(MANAGED)}")
    return key


def _checked(base: Settings, key: str, value: str) -> Settings:
    try:
        settings = Settings.model_validate({**base.model_dump(), key: value})
    except pydantic.ValidationError as exc:
        shown = "(hidden)" if MANAGED[key].secret else value
        raise ValidationError(key, shown, exc.errors()[0]["msg"]) from exc
    if key == "notify":
        notifiers_from_settings(value)  # a ValidationError naming the entry (masked) and the rule
    return settings


def effective_settings(base: Settings, store: SettingsStore) -> Settings:
    """``base`` with the stored values of the settings the environment did not set."""
    stored = {k: v for k, v in store.stored_settings().items() if k in MANAGED and k not in base.model_fields_set}
    settings = base
    for key, value in stored.items():
        try:
            settings = _checked(settings, key, value)
        except ValidationError:  # checked when stored; a newer AutoPatch may be stricter: keep the default
            continue
    return settings


def settings_view(base: Settings, store: SettingsStore) -> list[dict[str, Any]]:
    """Each managed setting: its value now (secrets masked), where it comes from, and what it does."""
    stored = store.stored_settings()
    settings = effective_settings(base, store)
    rows = []
    for key, managed in MANAGED.items():
        if key in base.model_fields_set:
            source = "environment"
        elif key in stored:
            source = "stored"
        else:
            source = "default"
        value = getattr(settings, key)
        shown = masked_spec(value) if managed.secret else str(value)
        rows.append({"key": key, "value": shown, "source": source, "description": managed.description})
    return rows


def set_setting(base: Settings, store: SettingsStore, key: str, value: str) -> dict[str, Any]:
    """Check and store one value; the row as ``settings_view`` shows it afterwards.

    A key the environment sets is refused: the stored value would never apply, and the admin
    would believe it does.
    """
    key = parse_key(key)
    if key in base.model_fields_set:
        raise ValidationError(key, "(set)", f"AUTOPATCH_{key.upper()} is set in the environment, which wins")
    _checked(base, key, value)
    store.put_setting(key, value)
    return next(row for row in settings_view(base, store) if row["key"] == key)


def unset_setting(base: Settings, store: SettingsStore, key: str) -> dict[str, Any]:
    """Forget a stored value (back to the environment or the default); the row afterwards."""
    store.delete_setting(parse_key(key))
    return next(row for row in settings_view(base, store) if row["key"] == key)

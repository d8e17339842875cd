"""The SLA policy in force: stored by an admin (``autopatch sla set``, ``PUT /api/v1/sla``) or the default.

The policy is kept in the settings store under one key (``sla_policy``, a JSON object of days per
severity) so both adapters hold it without a new table; it is not one of the ``autopatch settings``
keys because it has its own command, validation and audit action.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from autopatch.domain.sla import DEFAULT_SLA, SlaPolicy
from autopatch.errors import ValidationError
from autopatch.store.base import SettingsStore

SLA_SETTING_KEY = "sla_policy"
SEVERITY_FIELDS = ("critical", "important", "moderate", "low")


def load_sla_policy(store: SettingsStore) -> SlaPolicy:
    """The stored policy, or ``DEFAULT_SLA`` when none is stored (or the stored one no longer validates)."""
    raw = store.stored_settings().get(SLA_SETTING_KEY)
    if raw is None:
        return DEFAULT_SLA
    try:
        stored = json.loads(raw)
        return SlaPolicy(**{name: int(stored[name]) for name in SEVERITY_FIELDS})
    except (ValueError, TypeError, KeyError, ValidationError):  # written by a different version: keep going
        return DEFAULT_SLA


def changed_policy(current: SlaPolicy, changes: dict[str, Any]) -> SlaPolicy:
    """``current`` with the given days replaced; a ``ValidationError`` naming the field and the rule."""
    unknown = sorted(set(changes) - set(SEVERITY_FIELDS))
    if unknown:
        raise ValidationError(
            unknown[0], changes[unknown[0]], f"is not a severity; one of: {', '.join(SEVERITY_FIELDS)}"
        )
    return replace(current, **{name: value for name, value in changes.items() if value is not None})


def save_sla_policy(store: SettingsStore, policy: SlaPolicy) -> None:
    """Store ``policy`` (already validated: ``SlaPolicy`` checks itself)."""
    store.put_setting(SLA_SETTING_KEY, json.dumps(policy.as_dict(), sort_keys=True))


def sla_view(store: SettingsStore) -> dict[str, Any]:
    """The policy in force: days per severity, and whether an admin stored it or it is the default."""
    stored = SLA_SETTING_KEY in store.stored_settings()
    return {**load_sla_policy(store).as_dict(), "source": "stored" if stored else "default"}


def set_sla_policy(store: SettingsStore, changes: dict[str, Any]) -> dict[str, Any]:
    """``autopatch sla set`` / ``PUT /api/v1/sla``: change some severities' days, keep the others.

    Nothing given is a ``ValidationError`` (an empty change is a typo, not a request).
    """
    given = {name: value for name, value in changes.items() if value is not None}
    if not given:
        raise ValidationError("days", None, f"give the days of at least one severity: {', '.join(SEVERITY_FIELDS)}")
    save_sla_policy(store, changed_policy(load_sla_policy(store), given))
    return sla_view(store)


def sla_rows(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The view as one row per severity (the CLI table and CSV)."""
    return [{"severity": name.capitalize(), "days": view[name], "source": view["source"]} for name in SEVERITY_FIELDS]

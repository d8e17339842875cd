"""Baseline steps shared by ``autopatch baseline`` and ``/api/v1/baselines``: create, change, show, delete.

Each step checks its input with the domain's validators (``domain/baselines.py``) before the store
is touched, so both edges refuse the same values with the same message; the callers audit them.
A baseline's view is its stored fields, its rules in words, and the servers its groups reach now.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from autopatch.domain.baselines import (
    Baseline,
    BaselineChange,
    RejectedKb,
    apply_change,
    baseline_record,
    check_baseline,
    describe_rules,
    parse_baseline_name,
    parse_classifications,
    parse_groups,
    parse_kbs,
)
from autopatch.domain.fleet import Instance
from autopatch.engine.policy import find_baseline
from autopatch.errors import NotFoundError, ValidationError
from autopatch.store.base import BaselineStore, FleetStore


class BaselineAdminStore(BaselineStore, FleetStore, Protocol):
    """What the baseline steps use: the baselines, and the known servers their groups reach."""


def baseline_view(baseline: Baseline, instances: Iterable[Instance] = ()) -> dict[str, Any]:
    """A baseline as the CLI's JSON and the API show it: its fields, its rules in words, its servers now."""
    servers = [{"instance_id": i.instance_id, "name": i.name} for i in instances if baseline.matches(i.tags)]
    return baseline_record(baseline) | {"rules": describe_rules(baseline), "servers": servers}


def list_baseline_views(store: BaselineAdminStore) -> list[dict[str, Any]]:
    instances = store.list_instances()
    return [baseline_view(baseline, instances) for baseline in store.list_baselines()]


def show_baseline(store: BaselineAdminStore, name: str) -> dict[str, Any]:
    return baseline_view(find_baseline(store, name, "name"), store.list_instances())


def new_baseline(
    name: str,
    *,
    min_severity: str | None = None,
    classifications: Iterable[str] = (),
    approve_after_days: int = 0,
    approve: Iterable[str] = (),
    reject: Iterable[str] = (),
    reason: str | None = None,
    exploited_first: bool = False,
    groups: Iterable[str] = (),
    rings: str | None = None,
    snapshot: bool = False,
) -> Baseline:
    """A checked baseline from the fields ``baseline create`` takes (``--reason`` goes with ``--reject``)."""
    rejected = parse_kbs(reject, "reject")
    if rejected and reason is None:
        raise ValidationError("reason", None, "rejecting a KB needs a reason (--reason TEXT)")
    if reason is not None and not rejected:
        raise ValidationError("reason", reason, "a reason goes with --reject KB")
    return check_baseline(
        Baseline(
            name=parse_baseline_name(name),
            min_severity=min_severity,
            classifications=parse_classifications(classifications),
            approve_after_days=approve_after_days,
            approved=parse_kbs(approve, "approve"),
            rejected=tuple(RejectedKb(kb, reason or "") for kb in rejected),
            exploited_first=exploited_first,
            groups=parse_groups(groups),
            rings=rings,
            snapshot=snapshot,
        )
    )


def create_baseline(store: BaselineAdminStore, baseline: Baseline) -> dict[str, Any]:
    """Store a new baseline (``ConflictError`` when the name is taken) and return its view."""
    return baseline_view(store.create_baseline(check_baseline(baseline)), store.list_instances())


def update_baseline(store: BaselineAdminStore, name: str, change: BaselineChange) -> dict[str, Any]:
    """Apply a partial change to a stored baseline (``NotFoundError`` for an unknown name)."""
    current = find_baseline(store, name, "name")
    if change.reason is not None and not change.reject:
        raise ValidationError("reason", change.reason, "a reason goes with --reject KB")
    updated = apply_change(current, change)
    return baseline_view(store.replace_baseline(updated), store.list_instances())


def replace_baseline(store: BaselineAdminStore, name: str, baseline: Baseline) -> dict[str, Any]:
    """Replace every field of a stored baseline (the API's PUT); the name in the path wins."""
    current = find_baseline(store, name, "name")
    if baseline.name != current.name:
        raise ValidationError("name", baseline.name, f"must be the baseline's own name, {current.name!r}")
    return baseline_view(store.replace_baseline(check_baseline(baseline)), store.list_instances())


def delete_baseline(store: BaselineAdminStore, name: str) -> None:
    """Forget a baseline; ``NotFoundError`` when there is none. Runs planned with it keep their plans."""
    if not store.delete_baseline(parse_baseline_name(name)):
        raise NotFoundError(f"name: {name!r} is not a known baseline (see `autopatch baseline list`)")

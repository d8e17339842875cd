"""A patch request's rollout options as the CLI and the HTTP API take them: rates, rings, the gate.

Each edge passes what it was given (text, or numbers from JSON) with its own names for the fields
(``--rings`` on the CLI, ``rings`` over HTTP), so an error names what the caller typed. Checking
happens in two steps, both before anything is written: ``parse_rollout`` alone (the grammar, the
limits), then ``apply_rollout`` against the servers the request targets (percentages resolved,
every server in exactly one ring, no ring empty). The rules themselves are ``domain/rings.py``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from autopatch.domain.fleet import Instance
from autopatch.domain.rings import (
    Rate,
    RingSpec,
    assign_rings,
    check_assignment,
    check_health_script,
    parse_duration,
    parse_rate,
    parse_rings,
)
from autopatch.errors import ValidationError
from autopatch.operations import PatchRequest

MAX_CONCURRENCY = 1000
MAX_ERRORS = 100_000


@dataclass(frozen=True, slots=True)
class RolloutFields:
    """What an edge calls each option, for its error messages."""

    concurrency: str
    max_errors: str
    rings: str
    health_script: str
    soak: str


CLI_FIELDS = RolloutFields("--concurrency", "--max-errors", "--rings", "--health-script", "--soak")
API_FIELDS = RolloutFields("concurrency", "max_errors", "rings", "health_script", "soak")


@dataclass(frozen=True, slots=True)
class Rollout:
    """Checked rollout options, not yet resolved against a run's servers."""

    fields: RolloutFields
    concurrency: Rate
    max_errors: Rate | None = None
    rings_text: str | None = None
    rings: tuple[RingSpec, ...] = ()
    health_script: str | None = None
    soak_seconds: int = 0


def parse_rollout(
    fields: RolloutFields,
    *,
    concurrency: str | int = 10,
    max_errors: str | int | None = None,
    rings: str | None = None,
    health_script: str | None = None,
    soak: str | int | None = None,
) -> Rollout:
    """Check each option by its rule; a health script or a soak only make sense with rings."""
    specs = parse_rings(rings, fields.rings) if rings is not None else ()
    script = check_health_script(health_script, fields.health_script) if health_script is not None else None
    soak_seconds = parse_duration(soak, fields.soak) if soak is not None else 0
    if not specs and script is not None:
        raise ValidationError(
            fields.health_script, "<script>", f"a health check runs at ring gates: give {fields.rings}"
        )
    if not specs and soak is not None:
        raise ValidationError(fields.soak, soak, f"a soak follows a ring's gate: give {fields.rings}")
    return Rollout(
        fields,
        parse_rate(concurrency, fields.concurrency, MAX_CONCURRENCY),
        parse_rate(max_errors, fields.max_errors, MAX_ERRORS) if max_errors is not None else None,
        rings.strip() if rings is not None else None,
        specs,
        script,
        soak_seconds,
    )


def rollout_options(rollout: Rollout, targets: Sequence[Instance]) -> dict[str, Any]:
    """The run options the rollout stores (``RunOptions.from_dict`` reads them), checked against ``targets``."""
    servers = len(targets)
    options: dict[str, Any] = {
        "concurrency": rollout.concurrency.resolve(servers),
        "max_errors": rollout.max_errors.resolve(servers) if rollout.max_errors else None,
    }
    if rollout.concurrency.percent is not None:
        options["concurrency_text"] = rollout.concurrency.text
    if rollout.max_errors is not None and rollout.max_errors.percent is not None:
        options["max_errors_text"] = rollout.max_errors.text
    if rollout.rings:
        ring_assignment(rollout, targets)
        options["rings"] = rollout.rings_text
    if rollout.health_script is not None:
        options["health_script"] = rollout.health_script
    if rollout.soak_seconds:
        options["soak_seconds"] = rollout.soak_seconds
    return options


def ring_assignment(rollout: Rollout, targets: Sequence[Instance]) -> dict[str, str]:
    """Each target's ring (instance id → ring name), as the run will assign them; refused when one fits none."""
    tags = {target.instance_id: dict(target.tags) for target in targets}
    rings = check_assignment(assign_rings(rollout.rings, tags), tags, rollout.fields.rings)
    return {instance_id: ring.spec.name for ring in rings for instance_id in ring.instance_ids}


def apply_rollout(request: PatchRequest, rollout: Rollout) -> PatchRequest:
    """The request with its rollout options resolved against its targets (``ValidationError`` naming the field)."""
    return replace(request, options=request.options | rollout_options(rollout, request.targets))


def with_rings(rows: list[dict[str, Any]], rollout: Rollout, targets: Sequence[Instance]) -> list[dict[str, Any]]:
    """A dry run's plan rows with each server's ring (unchanged without rings)."""
    if not rollout.rings:
        return rows
    rings = ring_assignment(rollout, targets)
    return [row | {"ring": rings.get(row["instance_id"])} for row in rows]

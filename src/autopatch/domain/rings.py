"""Rollout rules of a patch run: rings, rates given as percentages, soak times, the health script.

A bad KB should stop on a few servers, not reach all of them. Patch Manager offers rate control
(``MaxConcurrency``/``MaxErrors`` as counts or percentages); AutoPatch adds rings: the run's
servers are split into ordered groups, and a ring starts only after the one before it passed its
health gate (``domain/ring_gates.py``). This module is the pure half: it parses what an operator
types and decides which server goes in which ring. No I/O; every error is a ``ValidationError``
naming the field it was given (``--rings`` on the CLI, ``rings`` over HTTP) and the rule.

Grammar of ``--rings`` (whitespace around names and terms is ignored)::

    rings    = ring *( ";" ring )            1 to 10 rings, names unique
    ring     = name "=" selector
    name     = letter-or-digit *31( letter / digit / "_" / "." / "-" )
    selector = "*"                           every server no earlier ring took; last ring only
             / term *( "," term )            every term must hold (AND)
    term     = key "=" value                 a tag, exact match (as ``--tag``)
             / 1*3DIGIT "%"                  at most that share of the run's servers; one per ring

Example: ``canary=Ring=canary,10%;early=25%;rest=*``.

Assignment is deterministic: the run's servers are taken in instance-id order; rings are filled in
the order written; a ring takes, among the servers no earlier ring took, those carrying every tag
of its selector — the first ``ceil(p% * N)`` of them (at least one) when it has a percentage,
where N is the number of servers in the whole run. So ``10%`` of 24 servers is 3, ``1%`` of 24 is 1.
Every server must end in exactly one ring: a server no ring takes is refused when the run starts
(end with a ``*`` ring to catch the rest), and so is a ring that selects nothing — except a final
``*`` ring, which is dropped when nothing is left for it.

Rates (``--concurrency``, ``--max-errors``): a count (``5``) or a percentage (``10%``) of the run's
servers, rounded up, at least 1 — as Patch Manager rounds them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from autopatch.errors import ValidationError

MAX_RINGS = 10
RINGS_TEXT_LIMIT = 2000
HEALTH_SCRIPT_MAX_BYTES = 16_384  # SSM takes the script as a document parameter; health checks are short
MAX_SOAK_SECONDS = 7 * 24 * 3600
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}", re.ASCII)
_PERCENT = re.compile(r"([0-9]{1,3})%", re.ASCII)
_COUNT = re.compile(r"[0-9]{1,6}", re.ASCII)
_DURATION = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?", re.ASCII)
_DURATION_UNITS = (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1))
CATCH_ALL = "*"


@dataclass(frozen=True, slots=True)
class RingSpec:
    """One ring as written: its name and selector (tags AND at most a percentage, or the rest)."""

    name: str
    selector: str  # the text after "=", normalised (as shown back to operators)
    tags: tuple[tuple[str, str], ...] = ()
    percent: int | None = None
    catch_all: bool = False

    def takes(self, tags: Mapping[str, str]) -> bool:
        return all(tags.get(key) == value for key, value in self.tags)


@dataclass(frozen=True, slots=True)
class AssignedRing:
    spec: RingSpec
    instance_ids: tuple[str, ...]


def share_of(percent: int, servers: int) -> int:
    """``percent`` of ``servers``, rounded up, at least 1 (Patch Manager's rounding)."""
    return max(1, math.ceil(percent * servers / 100))


def parse_rings(text: str, field: str = "rings") -> tuple[RingSpec, ...]:
    """``--rings`` text → its rings, checked against the grammar in the module docstring."""
    if len(text) > RINGS_TEXT_LIMIT:
        raise ValidationError(field, text, f"at most {RINGS_TEXT_LIMIT} characters")
    parts = text.split(";")
    if not text.strip():
        raise ValidationError(field, text, "give at least one ring, e.g. canary=Ring=canary,10%;rest=*")
    if len(parts) > MAX_RINGS:
        raise ValidationError(field, text, f"at most {MAX_RINGS} rings")
    specs = [_parse_ring(part, field) for part in parts]
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise ValidationError(field, text, f"ring names must be unique ({duplicate!r} is given twice)")
    for spec in specs[:-1]:
        if spec.catch_all:
            raise ValidationError(
                field, text, f"'*' takes every server left: only the last ring may use it ({spec.name})"
            )
    return tuple(specs)


def _parse_ring(part: str, field: str) -> RingSpec:
    name, equals, selector = part.partition("=")
    name, selector = name.strip(), selector.strip()
    if not equals or not selector:
        raise ValidationError(field, part, "a ring is NAME=SELECTOR, e.g. canary=Ring=canary,10% or rest=*")
    if _NAME.fullmatch(name) is None:
        raise ValidationError(field, name, "a ring name is 1-32 letters, digits, '_', '.' or '-'")
    if selector == CATCH_ALL:
        return RingSpec(name, CATCH_ALL, catch_all=True)
    tags: list[tuple[str, str]] = []
    percent: int | None = None
    for raw in selector.split(","):
        term = raw.strip()
        if (match := _PERCENT.fullmatch(term)) is not None:
            value = int(match.group(1))
            if not 1 <= value <= 100:
                raise ValidationError(field, term, f"ring {name}: a percentage is 1% to 100%")
            if percent is not None:
                raise ValidationError(field, selector, f"ring {name}: at most one percentage per ring")
            percent = value
            continue
        key, equals, value_text = term.partition("=")
        if not equals or not key.strip() or not value_text.strip() or term == CATCH_ALL:
            raise ValidationError(
                field, term, f"ring {name}: a term is a tag KEY=VALUE or a share N% ('*' stands alone)"
            )
        tags.append((key.strip(), value_text.strip()))
    normal = ",".join([f"{key}={value}" for key, value in tags] + ([f"{percent}%"] if percent is not None else []))
    return RingSpec(name, normal, tuple(tags), percent)


def assign_rings(specs: Sequence[RingSpec], servers: Mapping[str, Mapping[str, str]]) -> list[AssignedRing]:
    """Each server (instance id → tags) into its ring, by the rules of the module docstring.

    Servers no ring takes are left out of the answer: ``unassigned`` names them.
    """
    remaining = sorted(servers)
    rings: list[AssignedRing] = []
    for spec in specs:
        chosen = remaining if spec.catch_all else [i for i in remaining if spec.takes(servers[i])]
        if spec.percent is not None:
            chosen = chosen[: share_of(spec.percent, len(servers))]
        rings.append(AssignedRing(spec, tuple(chosen)))
        taken = set(chosen)
        remaining = [instance_id for instance_id in remaining if instance_id not in taken]
    return rings


def unassigned(rings: Sequence[AssignedRing], servers: Mapping[str, Mapping[str, str]]) -> list[str]:
    taken = {instance_id for ring in rings for instance_id in ring.instance_ids}
    return sorted(instance_id for instance_id in servers if instance_id not in taken)


def check_assignment(
    rings: Sequence[AssignedRing], servers: Mapping[str, Mapping[str, str]], field: str = "rings"
) -> list[AssignedRing]:
    """The rings a run starts with: every server in exactly one, none empty (a final empty ``*`` is dropped)."""
    left = unassigned(rings, servers)
    if left:
        shown = ", ".join(left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
        raise ValidationError(
            field,
            ";".join(f"{r.spec.name}={r.spec.selector}" for r in rings),
            f"{len(left)} server(s) of the run are in no ring ({shown}): end with a catch-all ring such as rest=*",
        )
    kept = list(rings)
    if kept and kept[-1].spec.catch_all and not kept[-1].instance_ids:
        kept.pop()
    for ring in kept:
        if not ring.instance_ids:
            raise ValidationError(
                field,
                f"{ring.spec.name}={ring.spec.selector}",
                f"ring {ring.spec.name} selects none of the run's {len(servers)} server(s); every ring needs one",
            )
    return kept


@dataclass(frozen=True, slots=True)
class Rate:
    """``--concurrency`` / ``--max-errors`` as given: a count, or a percentage of the run's servers."""

    count: int | None = None
    percent: int | None = None

    def resolve(self, servers: int) -> int:
        if self.percent is not None:
            return share_of(self.percent, servers)
        assert self.count is not None
        return self.count

    @property
    def text(self) -> str:
        return f"{self.percent}%" if self.percent is not None else str(self.count)


def parse_rate(value: str | int, field: str, maximum: int) -> Rate:
    """A count from 1 to ``maximum``, or a percentage from 1% to 100%."""
    text = str(value).strip()
    if (match := _PERCENT.fullmatch(text)) is not None:
        percent = int(match.group(1))
        if 1 <= percent <= 100:
            return Rate(percent=percent)
    elif _COUNT.fullmatch(text) is not None and 1 <= int(text) <= maximum:
        return Rate(count=int(text))
    raise ValidationError(
        field, value, f"a count from 1 to {maximum}, or a percentage of the run's servers (1% to 100%)"
    )


def parse_duration(value: str | int, field: str = "soak") -> int:
    """``30m``, ``2h``, ``1h30m``, ``90s``, ``1d`` or plain seconds → seconds (0 to 7 days)."""
    text = str(value).strip()
    if _COUNT.fullmatch(text) is not None:
        seconds = int(text)
    else:
        match = _DURATION.fullmatch(text)
        if match is None or not text:
            raise ValidationError(field, value, "a duration such as 30m, 2h, 1h30m, 90s or 1d (or seconds)")
        seconds = sum(
            int(number or 0) * unit for number, (_, unit) in zip(match.groups(), _DURATION_UNITS, strict=True)
        )
    if seconds > MAX_SOAK_SECONDS:
        raise ValidationError(field, value, "at most 7 days (7d)")
    return seconds


def format_duration(seconds: float) -> str:
    """Seconds as the shortest duration text (``1h30m``; ``0s`` for none)."""
    left = max(0, math.ceil(seconds))
    parts = []
    for suffix, unit in _DURATION_UNITS:
        if left >= unit:
            parts.append(f"{left // unit}{suffix}")
            left %= unit
    return "".join(parts) or "0s"


def check_health_script(text: str, field: str = "health_script") -> str:
    """The health-check script as it will run: text, at most 16 KiB of UTF-8, not blank, no NUL.

    It travels to the servers as data (a document parameter), never formatted into another script;
    a byte-order mark from an editor is dropped.
    """
    script = text.removeprefix("\ufeff")
    if not script.strip():
        raise ValidationError(field, text, "the health-check script is empty")
    if "\x00" in script:
        raise ValidationError(field, "<binary>", "the health-check script must be text (it holds a NUL character)")
    size = len(script.encode("utf-8", errors="surrogatepass"))
    if size > HEALTH_SCRIPT_MAX_BYTES:
        raise ValidationError(
            field, f"<{size} bytes>", f"the health-check script is at most {HEALTH_SCRIPT_MAX_BYTES} bytes"
        )
    try:
        script.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(field, "<text>", "the health-check script must be valid UTF-8 text") from None
    return script

"""Remediation deadlines: when an open CVE must be closed, and whether it is late (pure).

Patch Manager reports compliance as "is every approved patch installed"; a security team asks a
sharper question after every Patch Tuesday: which open CVEs are past the deadline we promised.
The deadline is a number of days per severity counted from the CVE's release date (Microsoft's
publication date in the monthly document), and a CVE on CISA's Known Exploited Vulnerabilities
catalog is due no later than CISA's ``dueDate`` — attackers do not wait for the severity clock:
CVE-2024-21412 (Important, released 2024-02-13, 30 days → 2024-03-14) was added to KEV on
2024-02-13 with a due date of 2024-03-05, so it is overdue on 2024-03-06, nine days early.

A CVE is overdue the day *after* its due date: "due 2024-03-05" means closed by the end of that day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from autopatch.domain.catalog import SEVERITIES
from autopatch.errors import ValidationError

SLA_MAX_DAYS = 3650  # ten years: a longer "deadline" is a typo, not a policy
SLA_RULE = f"days are a whole number from 1 to {SLA_MAX_DAYS}"


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    """Days from a CVE's release to its deadline, per Microsoft severity."""

    critical: int
    important: int
    moderate: int
    low: int

    def __post_init__(self) -> None:
        for name in ("critical", "important", "moderate", "low"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= SLA_MAX_DAYS:
                raise ValidationError(name, value, SLA_RULE)

    def days_for(self, severity: str | None) -> int | None:
        """The days allowed for ``severity`` ("Critical"…"Low", any case); None when it has none."""
        if severity is None:
            return None
        return self.as_dict().get(severity.strip().lower())

    def as_dict(self) -> dict[str, int]:
        """``{"critical": 15, "important": 30, "moderate": 90, "low": 180}`` (the stored and API form)."""
        return {"critical": self.critical, "important": self.important, "moderate": self.moderate, "low": self.low}

    def by_severity(self) -> dict[str, int]:
        """The same days keyed by Microsoft's spelling ("Critical"…), in severity order."""
        return {severity: self.as_dict()[severity.lower()] for severity in SEVERITIES}


DEFAULT_SLA = SlaPolicy(critical=15, important=30, moderate=90, low=180)


def cve_due(severity: str | None, released: date | None, kev_due: date | None, policy: SlaPolicy) -> date | None:
    """The day an open CVE must be closed by: the severity deadline, or KEV's due date when earlier.

    None when neither applies (no severity or no release date, and not on KEV): such a CVE has no
    deadline rather than a made-up one.
    """
    days = policy.days_for(severity)
    by_severity = released + timedelta(days=days) if released is not None and days is not None else None
    if by_severity is None:
        return kev_due
    if kev_due is None:
        return by_severity
    return min(by_severity, kev_due)


def is_overdue(due: date | None, on: date) -> bool:
    """True once ``on`` is past ``due`` (a CVE with no deadline is never overdue)."""
    return due is not None and on > due

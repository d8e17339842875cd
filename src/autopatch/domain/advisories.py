"""Known-issue advisories: KBs Microsoft shipped that fail to install or break servers (pure, built in).

MSRC's documents say which KB fixes a CVE, never that the KB cannot be installed on many servers.
KB5034439 (January 2024) is the case that taught the lesson: the Windows Recovery Environment
update for Windows Server 2022 that closes CVE-2024-20666 fails with 0x80070643 on every server
whose recovery partition has less than 250 MB free, which is most servers installed from Microsoft's
and Amazon's images; a patch run that installs it fails on each of them, every month it is offered.
MSRC names it only in the CVE's FAQ, never as a Vendor Fix, so the catalog does not know it: the
entry here carries what a plan needs (products, release date, CVEs, classification).

A KB listed here is shown in plans (when Windows Update offers it, or in an ``--as-of`` plan once
it was released) and held back unless a baseline approves it by name (or ``patch --kb`` names it):
the operator who has resized the partitions says so explicitly. Add an entry only with the vendor's
own article as its source.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True, slots=True)
class KnownIssue:
    """A KB with a known installation problem, and what to do about it."""

    kb: str
    title: str
    products: frozenset[str]  # exact MSRC product names the KB is offered to
    released: date
    cves: tuple[str, ...]
    classification: str  # a baseline classification (``domain/baselines.CLASSIFICATIONS``)
    issue: str  # one line: the symptom, with its error code
    workaround: str
    url: str

    @property
    def summary(self) -> str:
        """``KB5034439 (0x80070643 …)``: the KB and its symptom, for a plan's reason column."""
        return f"{self.kb} ({self.issue})"


KNOWN_ISSUES: tuple[KnownIssue, ...] = (
    KnownIssue(
        kb="KB5034439",
        title="Windows Recovery Environment update for Windows Server 2022: January 9, 2024",
        products=frozenset(
            {
                "Windows Server 2022",
                "Windows Server 2022 (Server Core installation)",
                "Windows Server 2022, 23H2 Edition (Server Core installation)",
            }
        ),
        released=date(2024, 1, 9),
        cves=("CVE-2024-20666",),
        classification="standalone",
        issue="0x80070643 when the WinRE recovery partition has less than 250 MB free",
        workaround=(
            "grow the recovery partition by 250 MB (Microsoft's KB5028997), or leave it: the CVE needs "
            "physical access and BitLocker"
        ),
        url="https://support.microsoft.com/help/5034439",
    ),
)
_BY_KB = {issue.kb: issue for issue in KNOWN_ISSUES}


def known_issue(kb: str) -> KnownIssue | None:
    """The advisory of a canonical KB id (``KB5034439``), if it has one."""
    return _BY_KB.get(kb)


def known_issues_for(product: str) -> tuple[KnownIssue, ...]:
    """The advisories of KBs offered to ``product`` (an exact MSRC product name)."""
    return tuple(issue for issue in KNOWN_ISSUES if product in issue.products)

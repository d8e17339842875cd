"""One product's view of the catalog, as exposure needs it: KBs, CVEs, supersedence, update line (pure).

Microsoft's data has three gaps that an exposure decision must bridge without guessing wrong:

- FixedBuild is missing before about 2021, so a build-less cumulative update takes the build of
  the first later cumulative update of the product that has one (``infer_cumulative_builds``).
- Supersedence chains cross product boundaries: the December 2018 out-of-band cumulative updates
  (KB4483229 for Windows Server 2016, KB4483235 for 2019) are listed only under "Internet Explorer
  11 on Windows Server 2016/2019", so a chain followed within the product stops there. Chains are
  therefore followed over every product's KBs (``closure``).
- Chains also have holes (bulletin ids before 2017; KB3197874 and KB3200970 name no successor).
  The product's *update line* — its cumulative updates and monthly rollups, and every KB of any
  product that supersedes one of them — is known with each KB's release month, so that an
  installed cumulative update can be read as containing every earlier one of the same line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date

from autopatch.domain.catalog import HOTPATCH_SUBTYPES

Build = tuple[int, int, int, int]
Branch = tuple[int, int, int]
MonthKey = tuple[int, int]  # (year, month); (0, 0) when unknown
NO_MONTH: MonthKey = (0, 0)

# Updates that contain every earlier one of their kind, for build inference. "Security Only"
# (2016-2022, ESU era) and hotpatches are not cumulative; before 2018 MSRC left SubType empty.
# "Alternate Cumulative" is an out-of-band cumulative update (KB4345418, July 2018).
CUMULATIVE_SUBTYPES = frozenset(
    {None, "Security Update", "Monthly Rollup", "Servicing Stack Update", "Alternate Cumulative"}
)
# The product's update line: an installed one contains every earlier one. Windows Server 2016 and
# later ship only cumulative updates ("Security Update", empty before 2018); older products ship a
# cumulative "Monthly Rollup" beside standalone "Security Update"s (2016) and "Security Only"
# updates, which are not cumulative. Servicing stack updates are cumulative only among themselves.
ROLLUP_LINE = frozenset({"Monthly Rollup"})
CUMULATIVE_LINE = frozenset({None, "Security Update", "Cumulative Update", "Alternate Cumulative"})
# Kinds Windows Update never offers to an installed server: Dynamic Updates refresh Setup media
# (KB4519335 "Setup DU" fixes CVE-2019-1316 and only an in-place upgrade applies it).
NEVER_OFFERED_SUBTYPES = frozenset({"Setup DU", "SafeOS DU", "Dynamic Update"})


@dataclass(frozen=True, slots=True)
class CatalogKb:
    """A KB as one product sees it."""

    kb: int
    build: Build | None
    subtype: str | None
    restart_required: str | None
    month: MonthKey = NO_MONTH  # the monthly release the KB belongs to
    build_inferred: bool = False
    download_url: str | None = None

    @property
    def is_hotpatch(self) -> bool:
        return self.subtype in HOTPATCH_SUBTYPES

    @property
    def never_offered(self) -> bool:
        return self.subtype in NEVER_OFFERED_SUBTYPES


@dataclass(frozen=True, slots=True)
class CatalogCve:
    cve: str
    severity: str | None
    title: str
    month: str
    kbs: tuple[int, ...]
    # Deadlines and exploited-first (domain/sla.py, domain/kev.py): the earliest publication date
    # any document gives, and whether any document marks it exploited / publicly disclosed.
    released: date | None = None
    exploited: bool = False
    publicly_disclosed: bool = False


@dataclass(frozen=True, slots=True)
class LineKb:
    """A cumulative update of the product's line, possibly listed under another product only."""

    kb: int
    month: MonthKey


@dataclass(frozen=True, slots=True, eq=False)  # hashed by identity: one object per product per load
class ProductCatalog:
    """Everything exposure needs about one product, loaded once for the whole fleet."""

    product: str
    branch: Branch | None  # the build branch the product's cumulative updates are on
    cves: tuple[CatalogCve, ...]
    kbs: Mapping[int, CatalogKb]
    superseded_by: Mapping[int, frozenset[int]]  # transitive, over every product's KBs
    line: Mapping[int, LineKb]  # the product's update line, other products' listings included
    successors: Mapping[int, int]  # KB → the newest KB of this product that supersedes it

    def newer_product_kbs(self, kb: int) -> frozenset[int]:
        """KBs of this product that supersede ``kb`` (directly or down the chain)."""
        return frozenset(k for k in self.superseded_by.get(kb, ()) if k in self.kbs)

    def successor(self, kb: int) -> int:
        """The newest KB of this product that supersedes ``kb`` (``kb`` itself if none)."""
        return self.successors.get(kb, kb)


def newest_successors(kbs: Mapping[int, CatalogKb], superseded_by: Mapping[int, frozenset[int]]) -> dict[int, int]:
    """For each KB superseded by a KB of the product, the newest such KB (by month, then number)."""
    result = {}
    for kb, newer in superseded_by.items():
        own = [k for k in newer if k in kbs]
        if own:
            result[kb] = max(own, key=lambda k: (kbs[k].month, k))
    return result


def main_branch(kbs: Iterable[CatalogKb]) -> Branch | None:
    """The branch most of the product's cumulative updates are on (MSRC data slips aside)."""
    branches = Counter(kb.build[:3] for kb in kbs if kb.build is not None and kb.subtype in CUMULATIVE_SUBTYPES)
    return branches.most_common(1)[0][0] if branches else None


def choose_build(builds: Iterable[Build], branch: Branch | None) -> Build | None:
    """One KB listed at two builds is a data slip (KB5060842: 10.0.26100.4349 in June 2025, 26200.4349
    in July): the build on the product's own branch wins, else the newest listing."""
    listed = list(builds)
    on_branch = [build for build in listed if build[:3] == branch]
    if on_branch:
        return on_branch[-1]
    return listed[-1] if listed else None


def infer_cumulative_builds(kbs: Mapping[int, CatalogKb]) -> dict[int, CatalogKb]:
    """Give build-less cumulative KBs the build of the first later cumulative update with one.

    MSRC documents before about 2021 carry no FixedBuild, so an up-to-date 2016 server would look
    open to every CVE of 2016. A cumulative update of month M is contained in every later cumulative
    update of the product: if the server's build reached the first one with a known build, it has
    M's fixes too. The inferred build is an upper bound, never a reason to call a CVE open.
    """
    branch = main_branch(kbs.values())
    ladder = sorted(
        (kb.month, kb.build)
        for kb in kbs.values()
        if kb.build is not None
        and kb.build[:3] == branch
        and kb.subtype in CUMULATIVE_SUBTYPES
        and kb.month != NO_MONTH
    )
    result = dict(kbs)
    for number, kb in kbs.items():
        if kb.build is not None or kb.subtype not in CUMULATIVE_SUBTYPES or kb.month == NO_MONTH:
            continue
        later = [build for month, build in ladder if month >= kb.month]
        if later:
            result[number] = replace(kb, build=min(later), build_inferred=True)
    return result


def closure(edges: Mapping[int, Iterable[int]], within: Iterable[int]) -> dict[int, frozenset[int]]:
    """Transitive ``superseded_by`` for each KB in ``within``, walking every edge (any product)."""
    result: dict[int, frozenset[int]] = {}

    def reach(kb: int, stack: frozenset[int]) -> frozenset[int]:
        if kb in result:
            return result[kb]
        found: set[int] = set()
        for newer in edges.get(kb, ()):
            if newer in stack:  # defensive: a cycle in Microsoft's data must not hang us
                continue
            found.add(newer)
            found |= reach(newer, stack | {newer})
        result[kb] = frozenset(found)
        return result[kb]

    return {kb: reach(kb, frozenset({kb})) for kb in within}


def update_line(
    kbs: Mapping[int, CatalogKb],
    branch: Branch | None,
    superseded_by: Mapping[int, frozenset[int]],
    others: Mapping[int, tuple[str | None, MonthKey]],
) -> dict[int, LineKb]:
    """The product's cumulative updates, plus every other product's KB that supersedes one of them.

    ``others`` gives (subtype, month) of KBs that are not the product's own; such a KB belongs to
    the line when it is a cumulative kind (KB4483229 is a "Security Update" of Internet Explorer 11
    on Windows Server 2016 that supersedes the server's December 2018 cumulative update).
    """
    kinds = ROLLUP_LINE if any(kb.subtype in ROLLUP_LINE for kb in kbs.values()) else CUMULATIVE_LINE
    own = {
        number: LineKb(number, kb.month)
        for number, kb in kbs.items()
        if kb.subtype in kinds
        and kb.month != NO_MONTH
        and (kb.build is None or kb.build_inferred or kb.build[:3] == branch)
    }
    line = dict(own)
    for number in own:
        for newer in superseded_by.get(number, ()):
            if newer in line or newer in kbs:
                continue
            subtype, month = others.get(newer, (None, NO_MONTH))
            if subtype in kinds and month != NO_MONTH:
                line[newer] = LineKb(newer, month)
    return line

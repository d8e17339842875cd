"""What the fleet's exposure reads of each server, and what changed since a reader last looked (pure).

Assessing 100,000 servers is mostly reading them: building an ``Instance`` and a ``ScanReport``
per server (every tag, every offered update's title, two time stamps) cost more than deciding
their CVEs, since a fleet has a few hundred distinct patch levels. ``ScannedServer`` is the
narrow record the exposure needs instead, and stores hand out equal KB sets as one shared object,
so that servers at the same patch level share their sets (and the memory) and a cache keyed by
them costs one dictionary lookup per server.

``FleetChanges`` and ``CatalogChanges`` are the stores' change logs as a reader sees them: which
servers, or which products and KBs, the writes since a revision touched. A kept fleet summary
uses them to assess again only what moved; ``None`` from a store means "not known" (the log no
longer reaches back, or a writer logged nothing), and the reader then starts afresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple


class ScannedServer(NamedTuple):
    """One discovered server with its newest scan (the scan fields are None when it was never scanned).

    Every field after ``scanned_at`` is what its exposure depends on (``patch_level``): servers
    equal in those share one assessment, and the slice is their key.
    """

    instance_id: str
    name: str
    scanned_at: datetime | None
    online: bool
    offline_since: str | None
    platform_name: str
    platform_version: str
    ami_name: str | None
    os_tag: str | None  # the instance's "OS" tag, the last resort of product identification
    build: str | None
    installation_type: str | None
    installed_kbs: frozenset[str]  # shared between servers listing the same KBs
    offered_kbs: frozenset[str] | None  # None when never scanned

    @property
    def scanned(self) -> bool:
        return self.scanned_at is not None

    @property
    def patch_level(self) -> tuple[Any, ...]:
        """The fields from ``online`` on: what the server's exposure depends on."""
        return self[3:]


@dataclass(frozen=True, slots=True)
class FleetChanges:
    """The instances whose record or scans were written after a reader's fleet revision, up to ``revision``."""

    revision: int
    instance_ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class CatalogChanges:
    """What the catalog writes after a reader's revision touched, up to ``revision``.

    ``products`` are MSRC product names (case and spaces as the documents give them) and ``kbs``
    every KB the writes listed, on either side of a supersedence edge too: a product's chains run
    through other products' KBs, so a document about another product can still move it.
    """

    revision: int
    products: frozenset[str]
    kbs: frozenset[int]

"""The KEV entries in force on a date, read from the store (the one place callers get them).

``domain/kev.listed_by`` is the rule (an entry counts from its ``dateAdded`` on); this module only
reads the stored catalog and applies it, so assessment, exposure, plans and reports agree.
"""

from __future__ import annotations

from datetime import date

from autopatch.domain.kev import KevEntry, listed_by
from autopatch.store.base import KevStore


def kev_entries(store: KevStore, as_of: date | None) -> dict[str, KevEntry]:
    """CVE id → KEV entry for the entries CISA had added on or before ``as_of`` (every entry when None)."""
    return listed_by(store.list_kev_entries(), as_of)

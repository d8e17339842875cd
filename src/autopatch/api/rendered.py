"""Answers kept already serialised while a store counter stays the same (the status view, polled per server).

A dashboard or the original's frontend asks every server's status every few seconds; between two
KB transitions every answer is the same. The store's ``runs_revision`` moves with each change of
any run's KBs (after the write, never before), so an answer kept under the revision read before
the data is never newer than the truth it claims; when the counter moves, everything is dropped.
"""

from __future__ import annotations

import threading


class RenderedByRevision:
    """Serialised answers per key, valid for one revision of a store counter."""

    def __init__(self, keep: int = 10_000) -> None:
        self._keep = keep
        self._revision: int | None = None
        self._bodies: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, revision: int, key: str) -> bytes | None:
        with self._lock:
            return self._bodies.get(key) if revision == self._revision else None

    def put(self, revision: int, key: str, body: bytes) -> None:
        with self._lock:
            if self._revision is None or revision > self._revision:
                self._revision, self._bodies = revision, {}
            if revision == self._revision and len(self._bodies) < self._keep:
                self._bodies[key] = body

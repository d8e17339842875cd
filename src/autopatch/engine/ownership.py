"""One driver per run: a lease in the store says which process drives a run, and until when.

Two ``autopatch patch`` commands on the same servers, a ``resume`` while the run's own process is
alive, the HTTP server and the CLI on one database: without an owner, each of them drives the
same run and sends the same KBs. The owner takes the run in one conditional UPDATE, renews its
lease from a background thread, and gives it up when done. Another process may take the run
over only when the lease has run out, or at once when the owner is a process of this host that
no longer exists (killed with ``kill -9``), so that a crash followed by ``resume`` needs no wait.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from autopatch.errors import StoreError
from autopatch.store.base import RunLeaseStore

LEASE_SECONDS = 30.0  # a live owner renews every third of it


def new_owner_id() -> str:
    """``host:pid:nonce`` — readable in ``run show``, and enough to tell a dead local owner."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(owner: str) -> bool:
    """True only for an owner on this host whose process is gone (or a zombie); unknown is alive."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isascii() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed child its parent has not reaped yet still answers kill(0)
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class RunLease:
    """This process's hold on one run: renewed in the background, ``lost`` once another took over."""

    def __init__(
        self,
        store: RunLeaseStore,
        run_id: str,
        owner: str,
        seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.owner = owner
        self.seconds = seconds
        self.clock = clock
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def claim(
        cls, store: RunLeaseStore, run_id: str, owner: str | None = None, seconds: float = LEASE_SECONDS
    ) -> RunLease | None:
        """Take the run if nobody drives it (no owner, lease run out, or a dead local owner)."""
        lease = cls(store, run_id, owner or new_owner_id(), seconds)
        current = store.get_run(run_id).owner
        dead = current if current and current != lease.owner and owner_is_dead(current) else ""
        now = lease.clock()
        if not store.claim_run(run_id, lease.owner, now + seconds, now, dead_owner=dead):
            return None
        return lease

    def expires(self) -> float:
        return self.clock() + self.seconds

    def start(self) -> RunLease:
        if self._thread is None:
            self._thread = threading.Thread(target=self._heartbeat, name=f"lease-{self.run_id}", daemon=True)
            self._thread.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                if not self.store.renew_lease(self.run_id, self.owner, self.expires()):
                    self.lost.set()
                    return
            except StoreError:  # a locked database: try again at the next beat, the lease still runs
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if not self.lost.is_set():
            with contextlib.suppress(StoreError):  # the lease then simply runs out
                self.store.release_run(self.run_id, self.owner)

    def __enter__(self) -> RunLease:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

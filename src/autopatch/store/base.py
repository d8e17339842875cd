"""The store ports: what the catalog, the fleet and patch runs need from persistence.

SQLite is the embedded adapter; a DynamoDB adapter implements the same protocols for the AWS
deployment, keyed like the original (``OS#<product>`` / ``CVE#<id>``, a by-month index) but
without its TTL. Everything returned is a domain type: no adapter row leaks upward.

Code asks for the narrowest port it uses (``CatalogStore``, ``FleetStore``, ``RunStore``,
``RunLeaseStore``), or ``Store`` when it needs several; only the entry points' wiring names an
adapter. ``tests/store_contract.py`` is the behaviour every adapter must show.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from autopatch.domain.access import AuditEntry, Principal, Role, TokenRecord
from autopatch.domain.baselines import Baseline
from autopatch.domain.catalog import (
    AffectedRecord,
    CatalogDocument,
    FixRecord,
    ImportCounts,
    Product,
    ProductSummary,
    StoredDocument,
)
from autopatch.domain.exposure_history import ExposureSet, HistorySpan
from autopatch.domain.fleet import Instance, ScanReport
from autopatch.domain.fleet_view import CatalogChanges, FleetChanges, ScannedServer
from autopatch.domain.jobs import JobRecord
from autopatch.domain.kev import KevCatalog, KevCatalogInfo, KevEntry
from autopatch.domain.patching import KbState, RunStatus
from autopatch.domain.ring_gates import GateStatus, RingGate, RingMember
from autopatch.domain.runs import Attempt, RunItem, RunRecord, RunServer, Transition
from autopatch.domain.snapshots import RunSnapshot
from autopatch.domain.windows import MaintenanceWindow, OccurrenceRecord

# What ``update_attempt`` and ``update_server`` may set: the same for every adapter.
ATTEMPT_FIELDS = frozenset(
    {
        "phase",
        "command_id",
        "sent_at",
        "finished_at",
        "status",
        "exit_code",
        "hresult",
        "reboot_required",
        "output_tail",
    }
)
SERVER_FIELDS = frozenset(
    {"status", "build_after", "reboots", "started_at", "finished_at", "reason", "product", "build_before"}
)


def now() -> str:
    """The time stamp runs are stored with: UTC ISO 8601 to the millisecond, so text order is time order."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class CatalogStore(Protocol):
    def get_document(self, document_id: str) -> StoredDocument | None:
        """The stored revision of one monthly document, if any."""

    def list_documents(self) -> list[StoredDocument]: ...

    def replace_document(self, document: CatalogDocument, source_sha256: str) -> ImportCounts:
        """Make the store hold exactly this document's entries, in one transaction."""

    def list_products(self) -> list[Product]: ...

    def products_named(self, name: str, product_id: str) -> list[Product]:
        """Products with exactly this name (any case), or this MSRC product id."""

    def product_summaries(self) -> list[ProductSummary]:
        """Every product with its counts of distinct CVEs and KBs."""

    def affected(
        self,
        product_ids: Collection[str],
        document_ids: Collection[str] | None = None,
        cves: Collection[str] | None = None,
    ) -> list[AffectedRecord]:
        """(CVE, product) rows for the given products, optionally narrowed."""

    def fixes_for_products(
        self, product_ids: Collection[str], cves: Collection[str] | None = None
    ) -> list[FixRecord]: ...

    def fixes_for_kbs(self, kbs: Iterable[int]) -> list[FixRecord]: ...

    def superseded_by(self, kbs: Iterable[int]) -> dict[int, set[int]]:
        """For each KB, the KBs that name it in their Supercedence field."""

    def supersedes(self, kbs: Iterable[int]) -> dict[int, set[int]]:
        """For each KB, the KBs its Supercedence field names."""

    def counts(self) -> dict[str, int]:
        """Totals for summaries: documents, cves, products, kbs, entries."""

    def catalog_revision(self) -> int:
        """A counter that moves whenever a document is replaced (so a cached assessment can tell it is stale)."""

    def close(self) -> None: ...


class RunLeaseStore(Protocol):
    """What run ownership needs: read a run, and take, renew and give up its lease atomically."""

    def get_run(self, run_id: str) -> RunRecord: ...

    def claim_run(
        self, run_id: str, owner: str, lease_expires: float, now_epoch: float, dead_owner: str = ""
    ) -> bool: ...

    def renew_lease(self, run_id: str, owner: str, lease_expires: float) -> bool: ...

    def release_run(self, run_id: str, owner: str) -> None: ...


class FleetStore(Protocol):
    """What discovery and scanning keep: the instances seen and every scan of them."""

    def save_instances(self, instances: Iterable[Instance], discovered_at: datetime) -> None:
        """Upsert what discovery found; instances no longer listed are kept (history).

        An instance going offline keeps its first ``offline_since``; coming online clears it.
        """

    def list_instances(self) -> list[Instance]:
        """Every instance ever discovered, by name then id."""

    def get_instance(self, instance_id: str) -> Instance | None: ...

    def save_scans(self, scans: Iterable[ScanReport]) -> None:
        """Keep each scan (history); a scan of the same instance at the same time replaces it."""

    def latest_scans(self, instance_ids: Collection[str] | None = None) -> dict[str, ScanReport]:
        """The newest scan of each instance (all instances, or the given ones)."""

    def fleet_revision(self) -> int:
        """A counter that moves whenever instances or scans are saved (in the same atomic write)."""


class FleetViewStore(Protocol):
    """What the fleet's exposure reads: one narrow record per server, and what changed since a revision.

    See ``domain/fleet_view.py``. Equal KB sets come back as one shared object. A change log
    answers for the writes after ``since`` up to the revision it names, or None when it cannot
    (it no longer reaches back that far, or a write logged nothing): the reader then starts afresh.
    """

    def scanned_servers(self, instance_ids: Collection[str] | None = None) -> list[ScannedServer]:
        """Every instance (or the given ones; unknown ids are left out) with its newest scan, by name then id."""

    def fleet_changes(self, since: int) -> FleetChanges | None:
        """The instances whose record or scans were saved after fleet revision ``since``."""

    def catalog_changes(self, since: int) -> CatalogChanges | None:
        """The product names and KBs that catalog writes after catalog revision ``since`` listed."""


# What ``update_ring_gate`` and ``update_ring_member`` may set: the same for every adapter.
RING_GATE_FIELDS = frozenset({"status", "reason", "soak_until", "started_at", "finished_at"})
RING_MEMBER_FIELDS = frozenset({"check", "round", "detail", "command_id", "checked_at"})


class RingStore(Protocol):
    """The rings of a run and the state of their health gates (``domain/ring_gates.py``).

    A run's rings are made once: ``create_rings`` stores the gates and their members atomically
    unless the run has rings already, and answers the gates stored either way (a second driver
    assigning them again gets the first one's). A gate is changed only while its status is still
    the one its caller read (``StateError`` otherwise), so two drivers never both move it.
    """

    def create_rings(self, gates: list[RingGate], members: list[RingMember]) -> list[RingGate]:
        """Store the run's rings unless it has some; the run's rings as stored, by position."""

    def ring_gates(self, run_id: str) -> list[RingGate]:
        """The run's rings by position; empty for a run without rings."""

    def ring_members(self, run_id: str, position: int | None = None) -> list[RingMember]:
        """The servers of the run's rings (or of one ring), by position then instance id."""

    def update_ring_gate(self, run_id: str, position: int, expected: GateStatus, **fields: Any) -> None:
        """Set ``RING_GATE_FIELDS`` of a gate still in ``expected``: ``StateError`` if it moved, ``NotFoundError``
        if there is no such gate."""

    def update_ring_member(self, run_id: str, position: int, instance_id: str, **fields: Any) -> None:
        """Set ``RING_MEMBER_FIELDS`` of one server of a ring; ``NotFoundError`` if it is not in that ring."""


class SnapshotStore(Protocol):
    """The EBS snapshots a run took of its servers (``domain/snapshots.py``): one record per run server.

    ``begin_snapshot`` writes the intent BEFORE the fleet is asked, and only once per run server: a
    second call (a resumed run, a retried Lambda task) gets the stored record back, so it looks
    the snapshots up by their token instead of taking another set.
    """

    def begin_snapshot(self, run_id: str, instance_id: str, token: str, at: str) -> RunSnapshot:
        """Store the record (phase asking) unless the run server has one; the record as stored.
        ``NotFoundError`` for a server not in the run."""

    def update_snapshot(self, run_id: str, instance_id: str, **fields: Any) -> None:
        """Set ``SNAPSHOT_FIELDS`` (``volumes`` as ``SnapshotVolume``s); ``NotFoundError`` without a record."""

    def run_snapshot(self, run_id: str, instance_id: str) -> RunSnapshot | None: ...

    def run_snapshots(self, run_id: str) -> list[RunSnapshot]:
        """The run's snapshot records, by instance id."""


class RunStore(RunLeaseStore, RingStore, SnapshotStore, Protocol):
    """Patch runs: every state, transition and attempt, kept forever; one driver per run.

    Every write is atomic. ``create_run`` refuses (``ConflictError``) a server that an unfinished
    run still holds; an illegal KB transition raises ``StateError``; an unknown run, server or
    item raises ``NotFoundError``.
    """

    def create_run(self, run: RunRecord, servers: list[RunServer], items: list[RunItem]) -> None:
        """A run, its servers and their classified KBs, all or nothing."""

    def save_plan(self, run_id: str, servers: list[RunServer], items: list[RunItem]) -> None:
        """Store the scanned plan of a run created unplanned (its servers claimed first)."""

    def cancel_run(self, run_id: str, reason: str) -> RunStatus:
        """Pending KBs become Cancelled; the run is Cancelled, or Cancelling while installs run."""

    def transition_item(
        self,
        run_id: str,
        instance_id: str,
        kb: str,
        new: KbState,
        reason: str = "",
        reboot_required: bool | None = None,
    ) -> None:
        """Move one KB to ``new`` if the state machine allows it, recording when and why."""

    def start_attempt(self, run_id: str, instance_id: str, kb: str, token: str) -> int:
        """Record the intent to send BEFORE sending; returns the attempt's number (1, 2, ...)."""

    def update_attempt(self, run_id: str, instance_id: str, kb: str, attempt: int, **fields: Any) -> None: ...

    def update_server(self, run_id: str, instance_id: str, **fields: Any) -> None: ...

    def record_reboot(
        self,
        run_id: str,
        instance_id: str,
        attempts: list[tuple[str, int]],
        requested_at: str | None = None,
        boot_before: str | None = None,
    ) -> None:
        """A reboot happened for these (KB, attempt)s: their phase and the server's count move together."""

    def set_run_status(self, run_id: str, status: RunStatus, reason: str = "") -> None: ...

    def record_notification(self, run_id: str, notifier: str, ok: bool, error: str | None) -> None: ...

    def list_runs(self, limit: int = 50, offset: int = 0) -> list[RunRecord]:
        """The newest runs first (ties by run id, descending), skipping the first ``offset``."""

    def count_runs(self) -> int:
        """How many runs are stored: the total beside a page of ``list_runs``."""

    def runs_revision(self) -> int:
        """A counter that moves with every change of a run's KBs (created, planned, moved, cancelled).

        Moved in the same write or right after it, never before: a reader that read it before the
        data may hold a newer answer under an older number (and recompute once more), never the reverse.
        """

    def run_holding(self, instance_id: str) -> str | None:
        """The unfinished run that still has work on this server, if any."""

    def unfinished_runs(self) -> list[RunRecord]:
        """Runs not yet in a terminal status, oldest first."""

    def run_servers(self, run_id: str) -> list[RunServer]: ...

    def run_item(self, run_id: str, instance_id: str, kb: str) -> RunItem: ...

    def run_server(self, run_id: str, instance_id: str) -> RunServer: ...

    def run_items(self, run_id: str, instance_id: str | None = None) -> list[RunItem]: ...

    def items_of_instance(self, instance_id: str) -> list[RunItem]:
        """The latest item per KB for one instance across runs (the status view)."""

    def attempts(self, run_id: str, instance_id: str | None = None, kb: str | None = None) -> list[Attempt]: ...

    def transitions(self, run_id: str) -> list[Transition]:
        """Every KB state change of a run, per (instance, KB) in the order they happened."""

    def notifications(self, run_id: str) -> list[tuple[str, bool, str | None]]: ...

    def save_run_exposure(self, run_id: str, phase: str, counts: dict[str, Any]) -> None:
        """Keep the run servers' open CVE counts at ``phase`` ("before", "after"); replaces that phase's counts."""

    def run_exposure(self, run_id: str) -> dict[str, dict[str, Any]]:
        """The counts kept per phase (none yet: an empty dict)."""


class AccessStore(Protocol):
    """API tokens (stored by digest, never in clear) and the audit log of mutating requests.

    Token names are unique among live tokens; a revoked name may be reused, and its old rows stay
    as history. ``principal_for_digest`` runs on every API request, so it must stay one indexed
    lookup and one small write.
    """

    def create_token(self, name: str, role: Role, digest: str, created_at: datetime) -> TokenRecord:
        """Store a new token; ``ConflictError`` naming ``name`` when a live token already has it."""

    def list_tokens(self) -> list[TokenRecord]:
        """Every token, live and revoked, oldest first; never the digest."""

    def revoke_token(self, name: str, at: datetime) -> TokenRecord:
        """Revoke the live token ``name`` from ``at`` on; ``NotFoundError`` when there is none."""

    def principal_for_digest(self, digest: str, at: datetime) -> Principal | None:
        """Who the token with this digest acts as (and mark it used at ``at``); None if unknown or revoked."""

    def record_audit(self, entry: AuditEntry) -> None: ...

    def list_audit(self, limit: int, offset: int) -> tuple[list[AuditEntry], int]:
        """A page of the audit log, newest first, and the total number of entries."""


class SettingsStore(Protocol):
    """Settings an admin overrides at run time: keys and checks belong to ``autopatch.admin_settings``."""

    def stored_settings(self) -> dict[str, str]: ...

    def put_setting(self, key: str, value: str) -> None: ...

    def delete_setting(self, key: str) -> bool:
        """Forget an override; False when there was none."""


class WaiterStore(Protocol):
    """Task tokens of Step Functions tasks waiting for something (a command, a server) to end.

    The waiting task stores its token under a key naming what it waits for (``command#<id>``);
    whoever learns that it ended (the EventBridge handler) takes the token, once: a second take
    of the same key finds nothing, so a duplicated event completes nothing twice.
    """

    def put_waiter(self, key: str, token: str) -> None: ...

    def take_waiter(self, key: str) -> str | None:
        """The token stored under ``key``, removed in the same atomic operation; None if none."""


class JobStore(Protocol):
    """Background jobs: one running job per kind; a job silent since ``stale_before`` no longer counts."""

    def start_job(self, job: JobRecord, stale_before: datetime) -> None:
        """Store a new running job; ``ConflictError`` naming the running one of the same kind, atomically."""

    def update_job(self, job_id: str, at: datetime, **fields: Any) -> None:
        """Set ``status``, ``done``, ``total``, ``summary`` or ``error``, and ``updated_at`` to ``at``.

        ``NotFoundError`` for an unknown job.
        """

    def get_job(self, job_id: str) -> JobRecord | None: ...


class WindowStore(Protocol):
    """Maintenance windows, and which of their occurrences a scheduler has acted on.

    Two schedulers (two ``serve`` processes, a ``serve`` and a cron'd ``scheduler --once``) may
    look at the same occurrence at once: ``claim_occurrence`` is one conditional write, so exactly
    one of them starts its run. A window's name is unique (``ConflictError`` on create, and
    ``NotFoundError`` when replacing an unknown one).
    """

    def create_window(self, window: MaintenanceWindow) -> MaintenanceWindow:
        """Store a new window, stamped created/updated now; ``ConflictError`` naming it when the name is taken."""

    def replace_window(self, window: MaintenanceWindow) -> MaintenanceWindow:
        """Replace a window's definition (its created time kept); ``NotFoundError`` for an unknown name."""

    def get_window(self, name: str) -> MaintenanceWindow | None: ...

    def list_windows(self) -> list[MaintenanceWindow]:
        """Every window, by name."""

    def delete_window(self, name: str) -> bool:
        """Forget a window and its occurrence records (runs keep its name); False when there was none."""

    def claim_occurrence(self, window: str, starts_at: str, owner: str, claimed_at: str, stale_owner: str = "") -> bool:
        """Be the one who acts on this occurrence; False when another claimed it first.

        A claim that names no run yet and whose owner is ``stale_owner`` (found dead by the
        caller) is taken over, conditionally on that owner still being recorded.
        """

    def record_occurrence(self, window: str, starts_at: str, run_id: str | None, note: str = "") -> None:
        """The run the claimed occurrence started or continued, or why it started none."""

    def window_occurrences(self, window: str, limit: int = 20) -> list[OccurrenceRecord]:
        """A window's claimed occurrences, newest first."""

    def reopen_paused_run(self, run_id: str, options: dict[str, object]) -> bool:
        """A Paused run continues in a new occurrence: Running, its options replaced, in one conditional write.

        False (and nothing written) unless the run is still Paused, so two schedulers never both
        reopen it, and a run cancelled meanwhile stays cancelled.
        """


class BaselineStore(Protocol):
    """Patch baselines (``domain/baselines.py``), kept whole under their unique name.

    Every plan lists them (a server's tags pick its baselines), so ``list_baselines`` stays one read.
    """

    def create_baseline(self, baseline: Baseline) -> Baseline:
        """Store a new baseline, stamped created/updated now; ``ConflictError`` naming it when the name is taken."""

    def replace_baseline(self, baseline: Baseline) -> Baseline:
        """Replace a baseline (its created time kept, updated now); ``NotFoundError`` for an unknown name."""

    def get_baseline(self, name: str) -> Baseline | None: ...

    def list_baselines(self) -> list[Baseline]:
        """Every baseline, by name."""

    def delete_baseline(self, name: str) -> bool:
        """Forget a baseline; False when there was none."""


class KevStore(Protocol):
    """CISA's Known Exploited Vulnerabilities catalog (``domain/kev.py``), replaced whole on each import.

    The feed is small (1,404 entries in 2025) and published whole, so an import replaces every
    entry in one atomic write: a reader sees the old catalog or the new one, never a mix.
    """

    def replace_kev_catalog(self, catalog: KevCatalog, source: str, imported_at: str) -> ImportCounts:
        """Store ``catalog`` in place of the stored one; entries added, updated, unchanged and removed."""

    def kev_catalog_info(self) -> KevCatalogInfo | None:
        """The stored feed's version, release stamp, source, import time and size; None before any import."""

    def list_kev_entries(self) -> list[KevEntry]:
        """Every stored entry, by CVE id."""


class HistoryStore(Protocol):
    """Exposure history (``domain/exposure_history.py``): per server, spans of scans that found the same
    exposure, and the content-addressed exposure sets the spans name.

    ``append_history`` is the one write: it reads each server's latest span and applies
    ``extend_spans`` (extend it, start a new one, or drop a scan not newer than it) in the same
    atomic write on SQLite; a set already stored (same digest) is not written again.
    """

    def append_history(self, scans: Sequence[HistorySpan], sets: Iterable[ExposureSet]) -> None:
        """Record one-scan spans and the sets they name."""

    def latest_history(self, instance_ids: Collection[str] | None = None) -> dict[str, HistorySpan]:
        """Each server's latest span (every server's, or those named)."""

    def history_spans(self, instance_ids: Collection[str] | None = None) -> list[HistorySpan]:
        """Every span (of the servers named), by instance id, then first scan."""

    def exposure_sets(self, digests: Collection[str]) -> dict[str, ExposureSet]:
        """The stored sets among ``digests``, by digest."""


class Store(
    CatalogStore,
    FleetStore,
    FleetViewStore,
    RunStore,
    AccessStore,
    SettingsStore,
    WaiterStore,
    JobStore,
    WindowStore,
    BaselineStore,
    KevStore,
    HistoryStore,
    Protocol,
):
    """Everything at once: what one adapter (SQLite, DynamoDB) provides, for code that spans the ports."""

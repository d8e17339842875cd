"""The store ports: what the catalog, the fleet and patch runs need from persistence.

SQLite is the embedded adapter; a DynamoDB adapter implements the same protocols for the AWS
deployment, keyed like the original (``OS#<product>`` / ``CVE#<id>``, a by-month index) but
without its TTL. Everything returned is a domain type: no adapter row leaks upward.

Code asks for the narrowest port it uses (``CatalogStore``, ``FleetStore``, ``RunStore``,
``RunLeaseStore``), or ``Store`` when it needs several; only the entry points' wiring names an
adapter. ``tests/store_contract.py`` is the behaviour every adapter must show.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from autopatch.domain.access import AuditEntry, Principal, Role, TokenRecord
from autopatch.domain.catalog import (
    AffectedRecord,
    CatalogDocument,
    FixRecord,
    ImportCounts,
    Product,
    ProductSummary,
    StoredDocument,
)
from autopatch.domain.fleet import Instance, ScanReport
from autopatch.domain.jobs import JobRecord
from autopatch.domain.patching import KbState, RunStatus
from autopatch.domain.runs import Attempt, RunItem, RunRecord, RunServer, Transition

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


class RunStore(RunLeaseStore, Protocol):
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


class Store(CatalogStore, FleetStore, RunStore, AccessStore, SettingsStore, WaiterStore, JobStore, Protocol):
    """Everything at once: what one adapter (SQLite, DynamoDB) provides, for code that spans the ports."""

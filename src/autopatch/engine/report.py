"""Views of runs for people and machines: the end-of-run summary, the run detail, a server's status."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from autopatch.domain.patching import KbState
from autopatch.domain.summary import KbOutcome, RunSummary, ServerSummary
from autopatch.engine.rings import ring_view
from autopatch.engine.snapshots import snapshot_view
from autopatch.notify.base import DeliveryResult, Notifier, notify_all
from autopatch.store.base import RunStore

# KBs that needed work: the status view's progress counts these only. Already Installed,
# Superseded, Not Available and Held are shown, but a KB nothing was done for is not progress.
NEEDED_WORK = {KbState.PENDING, KbState.IN_PROGRESS, KbState.SUCCESS, KbState.FAILED, KbState.CANCELLED}
DONE = {KbState.SUCCESS, KbState.FAILED, KbState.CANCELLED}


def _time(text: str | None) -> datetime:
    return datetime.fromisoformat(text) if text else datetime.now(UTC)


def build_summary(store: RunStore, run_id: str) -> RunSummary:
    """The summary of a run, rebuilt from stored states only (so it is right after a crash too)."""
    run = store.get_run(run_id)
    items = store.run_items(run_id)
    servers = []
    for server in store.run_servers(run_id):
        mine = [item for item in items if item.instance_id == server.instance_id]
        skipped = [
            KbOutcome(item.kb, item.reason or str(item.state))
            for item in mine
            if item.state in (KbState.NOT_AVAILABLE, KbState.CANCELLED, KbState.PENDING, KbState.HELD)
        ]
        started, finished = server.started_at, server.finished_at
        servers.append(
            ServerSummary(
                instance_id=server.instance_id,
                name=server.name,
                product=server.product,
                already_installed=tuple(i.kb for i in mine if i.state is KbState.ALREADY_INSTALLED),
                installed_now=tuple(i.kb for i in mine if i.state is KbState.SUCCESS),
                failed=tuple(KbOutcome(i.kb, i.reason) for i in mine if i.state is KbState.FAILED),
                skipped=tuple(skipped),
                reboots=server.reboots,
                duration_seconds=(_time(finished) - _time(started)).total_seconds() if started else 0.0,
                build_before=server.build_before,
                build_after=server.build_after,
                status=server.status,
                reason=server.reason,
            )
        )
    return RunSummary(
        run_id=run.run_id,
        kind=run.kind,
        status=str(run.status),
        started_at=_time(run.started_at or run.created_at),
        finished_at=_time(run.finished_at),
        servers=tuple(servers),
        reason=run.reason,
    )


def send_summary(store: RunStore, run_id: str, notifiers: list[Notifier]) -> list[DeliveryResult]:
    """Notify every notifier; failures are recorded on the run, never raised."""
    results = notify_all(notifiers, build_summary(store, run_id))
    for result in results:
        store.record_notification(run_id, result.notifier, result.ok, result.error)
    return results


def run_view(store: RunStore, run_id: str) -> dict[str, Any]:
    """``autopatch run show``: the run, each server, each KB with its attempts and transitions."""
    run = store.get_run(run_id)
    attempts = store.attempts(run_id)
    transitions = store.transitions(run_id)
    exposure = store.run_exposure(run_id)
    snapshots = {record.instance_id: record for record in store.run_snapshots(run_id)}
    return {
        "run_id": run.run_id,
        "kind": run.kind,
        "status": str(run.status),
        "reason": run.reason,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "options": run.options,
        "notifications": [{"notifier": n, "ok": ok, "error": e} for n, ok, e in store.notifications(run_id)],
        # Open CVEs on the run's servers when planned and after the final scan (None until then).
        "exposure": {"before": exposure.get("before"), "after": exposure.get("after")},
        # --rings: each ring's servers and the state of its health gate (empty without rings).
        "rings": ring_view(store, run_id),
        "servers": [
            {
                "instance_id": server.instance_id,
                "name": server.name,
                "product": server.product,
                "status": server.status,
                "reason": server.reason,
                "build_before": server.build_before,
                "build_after": server.build_after,
                "reboots": server.reboots,
                "started_at": server.started_at,
                "finished_at": server.finished_at,
                # EBS snapshots taken before its first KB (--snapshot), with the rollback commands.
                "snapshot": snapshot_view(snapshots.get(server.instance_id)),
                "kbs": [
                    {
                        "kb": item.kb,
                        "state": str(item.state),
                        "reason": item.reason,
                        "subtype": item.subtype,
                        "reboot_required": item.reboot_required,
                        "updated_at": item.updated_at,
                        "attempts": [
                            {
                                "attempt": a.attempt,
                                "command_id": a.command_id,
                                "phase": a.phase,
                                "status": a.status,
                                "exit_code": a.exit_code,
                                "hresult": a.hresult,
                                "sent_at": a.sent_at,
                                "finished_at": a.finished_at,
                                "output_tail": a.output_tail,
                            }
                            for a in attempts
                            if a.instance_id == server.instance_id and a.kb == item.kb
                        ],
                        "transitions": [
                            {"from": t.from_state, "to": t.to_state, "at": t.at, "note": t.note}
                            for t in transitions
                            if t.instance_id == server.instance_id and t.kb == item.kb
                        ],
                    }
                    for item in store.run_items(run_id, server.instance_id)
                ],
            }
            for server in store.run_servers(run_id)
        ],
    }


def instance_status(store: RunStore, instance_id: str) -> dict[str, Any]:
    """The original's status view: total, completed, percentage, per-KB details (latest per KB).

    ``total`` and ``completed`` count only KBs that needed work (installed, failed, cancelled or
    still to do); ``not_counted`` says how many KBs were classified without work, by state.
    """
    items = store.items_of_instance(instance_id)
    needed = [item for item in items if item.state in NEEDED_WORK]
    completed = sum(1 for item in needed if item.state in DONE)
    not_counted: dict[str, int] = {}
    for item in items:
        if item.state not in NEEDED_WORK:
            not_counted[str(item.state)] = not_counted.get(str(item.state), 0) + 1
    return {
        "instance_id": instance_id,
        "total": len(needed),
        "completed": completed,
        "percentage": round(100.0 * completed / len(needed), 1) if needed else None,
        "not_counted": not_counted,
        "kbs": [
            {
                "kb": item.kb,
                "state": str(item.state),
                "run_id": item.run_id,
                "reboot_required": item.reboot_required,
                "reason": item.reason,
                "updated_at": item.updated_at,
            }
            for item in items
        ],
    }

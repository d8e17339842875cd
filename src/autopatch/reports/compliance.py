"""``report compliance``: each server compliant, non-compliant or unknown, as AWS Patch Manager defines them.

Patch Manager calls a managed node *compliant* when no patch its baseline approves is missing,
*non-compliant* when one is missing (or failed, or installed and waiting for a reboot), and has no
compliance data for a node it never scanned. Here, per server and from its latest scan:

- the KBs that close its open CVEs and that Windows Update offers it (``exposure``'s closing KBs)
  are *missing*; those its baselines approve (``engine/policy.PlanPolicy.decision``, as a plan
  judges them) make it non-compliant; the others are *held* back by a rule, which is listed;
- a scan that says a reboot is pending makes it non-compliant (Patch Manager's
  InstalledPendingReboot);
- closing KBs Windows Update does not offer (a Setup Dynamic Update, a fix for another build
  branch) are listed but do not count: no patch run can install them, and Patch Manager would not
  see them as applicable;
- *unknown*: offline, never scanned or unidentified (the exposure is unknown; never "compliant").

A server is judged by the baseline the report names, else by the baselines whose groups match its
tags (a KB must be approved by each), else by none (every KB approved, known-issue advisories
held), exactly as ``patch`` would plan it.
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any

from autopatch.assessment import fleet_exposure
from autopatch.domain.baselines import Baseline
from autopatch.engine.policy import PlanPolicy, find_baseline
from autopatch.exposure_sets import ExposureSets
from autopatch.reports.model import BarChart, Column, Report, Series, Table, generated_now
from autopatch.store.base import Store

COMPLIANT, NON_COMPLIANT, UNKNOWN = "compliant", "non-compliant", "unknown"
STATES = (NON_COMPLIANT, UNKNOWN, COMPLIANT)  # the order rows are listed in: what needs work first
NO_BASELINE = "(none)"


def compliance_rows(store: Store, baseline: str | None = None, on: date | None = None) -> list[dict[str, Any]]:
    """One row per server: its state, why, its baselines, and the missing, held and not-offered KBs."""
    named = find_baseline(store, baseline) if baseline else None
    policy = PlanPolicy(store, store.list_baselines(), named, today=on)
    instances = {instance.instance_id: instance for instance in store.list_instances()}
    scans = store.latest_scans()
    sets = ExposureSets(store)
    rows = []
    for exposure in fleet_exposure(store):
        instance = instances[exposure["instance_id"]]
        baselines: list[Baseline] = policy.baselines_for(instance)
        label = "+".join(b.name for b in baselines) or NO_BASELINE
        row: dict[str, Any] = {
            "instance_id": instance.instance_id,
            "name": instance.name,
            "baseline": label,
            "state": UNKNOWN,
            "reason": exposure["status"],
            "missing": None,
            "missing_kbs": None,
            "held": None,
            "held_kbs": None,
            "not_offered_kbs": None,
            "pending_reboot": None,
            "open_critical": exposure.get("open_critical"),
            "open_important": exposure.get("open_important"),
            "scanned_at": exposure.get("scanned_at"),
        }
        catalog = sets.catalog(exposure["product"]) if exposure["status"] == "assessed" else None
        if catalog is None:
            rows.append(row)
            continue
        offered = set(exposure["offered_kbs"])
        missing: list[tuple[str, str]] = []
        held: list[tuple[str, str]] = []
        for kb in exposure["offered_kbs"]:
            decision = policy.decision(baselines, catalog, kb)
            (missing if decision.approved else held).append((kb, decision.rule))
        scan = scans.get(instance.instance_id)
        pending = bool(scan and scan.pending_reboot)
        reasons = []
        if missing:
            reasons.append(f"{len(missing)} approved KB(s) missing")
        if pending:
            reasons.append("a reboot is pending")
        row |= {
            "state": NON_COMPLIANT if reasons else COMPLIANT,
            "reason": "; ".join(reasons) or "no approved KB missing",
            "missing": len(missing),
            "missing_kbs": ";".join(kb for kb, _ in missing),
            "held": len(held),
            "held_kbs": ";".join(f"{kb} ({rule})" for kb, rule in held),
            "not_offered_kbs": ";".join(k["kb"] for k in exposure["closing_kbs"] if k["kb"] not in offered),
            "pending_reboot": pending,
        }
        rows.append(row)
    rows.sort(key=lambda r: (STATES.index(r["state"]), r["name"], r["instance_id"]))
    return rows


def baseline_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per baseline (as the servers were judged): how many servers are in each state."""
    counts: dict[str, Counter[str]] = {}
    for row in rows:
        counts.setdefault(row["baseline"], Counter())[row["state"]] += 1
    summary = []
    for label in sorted(counts, key=lambda name: (name == NO_BASELINE, name)):
        states = counts[label]
        known = states[COMPLIANT] + states[NON_COMPLIANT]
        summary.append(
            {
                "baseline": label,
                "servers": sum(states.values()),
                COMPLIANT: states[COMPLIANT],
                NON_COMPLIANT: states[NON_COMPLIANT],
                UNKNOWN: states[UNKNOWN],
                "compliant_percent": round(100 * states[COMPLIANT] / known, 1) if known else None,
            }
        )
    return summary


def compliance_report(store: Store, baseline: str | None = None, on: date | None = None) -> Report:
    generated = generated_now()
    rows = compliance_rows(store, baseline, on or generated.date())
    per_baseline = baseline_summary(rows)
    states = Counter(row["state"] for row in rows)
    known = states[COMPLIANT] + states[NON_COMPLIANT]
    percent = f" ({100 * states[COMPLIANT] / known:.1f}% of the servers assessed)" if known else ""
    return Report(
        kind="compliance",
        title="Patch compliance" + (f" against baseline {baseline}" if baseline else ""),
        generated_at=generated,
        parameters={"baseline": baseline} if baseline else {},
        summary=[
            ("Compliant", f"{states[COMPLIANT]:,} servers{percent}"),
            ("Non-compliant", f"{states[NON_COMPLIANT]:,} servers (an approved KB missing, or a reboot pending)"),
            ("Unknown", f"{states[UNKNOWN]:,} servers (offline, never scanned or unidentified)"),
            ("Judged by", f"baseline {baseline}" if baseline else "each server's baselines (by its tags), else none"),
        ],
        tables=[
            Table(
                "Servers, non-compliant first",
                (
                    Column("name", "server"),
                    Column("instance_id", "instance"),
                    Column("baseline", "baseline"),
                    Column("state", "state"),
                    Column("reason", "why"),
                    Column("missing", "missing", True),
                    Column("missing_kbs", "missing approved KBs"),
                    Column("held", "held", True),
                    Column("held_kbs", "held KBs (rule)"),
                    Column("not_offered_kbs", "not offered (manual)"),
                    Column("scanned_at", "last scan"),
                ),
                rows,
                "No server is known yet: run `autopatch fleet list` and `autopatch fleet scan`.",
                terminal=("name", "baseline", "state", "missing_kbs", "reason"),
            ),
            Table(
                "Compliance per baseline",
                (
                    Column("baseline", "baseline"),
                    Column("servers", "servers", True),
                    Column(COMPLIANT, COMPLIANT, True),
                    Column(NON_COMPLIANT, NON_COMPLIANT, True),
                    Column(UNKNOWN, UNKNOWN, True),
                    Column("compliant_percent", "% compliant", True),
                ),
                per_baseline,
            ),
        ],
        charts=[
            BarChart(
                "Servers per baseline and compliance state",
                tuple(entry["baseline"] for entry in per_baseline),
                tuple(
                    Series(state, tuple(float(entry[state]) for entry in per_baseline))
                    for state in (COMPLIANT, NON_COMPLIANT, UNKNOWN)
                ),
            )
        ],
        data={
            "totals": {state: states[state] for state in (COMPLIANT, NON_COMPLIANT, UNKNOWN)},
            "baselines": per_baseline,
            "servers": rows,
        },
    )

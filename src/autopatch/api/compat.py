"""The original's seven endpoints at the root, so its dashboard keeps working against AutoPatch.

A thin translation layer, nothing more: every route calls the same steps as ``/api/v1``
(``operations``, ``catalog.queries``, the run worker, ``access.audit`` through ``audited``) and
renames the answer into the original's shapes: the API Gateway envelope ``{"statusCode": 200,
"body": "<JSON text>"}`` and its field names (``InstanceId``, ``cveNumber``, ``percentage``…).

What deliberately differs from the original (README "Compatibility with the original's
endpoints"): a Bearer token and a role are required (its dashboard sends none, so a reverse proxy
adds one); errors use real HTTP codes (401/403/404/409/422/503) with v1's error body instead of a
200 envelope carrying an error; every id is validated; every mutating call is audited.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from autopatch.api.deps import AuditTrail, FleetDep, StoreDep, audited, require
from autopatch.api.run_worker import RunDriver
from autopatch.catalog import queries
from autopatch.catalog.update import default_months, refresh_catalog
from autopatch.domain.access import Role
from autopatch.domain.identifiers import Month, parse_kb, parse_month
from autopatch.domain.instance_ids import parse_instance_id
from autopatch.engine.options import RunOptions
from autopatch.errors import ConflictError, NotFoundError
from autopatch.operations import fleet_rows, prepare_patch, reboot_instance, server_status
from autopatch.store.base import Store

router = APIRouter(tags=["compatibility (the original's endpoints)"])
# The original stored (and so showed and patched) Critical and Important CVEs only.
ORIGINAL_SEVERITIES = frozenset({"Critical", "Important"})
MAX_IDS = 1000
InstanceIds = Annotated[list[Annotated[str, Field(max_length=100)]], Field(min_length=1, max_length=MAX_IDS)]


class Envelope(BaseModel):
    """API Gateway's non-proxy answer, which the original's dashboard reads: ``body`` is JSON text."""

    statusCode: int  # noqa: N815 - the original's field name
    body: str


class Empty(BaseModel):
    model_config = ConfigDict(extra="ignore")


class OsVersions(BaseModel):
    os_versions: Annotated[list[Annotated[str, Field(min_length=1, max_length=200)]], Field(max_length=MAX_IDS)]


class InstancesBody(BaseModel):
    instance_ids: InstanceIds


class InstanceBody(BaseModel):
    instance_id: str = Field(max_length=100)


class SingleKbBody(BaseModel):
    instance_id: str = Field(max_length=100)
    kb: str = Field(max_length=40, description="digits, or KB and digits")


class UpdateCveBody(BaseModel):
    instanceIds: Annotated[list[Annotated[str, Field(max_length=100)]], Field(max_length=MAX_IDS)] = []  # noqa: N815


def envelope(body: Any) -> dict[str, Any]:
    return {"statusCode": 200, "body": json.dumps(body, ensure_ascii=False)}


def checked_ids(values: list[str], field: str = "instance_ids") -> list[str]:
    """Valid ids in the order given, each once (the dashboard may send one twice)."""
    return list(dict.fromkeys(parse_instance_id(value, field) for value in values))


def _run_worker(request: Request) -> RunDriver:
    """The app's worker pool, which drives runs started here exactly as those of ``POST /api/v1/runs``."""
    worker: RunDriver = request.app.state.run_worker
    return worker


@router.post("/fetch-os-info", response_model=Envelope, dependencies=[Depends(require(Role.VIEWER))])
def fetch_os_info(fleet: FleetDep, store: StoreDep, body: Empty | None = None) -> dict[str, Any]:
    """The fleet, discovered now, with the MSRC product each server runs (``NormalizedOS``)."""
    rows = fleet_rows(fleet, store, discover=True)
    instances = {instance.instance_id: instance for instance in store.list_instances()}
    fetched_at = datetime.now(UTC).isoformat(timespec="seconds")
    servers = []
    for row in rows:
        instance = instances[row["instance_id"]]
        servers.append(
            {
                "InstanceId": row["instance_id"],
                "Name": row["name"],
                "PlatformName": instance.platform_name,
                "PlatformVersion": row["build"] or instance.platform_version,
                "NormalizedOS": row["product"],
                "IPAddress": instance.ip_address,
                "AmiId": instance.ami_id,
                "AmiName": instance.ami_name,
                "PingStatus": "Online" if row["online"] else "ConnectionLost",
                "FetchedAt": fetched_at,
            }
        )
    return envelope(servers)


def cve_row(row: dict[str, Any]) -> dict[str, Any]:
    """A ``find_cves`` row as the original's CVE table row; every KB is kept (it kept only the first)."""
    kbs = [kb["kb"] for kb in row["kbs"]]
    return {
        "PK": f"OS#{row['product']}",
        "SK": f"CVE#{row['cve']}",
        "cveNumber": row["cve"],
        "title": row["title"],
        "severity": row["severity"],
        "baseScore": row["cvss_base"],
        "temporalScore": row["cvss_temporal"],
        "vectorString": row["cvss_vector"],
        "impact": row["impact"],
        "kbArticle": ", ".join(kbs),
        "kbArticles": kbs,
        "productFamily": row["product_family"],
        "releaseDate": row["release_date"] or f"{row['month']}-01",
    }


@router.post("/parse-cve", response_model=Envelope, dependencies=[Depends(require(Role.VIEWER))])
def parse_cve(body: OsVersions, store: StoreDep) -> dict[str, Any]:
    """Critical and Important CVEs of each product named (an unknown product is a 404 naming it)."""
    rows: list[dict[str, Any]] = []
    for product in dict.fromkeys(body.os_versions):
        rows.extend(cve_row(row) for row in queries.find_cves(store, product, severities=ORIGINAL_SEVERITIES))
    return envelope(rows)


@router.post("/start-patch", response_model=Envelope)
def start_patch(
    body: InstancesBody,
    request: Request,
    fleet: FleetDep,
    store: StoreDep,
    trail: Annotated[AuditTrail, Depends(audited("run.create"))],
) -> dict[str, Any]:
    """Start one patch run over the servers (operator), Important and above as the original; answers at once."""
    instance_ids = checked_ids(body.instance_ids)
    trail.target = ",".join(instance_ids)
    patch = prepare_patch(
        fleet,
        store,
        all_servers=False,
        instance_ids=instance_ids,
        tag=None,
        kbs=[],
        severity="Important",
        options=RunOptions(),
        targets_rule='"instance_ids" names at least one server',
    )
    run_id = _run_worker(request).submit_patch(patch, trail.principal.name)
    trail.detail = f"run {run_id} via /start-patch"
    return envelope({"run_id": run_id, "executionArn": run_id, "status": "Pending"})


def compat_percentage(store: Store, instance_id: str, percentage: float | None) -> float:
    """The CLI's percentage, as a number the original's dashboard can poll on.

    It polls while ``percentage < 100``. So a server an unfinished run still holds (planning,
    installing, rebooting, verifying) never reads 100 (at most 99), and one with nothing that
    needed work reads 100 when no run holds it (nothing to wait for) and 0 when one does.
    """
    held = store.run_holding(instance_id) is not None
    if percentage is None:
        return 0.0 if held else 100.0
    return min(percentage, 99.0) if held else percentage


@router.post("/get-patch-status", response_model=Envelope, dependencies=[Depends(require(Role.VIEWER))])
def get_patch_status(body: InstanceBody, fleet: FleetDep, store: StoreDep) -> dict[str, Any]:
    """``autopatch status``: each KB's latest state (oldest update first) and the progress percentage."""
    instance_id = parse_instance_id(body.instance_id)
    status = server_status(fleet, store, instance_id)
    details = [
        {
            "KB": kb["kb"].removeprefix("KB"),
            "Status": kb["state"],
            "LastUpdated": kb["updated_at"],
            "RebootRequired": bool(kb["reboot_required"]),
            "RunId": kb["run_id"],
            "Reason": kb["reason"],
        }
        for kb in status["kbs"]
    ]
    return envelope(
        {
            "instance_id": instance_id,
            "total": status["total"],
            "completed": status["completed"],
            "percentage": compat_percentage(store, instance_id, status["percentage"]),
            "details": details,
        }
    )


@router.post("/start-patch-single-kb", response_model=Envelope)
def start_patch_single_kb(
    body: SingleKbBody,
    request: Request,
    trail: Annotated[AuditTrail, Depends(audited("run.retry"))],
) -> dict[str, Any]:
    """Retry one KB on one server (operator): a new retry run, as ``autopatch retry``."""
    instance_id, kb = parse_instance_id(body.instance_id), parse_kb(body.kb)
    trail.target = f"{instance_id} {kb}"
    run_id = _run_worker(request).submit_retry(instance_id, kb, trail.principal.name)
    trail.detail = f"run {run_id} via /start-patch-single-kb"
    return envelope({"run_id": run_id, "executionArn": run_id, "status": "Pending"})


@router.post("/reboot-server", response_model=Envelope)
def reboot_server(
    body: InstancesBody,
    fleet: FleetDep,
    store: StoreDep,
    trail: Annotated[AuditTrail, Depends(audited("instance.reboot"))],
) -> dict[str, Any]:
    """Reboot each server (operator); one refused (offline, held by a run) makes the answer a 409 naming it.

    The others are still rebooted, as the original's single RebootInstances call did; the 409's
    message and the audit entry say which were.
    """
    instance_ids = checked_ids(body.instance_ids)
    trail.target = ",".join(instance_ids)
    rebooted: list[str] = []
    refused: list[str] = []
    for instance_id in instance_ids:
        try:
            reboot_instance(fleet, store, instance_id)
        except ConflictError as exc:
            refused.append(str(exc))
        else:
            rebooted.append(instance_id)
    trail.detail = f"rebooted: {', '.join(rebooted) or 'none'}"
    if refused:
        raise ConflictError(f"{'; '.join(refused)} (rebooted: {', '.join(rebooted) or 'none'})")
    return envelope({"rebooted": rebooted, "status": "reboot requested"})


def update_summary_rows(
    fleet: FleetDep, store: Store, instance_ids: list[str], since: Month, until: Month
) -> list[dict[str, Any]]:
    """One row per instance named, in the original's summary columns, from the catalog just updated.

    ``totalFetched`` counts the product's Critical and Important CVEs in the catalog, and
    ``filteredProcessed`` (and ``savedToDynamoDB``) those of the months just updated.
    """
    products = {row["instance_id"]: row["product"] for row in fleet_rows(fleet, store, discover=False)}
    rows = []
    for instance_id in instance_ids:
        product = products.get(instance_id)
        try:
            cves = queries.find_cves(store, product or "", severities=ORIGINAL_SEVERITIES)
        except NotFoundError as exc:  # an unidentified server is this row's error, not the request's
            rows.append(_summary_row(instance_id, product, 0, 0, 1, f"error: {exc}"))
            continue
        in_range = [row for row in cves if row["month"] and since <= parse_month(row["month"]) <= until]
        rows.append(_summary_row(instance_id, product, len(cves), len(in_range), 0, "success"))
    return rows


def _summary_row(
    instance_id: str, product: str | None, fetched: int, kept: int, errors: int, status: str
) -> dict[str, Any]:
    return {
        "instanceId": instance_id,
        "osName": product,
        "totalFetched": fetched,
        "filteredProcessed": kept,
        "savedToDynamoDB": kept,
        "errors": errors,
        "status": status,
    }


@router.post("/update-cve", response_model=Envelope)
def update_cve(
    body: UpdateCveBody,
    request: Request,
    fleet: FleetDep,
    store: StoreDep,
    trail: Annotated[AuditTrail, Depends(audited("catalog.update", Role.ADMIN))],
) -> dict[str, Any]:
    """Update the catalog now (admin), waiting as the original did: the catalog job's step, run in the request.

    The last three months from MSRC (or the offline folder ``AUTOPATCH_CATALOG_DIR`` names).
    """
    instance_ids = checked_ids(body.instanceIds, "instanceIds")
    trail.target = ",".join(instance_ids) or "catalog"
    today = date.today()
    since, until = default_months(today)
    summary = refresh_catalog(store, request.app.state.settings, today)  # the core of POST /api/v1/catalog/update
    trail.detail = f"{since}..{until}: {summary.entries_added} added, {summary.entries_updated} updated"
    return envelope(
        {
            "summary": update_summary_rows(fleet, store, instance_ids, since, until),
            "timeRange": {"start": str(since), "end": str(until)},
            "catalog": summary.as_dict() | {"documents": None},
        }
    )

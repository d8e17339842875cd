"""The reports against ``autopatch exposure``, their formats, and their CLI and API surfaces.

On the CLI's test environment (a copy of the session catalog, six simulated servers of seed 11, one
offline) after a fleet scan: the history, the SLA, compliance and CVE reports must count the same
open (server, CVE) pairs as ``exposure`` does, decided another way (every CVE with its reason).
"""

from __future__ import annotations

import csv
import html.parser
import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageStat

from autopatch.api.app import create_app
from autopatch.assessment import fleet_exposure
from autopatch.baselines import create_baseline, new_baseline
from autopatch.cli.context import load_settings
from autopatch.reports.compliance import compliance_report
from autopatch.reports.cve import cve_report
from autopatch.reports.formats import ReportFormat, render_report
from autopatch.reports.model import Report
from autopatch.reports.sla import sla_report
from autopatch.reports.trend import trend_report
from autopatch.store.sqlite import SqliteStore

from .conftest import run_cli
from .test_api import make_tokens

PDFTOPPM = shutil.which("pdftoppm")


# --- format checks, shared with test_reports_months.py -----------------------------------------


def check_csv(report: Report, rows: int | None = None) -> list[list[str]]:
    """One header row, then rows of exactly as many plain cells (no list or object written as JSON)."""
    body, rendering = render_report(report, ReportFormat.csv)
    assert rendering.media_type == "text/csv; charset=utf-8"
    lines = list(csv.reader(io.StringIO(body.decode("utf-8"))))
    header, data = lines[0], lines[1:]
    assert header == [column.header for column in report.main.columns]
    assert all(len(line) == len(header) for line in data)
    assert not any(cell.startswith(("[", "{")) for line in data for cell in line)
    if rows is not None:
        assert len(data) == rows
    return lines


class _Outline(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_html(report: Report, expected: list[str]) -> str:
    """A whole page: its title, a chart per chart, a table per table with rows, the texts expected."""
    body, _ = render_report(report, ReportFormat.html)
    page = body.decode("utf-8")
    outline = _Outline()
    outline.feed(page)
    text = " ".join(outline.text)
    assert outline.tags.count("svg") == len(report.charts)
    assert outline.tags.count("table") == sum(1 for table in report.tables if table.rows)
    assert outline.tags.count("script") == 0
    for wanted in [report.title, *expected]:
        assert wanted in text, wanted
    return page


def check_pdf(report: Report, folder: Path) -> list[Path]:
    """Rendered to PNG by poppler (as a person would look at it): every page has ink on it."""
    if PDFTOPPM is None:
        pytest.skip("poppler's pdftoppm is not installed (.ci/run installs it)")
    body, rendering = render_report(report, ReportFormat.pdf)
    assert rendering.media_type == "application/pdf" and body.startswith(b"%PDF-")
    pdf = folder / report.filename("pdf")
    pdf.write_bytes(body)
    subprocess.run([PDFTOPPM, "-png", "-r", "60", str(pdf), str(folder / report.kind)], check=True, timeout=60)
    pages = sorted(folder.glob(f"{report.kind}-*.png"))
    assert pages
    for page in pages:
        with Image.open(page) as image:
            low, high = image.convert("L").getextrema()
            assert low < 100 and high > 200, page  # text and white paper, not a blank page
            assert ImageStat.Stat(image.convert("L")).mean[0] < 254
    return pages


# --- a scanned fleet --------------------------------------------------------------------------


@pytest.fixture
def scanned(env: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[SqliteStore]:
    code, _, err = run_cli(capsys, "fleet", "scan")
    assert code == 0, err
    store = SqliteStore(env)
    yield store
    store.close()


def exposure_pairs(store: SqliteStore, overdue: bool = False) -> dict[tuple[str, str], dict[str, Any]]:
    """Open (server, CVE) pairs as ``exposure`` decides them, one CVE at a time, with its reason."""
    return {
        (row["instance_id"], cve["cve"]): cve
        for row in fleet_exposure(store, with_cves=True)
        if row["status"] == "assessed"
        for cve in row["cves"]
        if cve["status"] == "open" and (not overdue or cve["overdue"])
    }


def test_a_fleet_scan_records_history_that_counts_the_same_open_pairs_as_exposure(scanned: SqliteStore) -> None:
    latest = scanned.latest_history()
    rows = {row["instance_id"]: row for row in fleet_exposure(scanned)}
    assessed = {key for key, row in rows.items() if row["status"] == "assessed"}
    assert len(assessed) == 5 and set(latest) == assessed  # the offline server was not scanned
    sets = scanned.exposure_sets({span.set_digest for span in latest.values() if span.set_digest})
    history_pairs = {(iid, cve) for iid, span in latest.items() if span.set_digest for cve in sets[span.set_digest].ids}
    assert history_pairs == set(exposure_pairs(scanned))
    for instance_id, span in latest.items():
        assert span.scans == 1 and span.build == rows[instance_id]["build"]
        assert span.open_counts["Critical"] == rows[instance_id]["open_critical"]
        assert span.open_counts["Important"] == rows[instance_id]["open_important"]
        assert sum(span.open_counts.values()) == rows[instance_id]["open_total"]


def test_a_second_scan_with_nothing_changed_extends_the_same_span(
    scanned: SqliteStore, capsys: pytest.CaptureFixture[str]
) -> None:
    before = scanned.latest_history()
    assert run_cli(capsys, "fleet", "scan")[0] == 0
    after = scanned.latest_history()
    assert {key: span.first_scanned_at for key, span in after.items()} == {
        key: span.first_scanned_at for key, span in before.items()
    }
    assert all(after[key].scans == 2 and after[key].last_scanned_at > before[key].last_scanned_at for key in after)
    assert len(scanned.history_spans()) == len(after)


def test_the_sla_report_lists_the_pairs_exposure_calls_overdue(scanned: SqliteStore) -> None:
    report = sla_report(scanned, cves=True)
    listed = {(row["instance_id"], row["cve"]): row for row in report.data["cves"]}
    expected = exposure_pairs(scanned, overdue=True)
    assert listed.keys() == expected.keys() and listed
    for key, row in listed.items():
        assert row["due"] == expected[key]["due"]
    dues = [row["due"] for row in report.data["cves"]]
    assert dues == sorted(dues)  # oldest first
    per_server = sla_report(scanned).data["servers"]
    assert sum(row["overdue"] for row in per_server) == len(listed)
    assert [row["oldest_due"] for row in per_server] == sorted(row["oldest_due"] for row in per_server)
    assert [row["reason"][:7] for row in report.data["unknown"]] == ["offline"]
    critical = sla_report(scanned, severities={"Critical"}, cves=True).data["cves"]
    assert {(r["instance_id"], r["cve"]) for r in critical} == {
        k for k, v in expected.items() if v["severity"] == "Critical"
    }


def test_compliance_is_patch_managers_and_follows_the_baselines(scanned: SqliteStore) -> None:
    rows = {row["instance_id"]: row for row in fleet_exposure(scanned)}
    judged = {row["instance_id"]: row for row in compliance_report(scanned).data["servers"]}
    for instance_id, row in judged.items():
        exposure = rows[instance_id]
        if exposure["status"] != "assessed":
            assert row["state"] == "unknown" and row["reason"].startswith("offline")
            continue
        # No baseline: every KB Windows Update offers to close an open CVE is approved, and missing.
        missing = row["missing_kbs"].split(";") if row["missing_kbs"] else []
        assert missing == exposure["offered_kbs"]
        assert (row["state"] == "compliant") == (not exposure["offered_kbs"] and not row["pending_reboot"])
    behind = next(row for row in judged.values() if row["state"] == "non-compliant" and row["missing"])
    kb = behind["missing_kbs"].split(";")[0]
    baseline = new_baseline("hold", reject=[kb], reason="breaks the SQL cluster")
    create_baseline(scanned, baseline)
    held = {row["instance_id"]: row for row in compliance_report(scanned, "hold").data["servers"]}
    assert held[behind["instance_id"]]["held_kbs"].startswith(f"{kb} (rejected: breaks the SQL cluster)")
    assert kb not in (held[behind["instance_id"]]["missing_kbs"] or "")
    summary = compliance_report(scanned, "hold").data["baselines"]
    assert [entry["baseline"] for entry in summary] == ["hold"] and summary[0]["servers"] == len(judged)


def test_a_cve_report_names_the_servers_exposure_calls_open_with_their_closing_kb(scanned: SqliteStore) -> None:
    pairs = exposure_pairs(scanned)
    counts: dict[str, int] = {}
    for _, cve in pairs:
        counts[cve] = counts.get(cve, 0) + 1
    cve = max(sorted(counts), key=lambda c: (0 < counts[c] < 5, counts[c]))  # open on some servers, not all
    report = cve_report(scanned, cve.lower())
    exposed = {row["instance_id"]: row for row in report.data["exposed"]}
    assert set(exposed) == {iid for iid, c in pairs if c == cve}
    for instance_id, row in exposed.items():
        decision = pairs[(instance_id, cve)]
        assert row["closing_kbs"] == ";".join(decision["fixing_kbs"])
        assert row["offered"] is decision["offered"]
        assert row["since"] == scanned.latest_history()[instance_id].first_scanned_at[:19] + "+00:00"
    assert report.data["counts"]["unknown"] == 1
    assert (
        report.data["counts"]["exposed"] + report.data["counts"]["fixed"] + report.data["counts"]["not_affected"] == 5
    )


def test_every_report_renders_as_flat_csv_html_and_pdf(scanned: SqliteStore, tmp_path: Path) -> None:
    reports = {
        "compliance": compliance_report(scanned),
        "sla": sla_report(scanned),
        "cve": cve_report(scanned, next(iter(exposure_pairs(scanned)))[1]),
        "trend": trend_report(scanned, 7),
    }
    for kind, report in reports.items():
        check_csv(report)
        check_html(report, [table.title for table in report.tables if table.rows])
        folder = tmp_path / kind
        folder.mkdir()
        check_pdf(report, folder)
        assert json.loads(render_report(report, ReportFormat.json)[0])["report"] == kind


def test_html_and_csv_escape_what_servers_report(scanned: SqliteStore) -> None:
    [instance] = [i for i in scanned.list_instances() if not i.online]
    from dataclasses import replace
    from datetime import UTC, datetime

    scanned.save_instances([replace(instance, name="<script>alert(1)</script>,=cmd")], datetime.now(UTC))
    report = compliance_report(scanned)
    page = render_report(report, ReportFormat.html)[0].decode()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    lines = check_csv(report)
    assert [line[0] for line in lines if line[0].startswith("<script>")] == ["<script>alert(1)</script>,=cmd"]


# --- the CLI ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        (("report", "cve", "CVE-24-1"), "cve"),
        (("report", "cve", "CVE-1999-0001"), "cve"),
        (("report", "trend", "--days", "0"), "days"),
        (("report", "trend", "--until", "2024-13-01"), "until"),
        (("report", "compliance", "--baseline", "nope"), "baseline"),
        (("report", "sla", "--severity", "Urgent"), "severity"),
    ],
)
def test_bad_report_input_exits_2_naming_the_field(
    scanned: SqliteStore, capsys: pytest.CaptureFixture[str], arguments: tuple[str, ...], field: str
) -> None:
    code, out, err = run_cli(capsys, *arguments)
    assert code == 2 and out == ""
    assert err.startswith(f"error: {field}:"), err


def test_the_cli_prints_tables_and_writes_files(
    scanned: SqliteStore, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run_cli(capsys, "report", "compliance")
    assert code == 0 and "Patch compliance" in out and "Compliance per baseline" in out and "non-compliant" in out
    code, out, _ = run_cli(capsys, "report", "sla", "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("server,instance,severity,overdue")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "report", "trend", "--days", "30", "--format", "pdf")
    [pdf] = list(tmp_path.glob("trend_*.pdf"))
    assert code == 0 and pdf.read_bytes().startswith(b"%PDF-") and pdf.name in err
    code, _, _ = run_cli(capsys, "report", "sla", "--format", "html", "--output", str(tmp_path / "sla.html"))
    assert code == 0 and (tmp_path / "sla.html").read_text().startswith("<!doctype html>")


# --- the API ---------------------------------------------------------------------------------


@pytest.fixture
def client(scanned: SqliteStore, env: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    tokens = make_tokens(env)
    with TestClient(create_app(load_settings(), start_worker=False)) as test_client:
        yield test_client, {"Authorization": f"Bearer {tokens['viewer']}"}


@pytest.mark.parametrize(
    ("path", "kind"),
    [("compliance", "compliance"), ("sla", "sla"), ("trend?days=30", "trend"), ("cve/CVE-2024-21338", "cve")],
)
def test_reports_download_with_their_media_type_and_file_name(
    client: tuple[TestClient, dict[str, str]], path: str, kind: str
) -> None:
    test_client, viewer = client
    joiner = "&" if "?" in path else "?"
    answer = test_client.get(f"/api/v1/reports/{path}", headers=viewer)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert answer.json()["report"] == kind and "content-disposition" not in answer.headers
    for fmt, media, magic in (
        ("csv", "text/csv; charset=utf-8", b""),
        ("html", "text/html; charset=utf-8", b"<!doctype html>"),
        ("pdf", "application/pdf", b"%PDF-"),
    ):
        answer = test_client.get(f"/api/v1/reports/{path}{joiner}format={fmt}", headers=viewer)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == media and answer.content.startswith(magic)
        disposition = answer.headers["content-disposition"]
        assert disposition.startswith(f'attachment; filename="{kind}_') and disposition.endswith(f'.{fmt}"')


def test_report_errors_are_the_apis(client: tuple[TestClient, dict[str, str]]) -> None:
    test_client, viewer = client
    assert test_client.get("/api/v1/reports/compliance").status_code == 401
    bad_format = test_client.get("/api/v1/reports/sla?format=xml", headers=viewer)
    assert bad_format.status_code == 422 and bad_format.json()["error"]["field"] == "format"
    assert test_client.get("/api/v1/reports/cve/CVE-1999-0001", headers=viewer).status_code == 404
    bad_cve = test_client.get("/api/v1/reports/cve/not-a-cve", headers=viewer)
    assert bad_cve.status_code == 422 and bad_cve.json()["error"]["field"] == "cve"
    assert test_client.get("/api/v1/reports/trend?days=0", headers=viewer).status_code == 422
    unknown = test_client.get("/api/v1/reports/compliance?baseline=nope", headers=viewer)
    assert unknown.status_code == 404 and "'nope' is not a known baseline" in unknown.json()["error"]["message"]

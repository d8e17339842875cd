"""The ``autopatch`` command line, run in-process through its real entry point."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from autopatch.cli.app import main
from autopatch.store.sqlite import SqliteStore

from .conftest import xml_path


def run(capsys: pytest.CaptureFixture[str], db: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--db", str(db), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_import_prints_a_json_summary_and_is_idempotent(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    code, out, _ = run(capsys, db, "catalog", "import", str(xml_path("2024-Jan")), "--format", "json")
    assert code == 0
    summary = json.loads(out)
    assert summary["documents_imported"] == 1 and summary["entries_added"] == summary["catalog"]["entries"] > 1000
    code, out, _ = run(capsys, db, "catalog", "import", str(xml_path("2024-Jan")), "--format", "json")
    assert json.loads(out)["documents_unchanged"] == 1 and json.loads(out)["entries_added"] == 0


def test_cves_and_kb_commands_answer_from_the_catalog(capsys: pytest.CaptureFixture[str], catalog_db: Path) -> None:
    code, out, _ = run(
        capsys,
        catalog_db,
        "catalog",
        "cves",
        "--product",
        "Windows Server 2022",
        "--month",
        "2024-01",
        "--severity",
        "Critical",
        "--format",
        "json",
    )
    assert code == 0
    rows = json.loads(out)
    assert {row["severity"] for row in rows} == {"Critical"}
    assert "KB5034129" in {kb["kb"] for row in rows for kb in row["kbs"]}
    code, out, _ = run(capsys, catalog_db, "catalog", "kb", "KB5034129", "--format", "json")
    assert code == 0 and json.loads(out)["superseded_by"] == ["KB5034770"]


def test_csv_output_has_a_header_and_one_row_per_product(capsys: pytest.CaptureFixture[str], catalog_db: Path) -> None:
    code, out, _ = run(capsys, catalog_db, "catalog", "products", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {"product_id", "product", "cves", "kbs"} <= set(rows[0])
    assert any(row["product"] == "Windows Server 2025" and row["product_id"] == "12436" for row in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("catalog", "kb", "KB12x"), "kb: 'KB12x' is invalid"),
        (("catalog", "cves", "--product", "Windows Server 2099"), "'Windows Server 2099' is not in the catalog"),
        (("catalog", "cves", "--product", "Windows Server 2022", "--month", "2024-13"), "month: '2024-13'"),
        (("catalog", "cves", "--product", "Windows Server 2022", "--severity", "Urgent"), "severity: 'Urgent'"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(
    capsys: pytest.CaptureFixture[str], catalog_db: Path, args: tuple[str, ...], message: str
) -> None:
    before = SqliteStore(catalog_db).counts()
    code, _, err = run(capsys, catalog_db, *args)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert SqliteStore(catalog_db).counts() == before


def test_importing_a_truncated_gzip_fails_with_exit_2_and_keeps_the_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "cli.db"
    assert run(capsys, db, "catalog", "import", str(xml_path("2024-Jan")))[0] == 0
    before = SqliteStore(db).counts()
    broken = tmp_path / "2024-Feb.xml.gz"
    broken.write_bytes(xml_path("2024-Feb").read_bytes()[:4096])
    code, _, err = run(capsys, db, "catalog", "import", str(broken))
    assert code == 2 and "truncated or damaged gzip" in err
    assert SqliteStore(db).counts() == before


def test_a_bad_setting_names_its_environment_variable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOPATCH_HTTP_TIMEOUT", "-1")
    code, _, err = run(capsys, tmp_path / "x.db", "catalog", "products")
    assert code == 2 and "AUTOPATCH_HTTP_TIMEOUT" in err


def test_assess_prints_the_documented_json_and_rejects_bad_facts(
    capsys: pytest.CaptureFixture[str], catalog_db: Path
) -> None:
    args = ["assess", "--product", "Windows Server 2022", "--build", "10.0.20348.2227", "--month", "2024-02"]
    code, out, _ = run(capsys, catalog_db, *args, "--format", "json")
    result = json.loads(out)
    assert code == 0 and result["product"] == "Windows Server 2022" and result["build"] == "10.0.20348.2227"
    assert (result["summary"]["open"], result["summary"]["fixed"]) == (40, 0)
    assert {"cve", "severity", "status", "reason", "fixing_kbs", "fix"} <= set(result["cves"][0])
    for bad, message in (("10.0", "build: '10.0'"), ("x.y", "build: 'x.y'"), ("", "build: ''")):
        code, _, err = run(capsys, catalog_db, "assess", "--product", "Windows Server 2022", "--build", bad)
        assert code == 2 and message in err
    code, _, err = run(capsys, catalog_db, *args, "--installed", "KB12x")
    assert code == 2 and "installed: 'KB12x'" in err

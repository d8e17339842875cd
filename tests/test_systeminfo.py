"""``systeminfo`` output read as an air-gapped admin hands it over: any language, code page or format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autopatch.cli.app import main
from autopatch.domain.systeminfo import parse_systeminfo
from autopatch.errors import DocumentFormatError

from .systeminfo_samples import ENCODINGS, WS2016_HOTFIXES, WS2019_HOTFIXES, systeminfo_csv, systeminfo_text

OS_NAMES = {"ru": "Майкрософт Windows Server 2016 Datacenter"}


@pytest.mark.parametrize(("language", "encoding"), sorted(ENCODINGS.items()))
def test_every_language_and_code_page_gives_the_same_os_build_and_hotfixes(language: str, encoding: str) -> None:
    os_name = OS_NAMES.get(language, "Microsoft Windows Server 2016 Datacenter")
    raw = systeminfo_text(language, os_name, "10.0.14393", WS2016_HOTFIXES).encode(encoding)
    info = parse_systeminfo(raw)
    assert "Windows Server 2016" in info.os_name
    assert info.os_version == "10.0.14393"
    assert info.hotfixes == WS2016_HOTFIXES
    assert info.host_name == "APP-01"


def test_the_csv_format_is_read_too() -> None:
    info = parse_systeminfo(
        systeminfo_csv("Microsoft Windows Server 2019 Standard", "10.0.17763", WS2019_HOTFIXES).encode()
    )
    assert (info.os_version, info.hotfixes) == ("10.0.17763", WS2019_HOTFIXES)


def test_network_card_entries_and_duplicates_are_not_hotfixes() -> None:
    hotfixes = ("KB4483229", "KB4483229")
    info = parse_systeminfo(
        systeminfo_text("en", "Microsoft Windows Server 2016 Standard", "10.0.14393", hotfixes).encode()
    )
    assert info.hotfixes == ("KB4483229",)


@pytest.mark.parametrize(
    "raw", [b"", b"hello world\n", b"Host Name: x\nOS Name: Linux\nOS Version: 5.15.0\n", b"x" * 1_000_001]
)
def test_what_is_not_systeminfo_output_is_refused(raw: bytes) -> None:
    with pytest.raises(DocumentFormatError):
        parse_systeminfo(raw)


def run(capsys: pytest.CaptureFixture[str], db: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--db", str(db), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_assess_reads_a_german_systeminfo_and_says_what_it_assumed(
    capsys: pytest.CaptureFixture[str], history_db: Path, tmp_path: Path
) -> None:
    path = tmp_path / "systeminfo.txt"
    path.write_bytes(
        systeminfo_text("de", "Microsoft Windows Server 2016 Datacenter", "10.0.14393", WS2016_HOTFIXES).encode("cp850")
    )
    code, out, _ = run(capsys, history_db, "assess", "--systeminfo", str(path), "--format", "json")
    result = json.loads(out)
    assert code == 0 and result["product"] == "Windows Server 2016"
    warnings = "\n".join(result["warnings"])
    assert "Server Core" in warnings and "assumed 'Windows Server 2016'" in warnings
    # Not in the catalog: named, never silently ignored.
    for unknown in ("KB4049065", "KB4091664", "KB4132216"):
        assert f"{unknown} is not in the catalog" in warnings
    assert "has no revision" in warnings
    code, _, err = run(capsys, history_db, "assess", "--systeminfo", str(path))
    assert code == 0 and "warning: systeminfo does not say whether this is Server Core" in err


def test_assess_takes_the_core_variant_when_told_and_refuses_a_contradicting_product(
    capsys: pytest.CaptureFixture[str], history_db: Path, tmp_path: Path
) -> None:
    path = tmp_path / "systeminfo.txt"
    path.write_text(systeminfo_text("en", "Microsoft Windows Server 2016 Standard", "10.0.14393", WS2016_HOTFIXES))
    core = "Windows Server 2016 (Server Core installation)"
    code, out, _ = run(capsys, history_db, "assess", "--systeminfo", str(path), "--product", core, "-f", "json")
    assert (
        code == 0
        and json.loads(out)["product"] == core
        and not any("Server Core" in warning for warning in json.loads(out)["warnings"])
    )
    code, _, err = run(capsys, history_db, "assess", "--systeminfo", str(path), "--product", "Windows Server 2019")
    assert code == 2 and "product: 'Windows Server 2019'" in err and "contradicts" in err


def test_a_windows_client_systeminfo_is_refused(
    capsys: pytest.CaptureFixture[str], history_db: Path, tmp_path: Path
) -> None:
    path = tmp_path / "systeminfo.txt"
    path.write_text(systeminfo_text("en", "Microsoft Windows 10 Education", "10.0.17763", ("KB4480116",)))
    code, _, err = run(capsys, history_db, "assess", "--systeminfo", str(path))
    assert code == 2 and "client edition" in err and len(err.strip().splitlines()) == 1


def test_installed_accepts_a_comma_list_and_names_unknown_kbs(
    capsys: pytest.CaptureFixture[str], history_db: Path
) -> None:
    code, out, _ = run(
        capsys,
        history_db,
        "assess",
        "--product",
        "Windows Server 2019",
        "--build",
        "10.0.17763",
        "--installed",
        "KB4480116, KB9999999",
        "--installed",
        "KB4470788",
        "-f",
        "json",
    )
    result = json.loads(out)
    assert code == 0
    assert any("KB9999999 is not in the catalog" in warning for warning in result["warnings"])
    assert any("KB4470788 is not in the catalog" in warning for warning in result["warnings"])
    fixed = {cve["cve"]: cve for cve in result["cves"] if cve["status"] == "fixed"}
    assert fixed["CVE-2019-0536"]["reason"] == "KB4480116 is installed"

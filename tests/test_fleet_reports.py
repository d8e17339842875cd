"""Scan and install reports: the JSON contract of fleet/base.py, read strictly and written identically."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from autopatch.domain.fleet import OfferedUpdate
from autopatch.errors import ExecutionError, ValidationError
from autopatch.fleet.reports import (
    ERROR_LIMIT,
    WU_E_NOT_APPLICABLE,
    UpdateResultCode,
    install_json,
    parse_install_output,
    parse_scan_output,
    scan_json,
)

SERVER = "i-0123456789abcdef0"
SCANNED_AT = datetime(2024, 2, 14, 9, 30, tzinfo=UTC)
# What scan.ps1 prints on a Server Core 2022 box one month behind (ConvertTo-Json -Compress escapes
# apostrophes and non-ASCII as \\uXXXX, as Windows PowerShell 5.1 does).
REAL_SCAN = (
    '{"schema":1,"computer_name":"EC2AMAZ-7K2Q1LM","os_caption":"Microsoft Windows Server 2022 Datacenter",'
    '"os_version":"10.0.20348","current_build":"20348","ubr":2227,"installation_type":"Server Core",'
    '"installed_kbs":["KB5034129","KB5032198","KB5034439"],'
    '"offered_updates":[{"kb":"KB5034770","title":"2024-02 Cumulative Update for Microsoft server operating system'
    ' version 21H2 for x64-based Systems (KB5034770)"},{"kb":"KB890830","title":"Windows Malicious Software Removal'
    ' Tool x64 - v5.121 (KB890830)"},{"kb":"KB5034770","title":"duplicate entry of the same KB"}],'
    '"pending_reboot":false}'
)
REAL_INSTALL = (
    '{"schema":1,"kb":"KB5034770","result_code":2,"hresult":0,"reboot_required":true,'
    '"message":"installed: 2024-02 Cumulative Update for Microsoft server operating system version 21H2"}'
)


def scan_with(**changes: Any) -> str:
    document = json.loads(REAL_SCAN)
    for key, value in changes.items():
        if value is None:
            del document[key]
        else:
            document[key] = value
    return json.dumps(document)


def test_a_real_scan_becomes_a_report_with_the_full_build_and_canonical_kbs() -> None:
    report = parse_scan_output(SERVER, REAL_SCAN, SCANNED_AT)
    assert report.instance_id == SERVER and report.scanned_at == SCANNED_AT
    assert report.build == "10.0.20348.2227"
    assert report.installation_type == "Server Core"
    assert report.os_caption == "Microsoft Windows Server 2022 Datacenter"
    assert report.installed_kbs == {"KB5034129", "KB5032198", "KB5034439"}
    assert report.offered_kbs == {"KB5034770", "KB890830"}
    assert len(report.offered) == 2 and report.offered[0].title.startswith("2024-02 Cumulative Update")
    assert report.pending_reboot is False


def test_the_first_installed_kb_counts_like_every_other_one() -> None:
    # Defect 1 of the original: its first KB kept an "INSTALLED_KBS=" prefix and never matched.
    report = parse_scan_output(SERVER, scan_with(installed_kbs=["KB5034129"]), SCANNED_AT)
    assert "KB5034129" in report.installed_kbs


def test_noise_before_the_json_line_is_tolerated() -> None:
    output = "WARNING: The Windows Update service is starting.\r\n\r\n" + REAL_SCAN + "\r\n\r\n"
    assert parse_scan_output(SERVER, output, SCANNED_AT).build == "10.0.20348.2227"


def test_the_build_takes_major_and_minor_from_the_os_version_and_the_rest_from_the_registry() -> None:
    report = parse_scan_output(SERVER, scan_with(os_version="10.0.17763", current_build="17763", ubr=5329), SCANNED_AT)
    assert report.build == "10.0.17763.5329"


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("", "the output is empty"),
        ("   \r\n\n", "the output is empty"),
        ("Get-HotFix : Access is denied", "the last non-empty line is not JSON"),
        (REAL_SCAN + "\nWARNING: something after the report", "the last non-empty line is not JSON"),
        (REAL_SCAN[:-20], "the last non-empty line is not JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        (scan_with(installed_kbs=["KB5034129", "KB12x"]), "field 'installed_kbs[1]': 'KB12x' is invalid: a KB is"),
        (scan_with(offered_updates=[{"kb": "5034770; rm", "title": "x"}]), "field 'offered_updates[0].kb'"),
        (scan_with(offered_updates=[{"kb": "KB5034770"}]), "field 'offered_updates[0].title' is missing"),
        (scan_with(pending_reboot=None), "field 'pending_reboot' is missing"),
        (scan_with(pending_reboot="false"), "field 'pending_reboot': 'false' is invalid"),
        (scan_with(ubr="2227"), "field 'ubr': '2227' is invalid"),
        (scan_with(current_build="20348.1"), "field 'current_build'"),
        (scan_with(os_version="Windows"), "field 'os_version'"),
        (scan_with(os_version="10.0.２０３４８"), "field 'os_version'"),  # full-width digits are not digits here
        (scan_with(current_build="２０３４８"), "field 'current_build'"),
        (scan_with(installation_type="Desktop"), "field 'installation_type'"),
        (scan_with(schema=2), "field 'schema': 2 is invalid"),
        (scan_with(last_boot_time="2024-02-14T03:12:45+00:00"), "field 'last_boot_time'"),  # an offset, not Z
        (scan_with(last_boot_time="2024-02-14T03:12:45"), "field 'last_boot_time'"),  # local time: which zone?
        (scan_with(last_boot_time="2024-02-14 03:12:45Z"), "field 'last_boot_time'"),
        (scan_with(last_boot_time="2024-02-14T03:12:45.123Z"), "field 'last_boot_time'"),
        (scan_with(last_boot_time="14/02/2024 03:12:45"), "must be a UTC time written YYYY-MM-DDTHH:MM:SSZ"),
        (scan_with(last_boot_time="２０２４-02-14T03:12:45Z"), "field 'last_boot_time'"),
        (scan_with(last_boot_time="2024-02-30T03:12:45Z"), "field 'last_boot_time': '2024-02-30T03:12:45Z' is invalid"),
        (scan_with(last_boot_time=1707880365), "field 'last_boot_time': 1707880365 is invalid"),
        (scan_with(error=42), "field 'error': 42 is invalid"),
        (scan_with(error="Windows Update unreachable"), "field 'error': 'Windows Update unreachable' is invalid"),
    ],
)
def test_malformed_scan_output_is_rejected_naming_the_instance_and_the_field(output: str, message: str) -> None:
    with pytest.raises(ExecutionError) as error:
        parse_scan_output(SERVER, output, SCANNED_AT)
    assert str(error.value).startswith(f"scan output of {SERVER}: ")
    assert message in str(error.value)


def test_every_problem_of_a_scan_is_reported_at_once() -> None:
    with pytest.raises(ExecutionError) as error:
        parse_scan_output(SERVER, scan_with(ubr=None, installed_kbs=["KB1"]), SCANNED_AT)
    assert "field 'ubr' is missing" in str(error.value) and "field 'installed_kbs[0]'" in str(error.value)


def test_output_cut_at_the_ssm_limit_says_so() -> None:
    noise = "x" * 24_000 + "\n"
    with pytest.raises(ExecutionError, match="24,000 characters"):
        parse_scan_output(SERVER, noise + REAL_SCAN[:100], SCANNED_AT)


def test_a_scan_for_a_malformed_instance_id_is_an_input_error() -> None:
    with pytest.raises(ValidationError, match="instance_id"):
        parse_scan_output("server-1", REAL_SCAN, SCANNED_AT)


def test_a_scan_from_an_older_script_has_no_boot_time_and_no_error() -> None:
    report = parse_scan_output(SERVER, REAL_SCAN, SCANNED_AT)
    assert report.boot_time is None and report.error is None
    nulls = parse_scan_output(SERVER, REAL_SCAN[:-1] + ',"last_boot_time":null,"error":null}', SCANNED_AT)
    assert nulls.boot_time is None and nulls.error is None


def test_the_last_boot_time_becomes_an_aware_utc_datetime() -> None:
    report = parse_scan_output(SERVER, scan_with(last_boot_time="2024-02-14T03:12:45Z"), SCANNED_AT)
    assert report.boot_time == datetime(2024, 2, 14, 3, 12, 45, tzinfo=UTC)
    assert report.boot_time is not None and report.boot_time.utcoffset() == timedelta(0)


def test_a_scan_whose_windows_update_part_failed_keeps_build_and_hotfixes_and_says_why() -> None:
    output = scan_with(offered_updates=[], error="Windows Update search failed (HRESULT 0x8024402C): no connection")
    report = parse_scan_output(SERVER, output, SCANNED_AT)
    assert report.error == "Windows Update search failed (HRESULT 0x8024402C): no connection"
    assert report.build == "10.0.20348.2227" and "KB5034129" in report.installed_kbs and report.offered == ()


def test_a_scan_error_is_kept_on_one_line_and_cut_to_a_sane_length() -> None:
    long_error = "Exception from HRESULT: 0x8024402C\r\n   at Search(String criteria)  " + "x" * 5000
    report = parse_scan_output(SERVER, scan_with(offered_updates=[], error=long_error), SCANNED_AT)
    assert report.error is not None and len(report.error) == ERROR_LIMIT
    assert "\n" not in report.error and report.error.startswith("Exception from HRESULT: 0x8024402C at Search")
    blank = parse_scan_output(SERVER, scan_with(offered_updates=[], error="  "), SCANNED_AT)
    assert blank.error is None


def test_non_ascii_names_and_titles_escaped_by_the_script_survive() -> None:
    # scan.ps1 escapes every UTF-16 unit above "~" (PowerShell 5.1 would print them in the OEM code
    # page): "SRV-MÜNCHEN-Ω" and a title with accents and an emoji (a surrogate pair) arrive as ASCII.
    escaped_name = "SRV-M\\u00dcNCHEN-\\u03a9"
    escaped_title = "Mise \\u00e0 jour \\u00e9t\\u00e9 \\ud83d\\udce6 (KB890830)"
    output = REAL_SCAN.replace("EC2AMAZ-7K2Q1LM", escaped_name).replace(
        "Windows Malicious Software Removal Tool x64 - v5.121 (KB890830)", escaped_title
    )
    assert output.isascii() and escaped_title in output
    report = parse_scan_output(SERVER, output, SCANNED_AT)
    assert "Mise \u00e0 jour \u00e9t\u00e9 \U0001f4e6 (KB890830)" in {update.title for update in report.offered}
    assert json.loads(output)["computer_name"] == "SRV-M\u00dcNCHEN-\u03a9"
    printed = install_json(kb="KB5034770", result_code=2, message="install\u00e9e : Mise \u00e0 jour \U0001f4e6")
    assert printed.isascii() and "install\\u00e9e" in printed and "\\ud83d\\udce6" in printed
    assert parse_install_output(printed).message == "install\u00e9e : Mise \u00e0 jour \U0001f4e6"


def test_a_real_install_result_becomes_a_report() -> None:
    report = parse_install_output(REAL_INSTALL)
    assert report.kb == "KB5034770" and report.result_code == UpdateResultCode.SUCCEEDED
    assert report.hresult == 0 and report.reboot_required and report.message.startswith("installed:")


def test_a_kb_windows_update_does_not_offer_reports_wu_e_not_applicable() -> None:
    output = install_json(
        kb="KB5034129", result_code=UpdateResultCode.FAILED, hresult=WU_E_NOT_APPLICABLE, message="KB not offered"
    )
    report = parse_install_output(output)
    assert report.result_code == 4 and report.hresult == -2145124329 == WU_E_NOT_APPLICABLE
    assert report.hresult & 0xFFFFFFFF == 0x80240017


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kb": "KB12x"}, "field 'kb': 'KB12x' is invalid"),
        ({"result_code": 7}, "field 'result_code': 7 is invalid"),
        ({"hresult": 0x80240017}, "field 'hresult'"),  # unsigned: the contract says a signed Int32
        ({"reboot_required": 1}, "field 'reboot_required'"),
        ({"message": None}, "field 'message' is missing"),
        ({"status": "success"}, "field 'status': 'success' is invalid"),
        ({"status": "Installed"}, "field 'status'"),
        ({"status": 2}, "field 'status'"),
        ({"status": "failed"}, "needs a result_code other than 2 or 3, got 2"),
        ({"status": "already-installed", "result_code": 4}, "needs a result_code 2 or 3, got 4"),
    ],
)
def test_malformed_install_output_is_rejected_naming_the_field(changes: dict[str, Any], message: str) -> None:
    document = json.loads(REAL_INSTALL)
    for key, value in changes.items():
        if value is None:
            del document[key]
        else:
            document[key] = value
    with pytest.raises(ExecutionError) as error:
        parse_install_output(json.dumps(document), instance_id=SERVER)
    assert str(error.value).startswith(f"install output of {SERVER}: ") and message in str(error.value)


def test_an_install_from_an_older_script_has_no_status() -> None:
    assert parse_install_output(REAL_INSTALL).status is None


@pytest.mark.parametrize(
    ("status", "result_code", "hresult"),
    [
        ("installed", 2, 0),
        ("installed", 3, 0),
        ("already-installed", 2, 0),
        ("not-applicable", 4, WU_E_NOT_APPLICABLE),
        ("not-approved", 4, WU_E_NOT_APPLICABLE),
        ("hidden", 4, WU_E_NOT_APPLICABLE),
        ("failed", 4, -2145124322),  # 0x8024001E WU_E_SERVICE_STOP
        ("failed", 5, 0),
    ],
)
def test_every_install_status_is_written_and_read_back(status: str, result_code: int, hresult: int) -> None:
    printed = install_json(kb="KB5034770", result_code=result_code, hresult=hresult, status=status)
    assert json.loads(printed)["status"] == status
    report = parse_install_output(printed, instance_id=SERVER)
    assert report.status == status and report.result_code == result_code and report.hresult == hresult


def test_scan_json_writes_the_boot_time_in_utc_and_the_error() -> None:
    paris = timezone(timedelta(hours=1))
    printed = scan_json(
        computer_name="SRV-\u00c9T\u00c9",
        os_caption="Microsoft Windows Server 2022 Datacenter",
        build="10.0.20348.2227",
        installation_type="Server",
        last_boot_time=datetime(2024, 2, 14, 4, 12, 45, 999_999, tzinfo=paris),
        error="Windows Update search failed (HRESULT 0x8024402C)",
    )
    document = json.loads(printed)
    assert document["last_boot_time"] == "2024-02-14T03:12:45Z" and printed.isascii()
    assert document["computer_name"] == "SRV-\u00c9T\u00c9"
    report = parse_scan_output(SERVER, printed, SCANNED_AT)
    assert report.boot_time == datetime(2024, 2, 14, 3, 12, 45, tzinfo=UTC)
    assert report.error == "Windows Update search failed (HRESULT 0x8024402C)"


def test_scan_json_refuses_a_naive_boot_time_and_an_error_beside_offered_updates() -> None:
    server: dict[str, Any] = {
        "computer_name": "X",
        "os_caption": "Microsoft Windows Server 2022 Datacenter",
        "build": "10.0.20348.2227",
        "installation_type": "Server",
    }
    with pytest.raises(ValidationError, match=r"last_boot_time.*timezone-aware"):
        scan_json(**server, last_boot_time=datetime(2024, 2, 14, 3, 12, 45))
    with pytest.raises(ValidationError, match=r"error.*offered_updates"):
        scan_json(**server, offered_updates=[OfferedUpdate("KB5034770", "x")], error="search failed")


def test_scan_json_prints_what_the_scan_script_prints_and_parses_back() -> None:
    printed = scan_json(
        computer_name="EC2AMAZ-7K2Q1LM",
        os_caption="Microsoft Windows Server 2022 Datacenter",
        build="10.0.20348.2227",
        installation_type="Server Core",
        installed_kbs=["kb5034129"],
        offered_updates=[OfferedUpdate("KB5034770", "2024-02 Cumulative Update")],
    )
    assert "\n" not in printed
    assert list(json.loads(printed)) == [
        "schema",
        "computer_name",
        "os_caption",
        "os_version",
        "current_build",
        "ubr",
        "installation_type",
        "installed_kbs",
        "offered_updates",
        "pending_reboot",
        "last_boot_time",
        "error",
    ]
    assert json.loads(printed)["installed_kbs"] == ["KB5034129"]
    assert json.loads(printed)["last_boot_time"] is None and json.loads(printed)["error"] is None
    report = parse_scan_output(SERVER, printed, SCANNED_AT)
    assert report.build == "10.0.20348.2227" and report.offered_kbs == {"KB5034770"}


def test_the_writers_refuse_to_print_what_the_readers_would_reject() -> None:
    with pytest.raises(ValidationError, match="installed_kbs"):
        scan_json(
            computer_name="X",
            os_caption="Microsoft Windows Server 2022 Datacenter",
            build="10.0.20348.2227",
            installation_type="Server",
            installed_kbs=["KB12x"],
        )
    with pytest.raises(ValidationError, match="result_code"):
        install_json(kb="KB5034770", result_code=9)
    with pytest.raises(ValidationError, match="build"):
        scan_json(computer_name="X", os_caption="Windows", build="20348", installation_type="Server")

"""The PowerShell scripts, read as a syntax tree and as text: each fix a review asked for stays in.

No PowerShell can run here: Debian has no ``powershell`` package, npm's ``pwsh`` downloads its
binary from GitHub when it installs, and no PyPI package bundles one. So these tests do not skip
waiting for one; they parse the scripts with tree-sitter and pin, finding by finding, what the
review of the Windows Update Agent documentation asked for, and check that every report the
scripts can print has the keys, in order, and the status/result-code pairs that
``autopatch.fleet.reports`` accepts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_powershell

from autopatch.fleet.reports import WU_E_NOT_APPLICABLE, install_json, parse_scan_output, scan_json
from autopatch.fleet.ssm import install_commands

SCRIPTS_DIR = Path(str(resources.files("autopatch.fleet") / "scripts"))
PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
OFFERED_CRITERIA = "IsInstalled=0 and IsHidden=0 and Type='Software'"
INSTALLED_CRITERIA = "IsInstalled=1 and Type='Software'"
HIDDEN_CRITERIA = "IsInstalled=0 and IsHidden=1 and Type='Software'"
BOTH = pytest.mark.parametrize("name", ["scan.ps1", "install.ps1"])


def script(name: str) -> str:
    return (SCRIPTS_DIR / name).read_text(encoding="utf-8")


def tree(text: str) -> tree_sitter.Node:
    return PARSER.parse(text.encode()).root_node


def nodes(root: tree_sitter.Node, node_type: str) -> Iterator[tree_sitter.Node]:
    if root.type == node_type:
        yield root
    for child in root.children:
        yield from nodes(child, node_type)


def text_of(node: tree_sitter.Node) -> str:
    return (node.text or b"").decode()


def commands(text: str, name: str) -> list[dict[str, str]]:
    """Every call of the command ``name``: ``{"-Parameter": "argument text"}``, line continuations joined."""
    calls = []
    for command in nodes(tree(text), "command"):
        command_name = command.child_by_field_name("command_name") or command.children[0]
        if text_of(command_name) != name:
            continue
        arguments: dict[str, str] = {}
        parameter = None
        for element in nodes(command, "command_elements"):
            for child in element.children:
                if child.type == "command_parameter":
                    parameter = text_of(child)
                elif child.type != "command_argument_sep" and parameter is not None:
                    arguments[parameter] = text_of(child)
                    parameter = None
            break
        calls.append(arguments)
    return calls


def catch_blocks(text: str) -> list[str]:
    return [text_of(clause) for clause in nodes(tree(text), "catch_clause")]


def ordered_keys(text: str, start: str) -> list[str]:
    """The keys of the first ``[ordered]@{ ... }`` after ``start``, in order."""
    block = text[text.index(start) :]
    block = block[block.index("[ordered]@{") : block.index("\n    }", block.index("[ordered]@{"))]
    return re.findall(r"^\s+([a-z_]+)\s+=", block, re.MULTILINE)


# --- Syntax ---------------------------------------------------------------------------------------


def test_both_scripts_and_the_wrapped_install_command_are_valid_powershell() -> None:
    for name, text in [
        ("scan.ps1", script("scan.ps1")),
        ("install.ps1", script("install.ps1")),
        ("install commands", "\n".join(install_commands("KB5034129"))),
    ]:
        root = tree(text)
        errors = [text_of(node)[:60] for node in nodes(root, "ERROR")]
        assert not root.has_error, (name, errors)


# --- What the scripts print agrees with the contract ----------------------------------------------


def test_the_scan_report_has_the_contracts_keys_in_order() -> None:
    written = list(
        json.loads(scan_json(computer_name="X", os_caption="Windows", build="10.0.20348.1", installation_type="Server"))
    )
    assert ordered_keys(script("scan.ps1"), "$report = ") == written
    assert written[-2:] == ["last_boot_time", "error"]


def test_the_install_report_has_the_contracts_keys_in_order() -> None:
    written = list(json.loads(install_json(kb="KB5034770", result_code=2)))
    assert ordered_keys(script("install.ps1"), "function Write-InstallReport") == written
    assert written[-1] == "status"


def test_every_install_report_the_script_can_print_is_one_the_contract_accepts() -> None:
    text = script("install.ps1")
    reports = commands(text, "Write-InstallReport")
    assert len(reports) >= 8
    statuses = set()
    for report in reports:
        status = report["-Status"].strip("'")
        statuses.add(status)
        result_code = report["-ResultCode"]
        # A variable result code is Windows' own; take one consistent with the status to check the pair.
        code = int(result_code) if result_code.isdigit() else (2 if status == "installed" else 4)
        hresult = {"$WU_E_NOT_APPLICABLE": WU_E_NOT_APPLICABLE}.get(report["-HResult"], 0)
        install_json(kb="KB5034770", result_code=code, hresult=hresult, status=status)  # raises if refused
    assert statuses == {"installed", "already-installed", "not-applicable", "not-approved", "hidden", "failed"}
    assert f"$WU_E_NOT_APPLICABLE = {WU_E_NOT_APPLICABLE}" in text


def test_the_boot_time_format_is_the_one_the_parser_reads() -> None:
    text = script("scan.ps1")
    written = re.search(r"LastBootUpTime\.ToUniversalTime\(\)\.ToString\('([^']+)', ([^)]+)\)", text)
    assert written is not None and written.group(2) == "[System.Globalization.CultureInfo]::InvariantCulture"
    # .NET custom format to strftime: T and Z are literals, the rest the usual fields.
    python_format = written.group(1).replace("yyyy", "%Y").replace("MM", "%m").replace("dd", "%d")
    python_format = python_format.replace("HH", "%H").replace("mm", "%M").replace("ss", "%S")
    assert python_format == "%Y-%m-%dT%H:%M:%SZ"
    assert "last_boot_time    = $lastBootTime" in text
    printed = scan_json(computer_name="X", os_caption="Windows", build="10.0.20348.1", installation_type="Server")
    as_script = printed.replace('"last_boot_time":null', '"last_boot_time":"2024-02-14T03:12:45Z"')
    assert parse_scan_output("i-0123456789abcdef0", as_script, datetime.now(UTC)).boot_time is not None


# --- HRESULTs -------------------------------------------------------------------------------------


@BOTH
def test_hresults_come_from_the_innermost_exception_not_powershells_wrapper(name: str) -> None:
    # MethodInvocationException's own HResult is 0x80131501 for every failed COM call.
    text = script(name)
    assert not re.search(r"\$_\.Exception\.HResult", text)
    assert "$_.Exception.GetBaseException()" in text
    for block in catch_blocks(text):
        if "HResult" in block or "HRESULT" in block:
            assert "GetBaseException()" in block, block


# --- Searches -------------------------------------------------------------------------------------


@BOTH
def test_every_search_goes_through_the_checked_search_and_offers_no_hidden_update(name: str) -> None:
    text = script(name)
    assert text.count(".Search(") == 1  # only inside Invoke-UpdateSearch
    search = text[text.index("function Invoke-UpdateSearch") :]
    search = search[: search.index("\n}\n")]
    assert "$searchResult.ResultCode -ne 2" in search  # 2 = orcSucceeded; 3 and 4 fail the search
    assert "$searchResult.Warnings" in search and "COMException" in search  # the reason's HResult travels on
    assert f'Invoke-UpdateSearch $searcher "{OFFERED_CRITERIA}"' in text
    assert "IsInstalled=0 and Type='Software'" not in text


@BOTH
def test_both_scripts_say_the_default_server_selection_is_windows_update_policy_not_microsoft_update(
    name: str,
) -> None:
    text = script(name)
    assert "ssDefault" in text and "whatever Windows Update policy points at" in text
    assert "WSUS" in text and "NOT Microsoft Update" in text
    assert "ServerSelection =" not in text


# --- install.ps1 ----------------------------------------------------------------------------------


def test_a_bad_kb_is_refused_inside_a_try_that_exits_1_not_at_binding() -> None:
    # A binding error of "& { ... } -KbId $value" happens before the script runs: nothing in it
    # could catch it, and Windows PowerShell 5.1 could end with exit code 0.
    root = tree(script("install.ps1"))
    script_params = next(nodes(root, "param_block"))  # the first one: the script's own
    declared = [text_of(parameter) for parameter in nodes(script_params, "script_parameter")]
    assert declared == ["[string]$KbId"]  # no ValidatePattern, no Mandatory: binding cannot fail
    text = script("install.ps1")
    assert "[ValidatePattern('^KB\\d{6,7}$')][string]$KbId" in text  # kept, inside Assert-KbId
    assert "-cnotmatch '^KB[0-9]{6,7}$'" in text  # \d would also take full-width digits
    guard = next(node for node in nodes(root, "try_statement") if "Assert-KbId -KbId $KbId" in text_of(node))
    assert re.search(r"catch \{.*\[Console\]::Error\.WriteLine\(.*exit 1\s*\}", text_of(guard), re.DOTALL)
    assert text.index("Assert-KbId -KbId $KbId") < text.index("New-Object -ComObject Microsoft.Update.Session")


def test_install_takes_every_update_that_carries_the_kb() -> None:
    text = script("install.ps1")
    assert "$selected.Count -eq 0" not in text  # the old loop stopped at the first update
    assert "foreach ($update in $candidates)" in text and "[void]$selected.Add($update)" in text
    assert "$update.AcceptEula()" in text


def test_a_kb_found_installed_is_reported_as_already_installed_with_success() -> None:
    text = script("install.ps1")
    assert f'(Invoke-UpdateSearch $searcher "{INSTALLED_CRITERIA}")' in text
    already = next(
        report for report in commands(text, "Write-InstallReport") if "already-installed" in report["-Status"]
    )
    assert already["-ResultCode"] == "2" and already["-HResult"] == "0"
    assert already["-RebootRequired"] == "$rebootRequired"
    branch = text[text.index("if ($installedUpdates.Count -gt 0)") :]
    branch = branch[: branch.index("\n        }\n")]
    assert "Microsoft.Update.SystemInfo).RebootRequired" in branch and "$update.RebootRequired" in branch
    assert branch.rstrip().endswith("exit 0")


def test_a_kb_not_offered_is_told_apart_hidden_not_approved_or_not_applicable() -> None:
    text = script("install.ps1")
    assert f'(Invoke-UpdateSearch $searcher "{HIDDEN_CRITERIA}")' in text
    assert "'HKLM:\\SOFTWARE\\Policies\\Microsoft\\Windows\\WindowsUpdate\\AU' -Name 'UseWUServer'" in text
    assert "$policy.UseWUServer -eq 1" in text
    by_status = {report["-Status"].strip("'"): report for report in commands(text, "Write-InstallReport")}
    assert by_status["not-applicable"]["-HResult"] == "$WU_E_NOT_APPLICABLE"
    assert "not approved on the WSUS server" in by_status["not-approved"]["-Message"]
    # Someone must act on these two: not WU_E_NOT_APPLICABLE, which reads as "does not apply".
    assert by_status["hidden"]["-HResult"] == "0" and by_status["not-approved"]["-HResult"] == "0"
    order = [text.index(marker) for marker in ("$installedUpdates.Count", "$hiddenUpdates.Count", "Test-UsesWsus)")]
    assert order == sorted(order)


def test_install_waits_a_bounded_time_for_a_busy_installer_then_installs_quietly() -> None:
    text = script("install.ps1")
    assert "while ($installer.IsBusy)" in text and "$InstallerBusyLimitSeconds = " in text
    busy = text[text.index("while ($installer.IsBusy)") :]
    busy = busy[: busy.index("\n    }\n")]
    assert "if ((Get-Date) -gt $deadline)" in busy and "$WU_E_OPERATIONINPROGRESS" in busy and "exit 1" in busy
    assert "Start-Sleep" in busy
    assert text.index("$installer.ForceQuiet = $true") < text.index("$installer.Install()")
    assert text.index("while ($installer.IsBusy)") < text.index("$downloader.Download()")


def test_install_reports_this_updates_own_result_not_only_the_overall_one() -> None:
    text = script("install.ps1")
    assert "$OperationResult.GetUpdateResult($index)" in text and "$OperationResult.GetUpdateResult(0)" in text
    assert "Get-UpdateOutcome $installation $selected.Count" in text
    assert "Get-UpdateOutcome $download $selected.Count" in text
    for overall in ("$installation.ResultCode", "$installation.HResult", "$download.ResultCode", "$download.HResult"):
        assert overall not in text, overall


# --- scan.ps1 -------------------------------------------------------------------------------------


def test_scan_merges_installed_kbs_from_get_hotfix_and_windows_update() -> None:
    text = script("scan.ps1")
    assert "Get-HotFix" in text and f'(Invoke-UpdateSearch $searcher "{INSTALLED_CRITERIA}")' in text
    assert "SortedSet[string]" in text  # one entry per KB, whichever source named it
    assert text.count("[void]$installed.Add(") == 2
    assert "installed_kbs     = [object[]]@($installed)" in text
    assert "\\d" not in text  # ASCII digits only


def test_scan_still_reports_build_and_hotfixes_when_windows_update_fails() -> None:
    text = script("scan.ps1")
    root = tree(text)
    windows_update = next(
        node
        for node in nodes(root, "try_statement")
        if "Microsoft.Update.Session" in text_of(node) and "Get-CimInstance" not in text_of(node)
    )
    part = text_of(windows_update)
    assert "Microsoft.Update.SystemInfo" in part and OFFERED_CRITERIA in part and INSTALLED_CRITERIA in part
    handler = catch_blocks(part)[0]
    assert "$offered.Clear()" in handler and "$updateError = " in handler and "exit" not in handler
    assert "error             = $updateError" in text
    after = text[text.index(part) + len(part) :]
    assert after.index("$report = [ordered]@{") < after.index("exit 0") < after.index("exit 1")


def test_scan_counts_windows_updates_own_reboot_flag() -> None:
    text = script("scan.ps1")
    assert "New-Object -ComObject Microsoft.Update.SystemInfo" in text
    assert "if ($systemInfo.RebootRequired) { $pendingReboot = $true }" in text


# --- ASCII output ---------------------------------------------------------------------------------


@BOTH
def test_the_json_is_escaped_to_ascii_before_it_is_printed(name: str) -> None:
    text = script(name)
    function = text[text.index("function ConvertTo-AsciiJson") :]
    function = function[: function.index("\n}\n")]
    assert "[int]$character -gt 0x7E" in function and "AppendFormat('\\u{0:x4}', [int]$character)" in function
    printing = [line.strip() for line in text.splitlines() if "ConvertTo-Json" in line]
    assert printing == ["ConvertTo-AsciiJson ($report | ConvertTo-Json -Compress -Depth 4)"]


def test_escaping_each_utf16_unit_above_tilde_gives_ascii_json_that_reads_back() -> None:
    # ConvertTo-AsciiJson transliterated: PowerShell strings are UTF-16, so a character outside the
    # BMP is two units and becomes a surrogate-pair escape, which JSON readers join again.
    def convert_to_ascii_json(text: str) -> str:
        units = text.encode("utf-16-le")
        out = []
        for index in range(0, len(units), 2):
            unit = int.from_bytes(units[index : index + 2], "little")
            out.append(f"\\u{unit:04x}" if unit > 0x7E else chr(unit))
        return "".join(out)

    document = {"computer_name": "SRV-M\u00dcNCHEN-\u03a9", "title": "Mise \u00e0 jour \U0001f4e6\x7f", "n": 1}
    escaped = convert_to_ascii_json(json.dumps(document, ensure_ascii=False))
    assert escaped.isascii() and "\\ud83d\\udce6" in escaped and "\\u007f" in escaped
    assert json.loads(escaped) == document

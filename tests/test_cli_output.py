"""``--format table|csv`` rendering: tables fit the width without splitting a word; CSV stays flat."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import pytest
from rich.cells import cell_len
from rich.console import Console

from autopatch.cli.output import OutputFormat, render, table_cell
from autopatch.cli.table import layout, wrap

PRODUCT = "Windows Server 2022, 23H2 Edition (Server Core installation)"
EXPOSURE = [
    {
        "instance_id": "i-0a1b2c3d4e5f67890",
        "name": "web-01",
        "product": PRODUCT,
        "build": "10.0.26100.32995",
        "open_critical": 3,
        "closing_kbs": ["KB5073379", "KB5034129", "KB5034770", "KB5035857"],
    },
    {
        "instance_id": "i-0fedcba9876543210",
        "name": "db-02",
        "product": "Windows Server 2016",
        "build": "10.0.14393.6614",
        "open_critical": 12,
        "closing_kbs": [{"kb": "KB5034767", "subtype": "Security Update"}],
    },
]
SHORT_HEADERS = {"instance_id": "id", "open_critical": "crit", "closing_kbs": "KBs"}


def table_text(capsys: pytest.CaptureFixture[str], rows: Any, width: int, **options: Any) -> str:
    render(rows, OutputFormat.table, console=Console(width=width), **options)
    return capsys.readouterr().out


def assert_fits_with_whole_words(out: str, rows: list[dict[str, Any]], width: int) -> None:
    assert all(cell_len(line) <= width for line in out.splitlines()), out
    printed = set(out.split())
    words = {word for row in rows for value in row.values() for word in table_cell(value).split()}
    assert words <= printed, sorted(words - printed)


def test_table_fits_80_columns_and_never_breaks_an_id_kb_or_build(capsys: pytest.CaptureFixture[str]) -> None:
    out = table_text(capsys, EXPOSURE, 80, headers=SHORT_HEADERS, title="Exposure")
    assert_fits_with_whole_words(out, EXPOSURE, 80)
    lines = out.splitlines()
    assert lines[0] == "Exposure"
    assert lines[1].split() == ["id", "name", "product", "build", "crit", "KBs"]
    assert set(lines[2]) == {"─", " "}  # a rule under the header, not a box around each cell
    assert "KB5034767" in out and "Security Update" not in out  # KB objects show their KB ids


def test_table_uses_natural_widths_when_they_fit_and_wraps_the_column_with_most_slack(
    capsys: pytest.CaptureFixture[str],
) -> None:
    wide = table_text(capsys, EXPOSURE, 200, headers=SHORT_HEADERS)
    assert len(wide.splitlines()) == 4 and PRODUCT in wide  # header, rule, one line per row
    narrow = table_text(capsys, EXPOSURE, 80, headers=SHORT_HEADERS)
    first_row = [line for line in narrow.splitlines() if "i-0a1b2c3d4e5f67890" in line]
    assert len(first_row) == 1 and "10.0.26100.32995" in first_row[0]  # ids and builds stay on one line
    assert PRODUCT not in narrow  # the product name and the KB list wrapped instead


def test_columns_that_cannot_fit_become_records_whose_lines_fit(capsys: pytest.CaptureFixture[str]) -> None:
    out = table_text(capsys, EXPOSURE, 40, title="Exposure")
    assert_fits_with_whole_words(out, EXPOSURE, 40)
    assert "─" not in out
    assert "instance_id:   i-0a1b2c3d4e5f67890" in out.splitlines()
    assert "open_critical: 12" in out.splitlines()
    assert out.splitlines().count("") == 1  # one blank line between the two blocks


def test_a_record_value_too_wide_beside_its_header_goes_under_it() -> None:
    lines = layout(["instance_id", "name"], [["i-0a1b2c3d4e5f67890", ""]], 24)
    assert lines == ["instance_id:", "  i-0a1b2c3d4e5f67890", "name:"]


def test_a_word_longer_than_the_width_overflows_its_line_but_is_never_split(
    capsys: pytest.CaptureFixture[str],
) -> None:
    word = "KB5034129;KB5034770;KB5035857;KB5036909"
    out = table_text(capsys, [{"offered": word, "name": "web-01"}], 30)
    assert word in out.split()
    assert all(cell_len(line) <= 30 for line in out.splitlines() if word not in line)


def test_cells_show_none_empty_lists_joined_and_markup_literally(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"kb": "KB5034129", "state": "[bold]Failed[/bold]", "reason": None, "cwe": ["CWE-305", "CWE-20"]},
        {"kb": "KB5034770", "state": "Installed", "reason": "exit code 0", "cwe": []},
    ]
    out = table_text(capsys, rows, 80, columns=("kb", "state", "reason", "cwe"), headers={"cwe": "CWEs"})
    lines = out.splitlines()
    assert lines[0].split() == ["kb", "state", "reason", "CWEs"]
    assert "[bold]Failed[/bold]" in lines[2] and "None" not in out
    assert lines[2].endswith("CWE-305; CWE-20") and lines[3].endswith("exit code 0")


def test_nested_values_other_than_kb_lists_show_as_one_line_json() -> None:
    assert table_cell({"open": 3, "fixed": 1}) == '{"open": 3, "fixed": 1}'
    assert table_cell([{"cve": "CVE-2024-20674"}]) == '[{"cve": "CVE-2024-20674"}]'
    assert table_cell([{"kb": "KB5034129"}, {"kb": "KB5034770"}]) == "KB5034129; KB5034770"


def test_numbers_are_right_aligned_and_multi_line_cells_stay_in_their_column(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = [{"server": "web-01", "cves": 7, "note": "first line\r\nsecond line"}, {"server": "db-02", "cves": 1234}]
    lines = table_text(capsys, rows, 80).splitlines()
    assert lines == [
        "server  cves  note",
        "──────  ────  ───────────",
        "web-01     7  first line",
        "              second line",
        "db-02   1234",
    ]


def test_a_console_without_unicode_gets_an_ascii_rule() -> None:
    file = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")
    render([{"kb": "KB5034129", "state": "Installed"}], OutputFormat.table, console=Console(file=file, width=80))
    file.seek(0)
    assert file.read().splitlines()[1] == "---------  ---------"


def test_an_empty_listing_prints_its_title_and_header(capsys: pytest.CaptureFixture[str]) -> None:
    out = table_text(capsys, [], 80, columns=("run_id", "status"), title="Runs")
    assert out.splitlines()[:2] == ["Runs", "run_id  status"]


def test_the_default_console_honours_the_columns_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    render(EXPOSURE, OutputFormat.table, headers=SHORT_HEADERS)
    out = capsys.readouterr().out
    assert max(cell_len(line) for line in out.splitlines()) <= 60
    assert_fits_with_whole_words(out, EXPOSURE, 60)


def test_wrap_breaks_only_at_spaces() -> None:
    assert wrap(PRODUCT, 20) == ["Windows Server 2022,", "23H2 Edition (Server", "Core installation)"]
    assert wrap("KB5034129; KB5034770", 10) == ["KB5034129;", "KB5034770"]


def test_layout_of_thousands_of_rows_takes_a_fraction_of_a_second() -> None:
    rows = [
        [str(10000 + index), f"{PRODUCT} #{index}", "Windows", str(index % 3000), str(index % 400)]
        for index in range(7277)
    ]
    start = time.perf_counter()
    lines = layout(["product_id", "product", "product_family", "cves", "kbs"], rows, 80)
    # rich's Table took about 3 s for this listing; the bound is loose to stay stable on a busy machine.
    assert time.perf_counter() - start < 1.5 and len(lines) > 7277


def test_csv_has_a_header_row_and_joins_lists_with_semicolons(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"kb": "KB5034129", "cwe": ["CWE-305", "CWE-20"], "reason": None, "fixes": [{"kb": "KB5034770"}]},
        {"kb": "KB5034770", "cwe": [], "reason": "exit code 0", "fixes": []},
    ]
    render(rows, OutputFormat.csv, headers={"cwe": "CWEs"})
    assert list(csv.reader(io.StringIO(capsys.readouterr().out))) == [
        ["kb", "CWEs", "reason", "fixes"],
        ["KB5034129", "CWE-305;CWE-20", "", "KB5034770"],
        ["KB5034770", "", "exit code 0", ""],
    ]


@pytest.mark.parametrize("nested", [{"open": 3}, [{"cve": "CVE-2024-20674"}], [["KB5034129"]]])
def test_csv_refuses_a_nested_cell_and_writes_nothing(capsys: pytest.CaptureFixture[str], nested: Any) -> None:
    rows = [{"name": "web-01", "summary": "ok"}, {"name": "db-02", "summary": nested}]
    with pytest.raises(ValueError, match=r"'summary'.*flatten rows before writing CSV"):
        render(rows, OutputFormat.csv)
    assert capsys.readouterr().out == ""

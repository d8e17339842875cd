"""Hostile files: gzip bombs, tree bombs, absurd revisions, deep nesting, XML entities, empty folders.

Each is an input error (exit code 2, one error line on stderr) or harmless, never a traceback,
never a leaked file, always in bounded memory. The bombs run the real command in a child process
so that its peak memory can be measured (``os.wait4`` reports the child's own ``ru_maxrss``); the
child also runs under an address-space limit, so a regression fails the test instead of the
machine.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest

from autopatch.catalog import sources
from autopatch.catalog.cvrf_xml import parse_cvrf_xml
from autopatch.catalog.ingest import import_paths
from autopatch.catalog.sources import parse_payload
from autopatch.cli.app import main
from autopatch.domain.catalog import DocumentInfo
from autopatch.errors import DocumentFormatError
from autopatch.store.sqlite import SqliteStore

MIB = 1 << 20
CHILD_MEMORY_BUDGET_MB = 300
CHILD_ADDRESS_SPACE = 3 << 30  # a safety net: the old code needed 2 to 13 GB for these files
CHILD_DEADLINE = 120.0

CVRF_NAMESPACES = (
    'xmlns:cvrf="http://www.icasi.org/CVRF/schema/cvrf/1.1" '
    'xmlns:prod="http://www.icasi.org/CVRF/schema/prod/1.1" '
    'xmlns:vuln="http://www.icasi.org/CVRF/schema/vuln/1.1"'
)


def cvrf_xml(revision: str = "369", title: str = "January 2024 Security Updates", dtd: str = "") -> bytes:
    """A minimal CVRF document: one product, one CVE, one Vendor Fix KB (the shape of 2024-Jan)."""
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{dtd}<cvrf:cvrfdoc {CVRF_NAMESPACES}>'
        f"<cvrf:DocumentTitle>{title}</cvrf:DocumentTitle>"
        "<cvrf:DocumentTracking><cvrf:Identification><cvrf:ID>2024-Jan</cvrf:ID></cvrf:Identification>"
        f"<cvrf:RevisionHistory><cvrf:Revision><cvrf:Number>{revision}</cvrf:Number>"
        "<cvrf:Date>2024-01-09T08:00:00</cvrf:Date></cvrf:Revision></cvrf:RevisionHistory>"
        "<cvrf:InitialReleaseDate>2024-01-09T08:00:00Z</cvrf:InitialReleaseDate>"
        "<cvrf:CurrentReleaseDate>2024-01-09T08:00:00Z</cvrf:CurrentReleaseDate></cvrf:DocumentTracking>"
        '<prod:ProductTree><prod:Branch Type="Vendor" Name="Microsoft">'
        '<prod:Branch Type="Product Family" Name="Windows">'
        '<prod:FullProductName ProductID="11923">Windows Server 2022</prod:FullProductName></prod:Branch></prod:Branch>'
        '<prod:FullProductName ProductID="11923">Windows Server 2022</prod:FullProductName></prod:ProductTree>'
        f"<vuln:Vulnerability><vuln:Title>Windows Kerberos {title}</vuln:Title><vuln:CVE>CVE-2024-20674</vuln:CVE>"
        '<vuln:ProductStatuses><vuln:Status Type="Known Affected"><vuln:ProductID>11923</vuln:ProductID>'
        "</vuln:Status></vuln:ProductStatuses>"
        '<vuln:Threats><vuln:Threat Type="Severity"><vuln:Description>Critical</vuln:Description>'
        "<vuln:ProductID>11923</vuln:ProductID></vuln:Threat></vuln:Threats>"
        '<vuln:Remediations><vuln:Remediation Type="Vendor Fix"><vuln:Description>5034129</vuln:Description>'
        f"<vuln:URL>https://catalog.update.microsoft.com/?q={title}</vuln:URL>"
        "<vuln:ProductID>11923</vuln:ProductID><vuln:FixedBuild>10.0.20348.2227</vuln:FixedBuild>"
        "</vuln:Remediation></vuln:Remediations></vuln:Vulnerability></cvrf:cvrfdoc>"
    ).encode()


def cvrf_json(revision: str = '"6"', nested: str = "[]") -> bytes:
    """A minimal CVRF JSON document; ``revision`` and ``nested`` are pasted in as raw JSON."""
    return (
        '{"DocumentTitle": {"Value": "July 2021"}, "DocumentTracking": {"Identification": {"ID": {"Value":'
        f' "2021-Jul"}}}}, "RevisionHistory": [{{"Number": {revision}}}]}}, "Vulnerability": {nested}}}'
    ).encode()


def write_gzip_bomb(path: Path, head: bytes, unit: bytes, inflated: int) -> None:
    """A gzip file that inflates to ``inflated`` bytes: one member compressed once, written over and over.

    Concatenated members are one valid gzip stream (RFC 1952), so a 1 GiB bomb costs a few
    milliseconds and about a megabyte of disk, and is never held in memory.
    """
    block = unit * (MIB // len(unit))
    member = gzip.compress(block, compresslevel=9, mtime=0)
    with path.open("wb") as bomb:
        bomb.write(gzip.compress(head, mtime=0))
        for _ in range(inflated // len(block)):
            bomb.write(member)


@dataclass
class ChildRun:
    code: int
    stdout: str
    stderr: str
    peak_mb: float


# Linux starts a forked child's peak RSS at its parent's RSS at the fork, and a pytest worker can
# be hundreds of megabytes: a small launcher starts the command and reports its wait4 figure.
_LAUNCHER = """
import os, resource, subprocess, sys
limit, peak_file, *command = sys.argv[1:]
resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))
child = subprocess.Popen(command)
_, status, usage = os.wait4(child.pid, 0)
child.returncode = os.waitstatus_to_exitcode(status)
with open(peak_file, "w") as peak:
    peak.write(str(usage.ru_maxrss))
sys.exit(child.returncode)
"""


def run_child(tmp_path: Path, db: Path, *args: str) -> ChildRun:
    """``autopatch --db DB ARGS`` in a child process, with its peak RSS in MB."""
    peak_file = tmp_path / "child.peak"
    command = [sys.executable, "-m", "autopatch.cli.app", "--db", str(db), *args]
    launcher = [sys.executable, "-c", _LAUNCHER, str(CHILD_ADDRESS_SPACE), str(peak_file), *command]
    process = subprocess.Popen(
        launcher, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=CHILD_DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher and the command: a session of their own
        stdout, stderr = process.communicate()
    peak_mb = int(peak_file.read_text()) / 1024 if peak_file.exists() else float("inf")
    return ChildRun(process.returncode, stdout, stderr, peak_mb)


def run_cli(capsys: pytest.CaptureFixture[str], db: Path, *args: str) -> tuple[int, str]:
    code = main(["--db", str(db), *args])
    return code, capsys.readouterr().err


def one_line(stderr: str) -> str:
    """The one error line; the import's progress bar (cli/progress.py) also leaves its last frame on stderr."""
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("Importing")]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
    return lines[0]


def database_digest(db: Path) -> str:
    """Every row of every table: equal digests mean the catalog did not change."""
    connection = sqlite3.connect(db)
    try:
        tables = [
            row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
        ]
        rows = [(table, sorted(map(repr, connection.execute(f'SELECT * FROM "{table}"')))) for table in tables]
    finally:
        connection.close()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


@pytest.fixture
def populated_db(tmp_path: Path) -> Path:
    """A catalog holding one small document, so that "unchanged" means something."""
    db = tmp_path / "catalog.db"
    source = tmp_path / "seed" / "2024-Jan.xml"
    source.parent.mkdir()
    source.write_bytes(cvrf_xml())
    store = SqliteStore(db)
    assert import_paths(store, [source]).count("imported") == 1
    store.close()
    return db


# --- Bombs: refused after a bounded amount of work, in bounded memory -----------------------------


def test_a_gzip_bomb_is_refused_at_the_inflated_size_cap_in_bounded_memory(tmp_path: Path, populated_db: Path) -> None:
    # 1 GiB of XML comments after a CVRF root: well-formed, free for lxml, only the cap stops it.
    bomb = tmp_path / "2024-Feb.xml.gz"
    write_gzip_bomb(bomb, f"<cvrf:cvrfdoc {CVRF_NAMESPACES}>".encode(), b"<!-- lol -->", 1 << 30)
    assert bomb.stat().st_size < 4 * MIB
    before = database_digest(populated_db)
    child = run_child(tmp_path, populated_db, "catalog", "import", str(bomb))
    assert child.code == 2, child.stderr[-2000:]
    line = one_line(child.stderr)
    assert "2024-Feb.xml.gz" in line and "256 MiB" in line
    assert child.peak_mb < CHILD_MEMORY_BUDGET_MB
    assert database_digest(populated_db) == before


def test_a_gzip_bomb_inside_a_folder_import_is_refused_the_same_way(tmp_path: Path, populated_db: Path) -> None:
    folder = tmp_path / "msrc"
    folder.mkdir()
    write_gzip_bomb(folder / "2024-Feb.xml.gz", f"<cvrf:cvrfdoc {CVRF_NAMESPACES}>".encode(), b"<!---->", 1 << 30)
    (folder / "2024-Jan.xml").write_bytes(cvrf_xml())  # already imported: skipped by its hash
    before = database_digest(populated_db)
    child = run_child(tmp_path, populated_db, "catalog", "import", str(folder))
    assert child.code == 2, child.stderr[-2000:]
    line = one_line(child.stderr)
    assert "2024-Feb.xml.gz" in line and "256 MiB" in line
    assert child.peak_mb < CHILD_MEMORY_BUDGET_MB
    assert database_digest(populated_db) == before


def test_a_tree_bomb_of_tiny_elements_is_refused_before_it_fills_memory(tmp_path: Path, populated_db: Path) -> None:
    # 256 MiB of "<x/>" would be about 8 GB of lxml nodes: stopped at the per-record memory cap.
    bomb = tmp_path / "tree.xml.gz"
    write_gzip_bomb(bomb, f"<cvrf:cvrfdoc {CVRF_NAMESPACES}><cvrf:DocumentNotes>".encode(), b"<x/>", 256 * MIB)
    before = database_digest(populated_db)
    child = run_child(tmp_path, populated_db, "catalog", "import", str(bomb))
    assert child.code == 2, child.stderr[-2000:]
    line = one_line(child.stderr)
    assert "tree.xml.gz" in line and "MiB" in line
    assert child.peak_mb < CHILD_MEMORY_BUDGET_MB
    assert database_digest(populated_db) == before


def test_a_gzip_of_zeros_is_refused_from_its_first_inflated_bytes(tmp_path: Path) -> None:
    bomb = tmp_path / "zeros.gz"
    write_gzip_bomb(bomb, b"\0", b"\0", 1 << 30)
    tracemalloc.start()
    try:
        with pytest.raises(DocumentFormatError, match=r"zeros\.gz: not MSRC data"):
            sources.parse_file(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB


# --- Values no document can hold ------------------------------------------------------------------


def test_a_ten_thousand_digit_revision_is_an_input_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, populated_db: Path
) -> None:
    document = tmp_path / "2024-Jan-huge.xml"
    document.write_bytes(cvrf_xml(revision="9" * 10_000))
    before = database_digest(populated_db)
    code, err = run_cli(capsys, populated_db, "catalog", "import", str(document))
    assert code == 2
    line = one_line(err)
    assert "2024-Jan-huge.xml" in line and "revision" in line and len(line) < 300
    assert database_digest(populated_db) == before


@pytest.mark.parametrize(
    "revision",
    ['"' + "7" * 10_000 + '"', "7" * 10_000, '"1.' + "0" * 30 + '"', '"' + "1." * 40 + '"'],
    ids=["string", "bare-number", "21-digit-part", "80-characters"],
)
def test_an_absurd_json_revision_is_an_input_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, revision: str
) -> None:
    document = tmp_path / "2021-Jul.json"
    document.write_bytes(cvrf_json(revision=revision))
    code, err = run_cli(capsys, tmp_path / "c.db", "catalog", "import", str(document))
    assert code == 2
    assert "2021-Jul.json" in one_line(err)


def test_ordinary_revisions_compare_as_before_and_absurd_ones_are_refused() -> None:
    key = DocumentInfo.revision_sort_key
    assert key("369") < key("370") and key("3.1") > key("3.0") > key("2.9") and key("20240109") == (20240109,)
    assert key("") == key("none") == (0,)
    assert key("1" * 20) == (int("1" * 20),)
    for absurd in ("1" * 21, "1." * 33, "9" * 10_000):
        with pytest.raises(DocumentFormatError, match="revision"):
            key(absurd)


def test_json_nested_200000_levels_deep_is_an_input_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_bytes(cvrf_json(nested="[" * 200_000 + "]" * 200_000))
    code, err = run_cli(capsys, tmp_path / "c.db", "catalog", "import", str(deep))
    assert code == 2
    assert "deep.json" in one_line(err) and "nested" in err


def test_json_of_millions_of_tiny_values_is_refused_before_it_is_decoded() -> None:
    # 12 MB of "[]," would decode to some 270 MB of Python lists.
    payload = b'{"value": [' + b"[]," * 4_100_000 + b"[]]}"
    tracemalloc.start()
    try:
        with pytest.raises(DocumentFormatError, match=r"tiny\.json: more than 8,000,000 JSON values"):
            parse_payload(payload, "tiny.json")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * len(payload)


def test_json_nested_just_below_the_decoder_limit_is_an_input_error_too(tmp_path: Path) -> None:
    # Deep enough to decode, deep enough for the product tree walk to recurse a long way.
    depth = (sys.getrecursionlimit() - 100) // 2
    branch = '{"Type": 1, "Name": "x", "Items": [' * depth + "]}" * depth
    payload = (
        f'{{"DocumentTracking": {{"Identification": {{"ID": "2021-Jul"}}}}, "ProductTree": {{"Branch": [{branch}]}}}}'
    )
    try:
        [document] = parse_payload(payload.encode(), "deepish.json")  # harmless when it fits the stack
        assert document.products == []
    except DocumentFormatError as exc:
        assert "deepish.json" in str(exc)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"DocumentTracking": {"Identification": {"ID": "2021-Jul"}, "RevisionHistory": [1]}}',
        b'{"DocumentTracking": {"Identification": {"ID": "2021-Jul"}}, "ProductTree": [1]}',
        b'{"DocumentTracking": {"Identification": {"ID": "2021-Jul"}}, "Vulnerability": [{"CVSSScoreSets": [3]}]}',
        b'{"value": [7], "@odata.context": "affectedProduct"}',
    ],
    ids=["revision-not-an-object", "product-tree-a-list", "scores-not-objects", "sug-record-a-number"],
)
def test_json_values_of_the_wrong_type_are_format_errors(payload: bytes) -> None:
    with pytest.raises(DocumentFormatError, match=r"odd\.json"):
        parse_payload(payload, "odd.json")


@pytest.mark.parametrize("parts", [("x" * 100,) * 3, ("x" * 300,)], ids=["long-path", "name-too-long"])
def test_an_error_echoes_at_most_80_characters_of_a_value(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, parts: tuple[str, ...]
) -> None:
    missing = tmp_path.joinpath(*parts, "2024-Jan.xml")
    code, err = run_cli(capsys, tmp_path / "c.db", "catalog", "import", str(missing))
    assert code == 2
    line = one_line(err)
    assert line.startswith("error: path: ") and " is invalid: must be " in line
    assert len(line.removeprefix("error: path: ").split(" is invalid: ")[0]) <= 80


def test_a_document_error_names_a_long_file_by_both_ends(tmp_path: Path) -> None:
    odd = tmp_path.joinpath("y" * 100, "y" * 100, "2024-Jan.xml")
    odd.parent.mkdir(parents=True)
    odd.write_text("neither XML nor JSON")
    with pytest.raises(DocumentFormatError) as caught:
        sources.parse_file(odd)
    source = str(caught.value).split(": not MSRC data")[0]
    assert len(source) <= 80 and source.startswith(str(tmp_path)[:20]) and source.endswith("yyy/2024-Jan.xml")


# --- XML entities and depth -----------------------------------------------------------------------


def test_external_entities_are_never_resolved_into_stored_values(tmp_path: Path) -> None:
    """XXE is harmless: the document imports, the entity reference is dropped, nothing is read."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER")
    dtd = (
        f'<!DOCTYPE cvrf:cvrfdoc [<!ENTITY e SYSTEM "file://{secret}">'
        '<!ENTITY p SYSTEM "file:///etc/passwd"><!ENTITY net SYSTEM "http://127.0.0.1:9/x">]>'
    )
    document = tmp_path / "2024-Jan.xml"
    document.write_bytes(cvrf_xml(title="&e;&p;&net;", dtd=dtd))
    db = tmp_path / "xxe.db"
    store = SqliteStore(db)
    assert import_paths(store, [document]).count("imported") == 1
    stored = store.get_document("2024-Jan")
    store.close()
    assert stored is not None and stored.title == ""
    connection = sqlite3.connect(db)
    dump = "\n".join(connection.iterdump())
    connection.close()
    assert "CVE-2024-20674" in dump
    assert "TOP-SECRET-MARKER" not in dump and "root:" not in dump


@pytest.mark.parametrize(
    "dtd",
    [
        '<!DOCTYPE x SYSTEM "file:///dev/zero">',
        '<!DOCTYPE x [<!ENTITY % p SYSTEM "file:///dev/zero"> %p;]>',
        '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///dev/zero">]>',
    ],
    ids=["external-dtd", "parameter-entity", "unused-entity"],
)
def test_external_dtds_and_parameter_entities_are_not_loaded(dtd: str) -> None:
    # /dev/zero never ends: had libxml2 loaded it, this would not return.
    document = parse_cvrf_xml(cvrf_xml(dtd=dtd), "dtd.xml")
    assert document.info.document_id == "2024-Jan"


def test_an_external_entity_in_an_attribute_is_a_format_error() -> None:
    dtd = '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    xml = cvrf_xml(dtd=dtd).replace(b'Name="Windows"', b'Name="&e;"')
    with pytest.raises(DocumentFormatError, match=r"attr\.xml: not well-formed XML .*external entity"):
        parse_cvrf_xml(xml, "attr.xml")


@pytest.mark.parametrize("where", ["text", "attribute"])
def test_billion_laughs_is_refused_by_the_amplification_limit(where: str) -> None:
    """The billion laughs are a format error (libxml2's entity amplification limit), at once."""
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(2, 11)
    ).replace("&lol1;", "&lol;")
    xml = cvrf_xml(dtd=f"<!DOCTYPE cvrf:cvrfdoc [{entities}]>")
    xml = xml.replace(b"January 2024", b"&lol10;") if where == "text" else xml.replace(b'"Windows"', b'"&lol10;"')
    with pytest.raises(DocumentFormatError, match=r"laughs\.xml: not well-formed XML .*amplification"):
        parse_cvrf_xml(xml, "laughs.xml")


def test_deeply_nested_xml_is_refused_by_the_depth_limit(tmp_path: Path) -> None:
    deep = tmp_path / "deep.xml"
    deep.write_bytes(
        cvrf_xml().replace(b"<cvrf:DocumentTitle>", b"<x>" * 200_000 + b"</x>" * 200_000 + b"<cvrf:DocumentTitle>")
    )
    with pytest.raises(DocumentFormatError, match=r"deep\.xml: not well-formed XML .*depth"):
        parse_payload(deep.read_bytes(), "deep.xml")


# --- Folders with nothing to import ---------------------------------------------------------------


@pytest.mark.parametrize("contents", [{}, {"README.txt": "notes", "scan.csv": "a,b"}], ids=["empty", "no-msrc-files"])
def test_a_folder_without_msrc_documents_is_an_input_error_naming_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, contents: dict[str, str]
) -> None:
    folder = tmp_path / "downloads"
    folder.mkdir()
    for name, text in contents.items():
        (folder / name).write_text(text)
    monkeypatch.chdir(tmp_path)  # a short relative name, as typed, is echoed whole
    code, err = run_cli(capsys, tmp_path / "c.db", "catalog", "import", "downloads")
    assert code == 2
    assert one_line(err) == "error: path: 'downloads' is invalid: holds no MSRC documents (.xml, .json or .gz files)"


def test_a_folder_of_files_that_are_not_msrc_data_still_fails_on_the_first(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps({"hello": "world"}))
    (folder / "b.xml").write_text("<html/>")
    code, err = run_cli(capsys, tmp_path / "c.db", "catalog", "import", str(folder))
    assert code == 2
    assert "a.json" in one_line(err)

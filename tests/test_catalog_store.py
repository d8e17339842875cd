"""The SQLite store and the import step: idempotence, revisions, transactions, schema."""

from __future__ import annotations

import gzip
import re
import sqlite3
from pathlib import Path

import pytest

from autopatch.catalog.ingest import import_paths
from autopatch.domain.catalog import AffectedProduct, CatalogDocument, DocumentInfo, Vulnerability
from autopatch.errors import DocumentFormatError, StoreError
from autopatch.store.sqlite import SCHEMA_VERSION, SqliteStore

from .conftest import xml_path


def january_2024_xml() -> bytes:
    return gzip.decompress(xml_path("2024-Jan").read_bytes())


def with_revision(xml: bytes, revision: int) -> bytes:
    return re.sub(rb"<cvrf:Number>\d+</cvrf:Number>", f"<cvrf:Number>{revision}</cvrf:Number>".encode(), xml, count=1)


def test_store_uses_wal_and_records_the_schema_version(empty_store: SqliteStore) -> None:
    db = sqlite3.connect(empty_store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_reimporting_the_same_file_changes_nothing(empty_store: SqliteStore) -> None:
    assert empty_store.catalog_revision() == 0
    first = import_paths(empty_store, [xml_path("2024-Jan")])
    revision = empty_store.catalog_revision()
    assert revision > 0  # what the API's cached fleet summary watches
    assert first.count("imported") == 1 and first.entries_added == first.totals["entries"] > 1000
    again = import_paths(empty_store, [xml_path("2024-Jan")])
    assert again.count("unchanged") == 1 and again.entries_added == 0
    assert again.totals == first.totals
    assert empty_store.catalog_revision() == revision
    stored = empty_store.get_document("2024-Jan")
    assert stored is not None and stored.revision == "369" and stored.source_format == "cvrf-xml"


def test_a_newer_revision_replaces_the_month_and_an_older_one_is_ignored(
    empty_store: SqliteStore, tmp_path: Path
) -> None:
    import_paths(empty_store, [xml_path("2024-Jan")])
    xml = january_2024_xml()
    assert b"<vuln:FixedBuild>10.0.20348.2227</vuln:FixedBuild>" in xml
    newer = tmp_path / "2024-Jan-r370.xml"
    newer.write_bytes(with_revision(xml, 370).replace(b"10.0.20348.2227<", b"10.0.20348.2228<"))
    summary = import_paths(empty_store, [newer])
    assert summary.count("replaced") == 1
    assert summary.entries_updated > 0 and summary.entries_added == 0
    builds = {f.fix.fixed_build for f in empty_store.fixes_for_kbs([5034129])}
    assert builds == {"10.0.20348.2228"}
    assert empty_store.get_document("2024-Jan").revision == "370"  # type: ignore[union-attr]
    older = tmp_path / "2024-Jan-r1.xml"
    older.write_bytes(with_revision(xml, 1))
    assert import_paths(empty_store, [older]).count("older") == 1
    assert {f.fix.fixed_build for f in empty_store.fixes_for_kbs([5034129])} == {"10.0.20348.2228"}


def test_a_bad_file_in_an_import_leaves_the_database_unchanged(empty_store: SqliteStore, tmp_path: Path) -> None:
    import_paths(empty_store, [xml_path("2024-Jan")])
    before = empty_store.counts()
    truncated = tmp_path / "2024-Feb.xml.gz"
    truncated.write_bytes(xml_path("2024-Feb").read_bytes()[:50_000])
    with pytest.raises(DocumentFormatError, match=r"2024-Feb\.xml\.gz"):
        import_paths(empty_store, [truncated])
    assert empty_store.counts() == before


def test_a_failed_write_rolls_back_the_whole_document(empty_store: SqliteStore) -> None:
    import_paths(empty_store, [xml_path("2024-Jan")])
    before = empty_store.counts()
    info = DocumentInfo("2024-Jan", "broken", "999", None, None, "cvrf-xml")
    broken = CatalogDocument(
        info=info,
        vulnerabilities=[Vulnerability("CVE-2024-0001", "t", (), None, None, None)],
        # product 99999 is in no product tree: the foreign key fails after the old rows were deleted
        affected=[AffectedProduct("CVE-2024-0001", "99999", None, None, None, None, None)],
    )
    with pytest.raises(StoreError, match="database write failed"):
        empty_store.replace_document(broken, "sha")
    assert empty_store.counts() == before
    assert empty_store.get_document("2024-Jan").revision == "369"  # type: ignore[union-attr]


def test_folder_import_with_a_process_pool_matches_a_serial_import(tmp_path: Path) -> None:
    months = ["2023-Nov", "2023-Dec", "2024-Jan", "2024-Feb"]
    folder = tmp_path / "docs"
    folder.mkdir()
    for month in months:
        (folder / f"{month}.xml.gz").write_bytes(xml_path(month).read_bytes())
    pooled = import_paths(SqliteStore(tmp_path / "a.db"), [folder], workers=2)
    serial = import_paths(SqliteStore(tmp_path / "b.db"), [folder], workers=1)
    assert pooled.totals == serial.totals and pooled.totals["documents"] == 4
    assert [o.document_id for o in pooled.outcomes] == sorted(months)  # file-name order


def test_a_damaged_file_in_a_pooled_folder_import_fails_naming_it(tmp_path: Path) -> None:
    # Workers get paths and stream-parse them; an error there reaches the parent, it does not hang.
    folder = tmp_path / "docs"
    folder.mkdir()
    for month in ["2016-Jan", "2017-Feb", "2017-Jan", "2017-May-B"]:
        (folder / f"{month}.xml.gz").write_bytes(xml_path(month).read_bytes())
    (folder / "2017-Apr.xml.gz").write_bytes(xml_path("2016-Aug").read_bytes()[:5_000])
    store = SqliteStore(tmp_path / "pooled.db")
    with pytest.raises(DocumentFormatError, match=r"2017-Apr\.xml\.gz: truncated or damaged gzip"):
        import_paths(store, [folder], workers=2)
    assert store.counts()["documents"] == 1  # 2016-Jan, before it in file-name order

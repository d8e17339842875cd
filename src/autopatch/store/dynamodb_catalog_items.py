"""The catalog's DynamoDB items, built from one parsed document (pure: no I/O).

Catalog table, one *generation* of one document at a time (see ``dynamodb_catalog_import``)::

    OS#<product id> / CVE#<cve>#<document>#<generation>   one (CVE, product) entry of a month: the
        scores, the vulnerability's facts and the entry's Vendor Fix KBs, in one JSON attribute
        (the original's key, with the month and generation after the CVE: one CVE may appear in
        several months)
        by_month index: MONTH#<document> / OS#<product id>#CVE#<cve>
    KB#<kb>         / DOC#<document>#<generation>#<part>   what a month says about one KB: its fix
        rows (packed), the KBs it supersedes and those that supersede it
    PRODUCTS        / <product id>                         name and family (the latest known)

State table, beside the document headers (the control data of the catalog)::

    DIGEST          / <document>#<generation>#<part>       the month in brief (packed): its CVEs,
        its (product, CVE) pairs and fix rows — what the product summary and the counts add up,
        what an import compares against, and the manifest of every key of the generation, so
        that deleting a generation needs no index. A few hundred of them in all (one per month,
        tens of KB each): reading them all is one Query of a small partition.

A fix row is ``[cve, product id, kb, subtype, fixed build, "superseded,kbs", restart, download]``,
the download URL compacted as SQLite keeps it (null: the usual catalog search link; "": none).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from autopatch.domain.catalog import CatalogDocument, FixRecord, ImportCounts, KbFix, kb_article_url
from autopatch.errors import StoreError
from autopatch.store.dynamodb_codec import ITEM_LIMIT_BYTES, pack, split_blob
from autopatch.store.dynamodb_io import Key, pk_sk

PRODUCTS = "PRODUCTS"
DIGEST = "DIGEST"
BY_MONTH = "by_month"
FixRow = list[Any]


def catalog_search_url(kb: int) -> str:
    return f"https://catalog.update.microsoft.com/v7/site/Search.aspx?q=KB{kb}"


def compact_download_url(kb: int, url: str | None) -> str | None:
    """None for the usual catalog link, '' for "Microsoft gave none", the URL otherwise."""
    if url is None:
        return ""
    return None if url == catalog_search_url(kb) else url


def fix_row(fix: KbFix) -> FixRow:
    supersedes = ",".join(map(str, fix.supersedes))
    download = compact_download_url(fix.kb, fix.download_url)
    return [fix.cve, fix.product_id, fix.kb, fix.subtype, fix.fixed_build, supersedes, fix.restart_required, download]


def fix_record(document_id: str, row: FixRow) -> FixRecord:
    cve, product_id, kb, subtype, build, supersedes, restart, download = row
    return FixRecord(
        document_id,
        KbFix(
            cve=cve,
            product_id=product_id,
            kb=int(kb),
            subtype=subtype,
            fixed_build=build,
            supersedes=tuple(int(number) for number in supersedes.split(",") if number),
            restart_required=restart,
            kb_url=kb_article_url(int(kb)),
            download_url=catalog_search_url(int(kb)) if download is None else download or None,
        ),
    )


def entry_key(product_id: str, cve: str, document_id: str, generation: str) -> Key:
    return pk_sk(f"OS#{product_id}", f"CVE#{cve}#{document_id}#{generation}")


def kb_key(kb: int, document_id: str, generation: str, part: int) -> Key:
    return pk_sk(f"KB#{kb}", f"DOC#{document_id}#{generation}#{part:03d}")


def digest_key(document_id: str, generation: str, part: int) -> Key:
    return pk_sk(DIGEST, f"{document_id}#{generation}#{part:03d}")


@dataclass(slots=True)
class DocumentItems:
    """Everything one generation of a document writes, and the digest that lists it."""

    digest: dict[str, Any]
    digest_items: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    kb_items: list[dict[str, Any]] = field(default_factory=list)


def build_items(document: CatalogDocument, generation: str, started: float) -> DocumentItems:
    """The items of ``document`` stored as ``generation`` (an id no other import uses)."""
    document_id = document.info.document_id
    rows = [fix_row(fix) for fix in document.fixes]
    affected: dict[str, list[str]] = defaultdict(list)
    for pair in document.affected:
        affected[pair.product_id].append(pair.cve)
    by_kb: dict[int, list[FixRow]] = defaultdict(list)
    for row in rows:
        by_kb[row[2]].append(row)
    # One edge per (KB, older KB): an LCU repeats the same edge for every CVE and product.
    edges = {(fix.kb, old) for fix in document.fixes for old in fix.supersedes}
    supersedes: dict[int, set[int]] = defaultdict(set)
    superseded_by: dict[int, set[int]] = defaultdict(set)
    for new, old in edges:
        supersedes[new].add(old)
        superseded_by[old].add(new)
    result = DocumentItems(digest={})
    parts: dict[str, int] = {}
    for kb in sorted(set(by_kb) | set(superseded_by)):
        blobs = split_blob(pack(by_kb[kb])) if kb in by_kb else [b""]
        parts[str(kb)] = len(blobs)
        for part, blob in enumerate(blobs):
            item: dict[str, Any] = kb_key(kb, document_id, generation, part)
            item |= {"doc": document_id, "gen": generation, "part": part, "parts": len(blobs), "fixes": blob or None}
            if part == 0:
                item |= {"sup": supersedes.get(kb, set()), "supby": superseded_by.get(kb, set())}
            result.kb_items.append(item)
    result.entries = _entries(document, generation, rows)
    result.digest = {
        "cves": sorted({v.cve for v in document.vulnerabilities}),
        "affected": affected,
        "fixes": rows,
        "kbs": parts,
    }
    blobs = split_blob(pack(result.digest))
    for part, blob in enumerate(blobs):
        digest_item: dict[str, Any] = digest_key(document_id, generation, part)
        digest_item |= {"doc": document_id, "gen": generation, "part": part, "parts": len(blobs), "started": started}
        result.digest_items.append(digest_item | {"data": blob})
    return result


def _entries(document: CatalogDocument, generation: str, rows: list[FixRow]) -> list[dict[str, Any]]:
    """One item per (product, CVE) of the month; everything but the keys in one JSON attribute.

    ``data`` is ``[affected, vulnerability, fixes]``: ``[severity, impact, base, temporal, vector]``
    or null, ``[title, cwes, exploited, disclosed, released]`` or null, and the entry's fix rows
    without their CVE and product. Nothing filters on these values, and one attribute instead of
    fifteen keeps the item small: attribute names count towards an item's size and write units.
    """
    document_id = document.info.document_id
    vulnerabilities = {v.cve: v for v in document.vulnerabilities}
    affected = {(a.product_id, a.cve): a for a in document.affected}
    fixes: dict[tuple[str, str], list[FixRow]] = defaultdict(list)
    for row in rows:
        fixes[(row[1], row[0])].append(row[2:])
    items = []
    for product_id, cve in dict.fromkeys([*affected, *fixes]):
        pair = affected.get((product_id, cve))
        vulnerability = vulnerabilities.get(cve)
        facts = None
        if vulnerability is not None:
            released = vulnerability.release_date.isoformat() if vulnerability.release_date else None
            cwe = list(vulnerability.cwe)
            facts = [vulnerability.title, cwe, vulnerability.exploited, vulnerability.publicly_disclosed, released]
        data = [list(pair[2:]) if pair else None, facts, fixes.get((product_id, cve), [])]
        text = json.dumps(data, separators=(",", ":"))
        if len(text) > ITEM_LIMIT_BYTES - 1000:
            raise StoreError(f"{document_id}: the entry {cve} takes {len(text)} bytes, past DynamoDB's item limit")
        items.append(
            entry_key(product_id, cve, document_id, generation)
            | {
                "doc": document_id,
                "gen": generation,
                "month": f"MONTH#{document_id}",
                "month_key": f"OS#{product_id}#CVE#{cve}",
                "data": text,
            }
        )
    return items


@dataclass(frozen=True, slots=True)
class Entry:
    """An entry item read back: its month, product, CVE and the decoded ``data``."""

    document_id: str
    product_id: str
    cve: str
    affected: list[Any] | None
    vulnerability: list[Any] | None
    fixes: list[FixRow]

    @classmethod
    def of(cls, item: dict[str, Any]) -> Entry:
        affected, vulnerability, fixes = json.loads(item["data"])
        cve = item["sk"].split("#")[1]
        product_id = item["pk"].removeprefix("OS#")
        return cls(item["doc"], product_id, cve, affected, vulnerability, [[cve, product_id, *row] for row in fixes])


def generation_keys(document_id: str, generation: str, digest: dict[str, Any]) -> list[Key]:
    """Every catalog-table key one generation wrote, from its digest: deleting it needs no index."""
    pairs = {(product_id, cve) for product_id, cves in digest["affected"].items() for cve in cves}
    pairs |= {(row[1], row[0]) for row in digest["fixes"]}
    keys = [entry_key(product_id, cve, document_id, generation) for product_id, cve in sorted(pairs)]
    keys += [
        kb_key(int(kb), document_id, generation, part) for kb, parts in digest["kbs"].items() for part in range(parts)
    ]
    return keys


def compare_fixes(old_rows: Iterable[FixRow], new_rows: list[FixRow]) -> ImportCounts:
    """What replacing ``old_rows`` by ``new_rows`` changes, by (CVE, product, KB) entry (as SQLite counts)."""
    old = {(row[0], row[1], row[2]): row for row in old_rows}
    if not old:
        return ImportCounts(added=len(new_rows))
    added = updated = unchanged = 0
    for row in new_rows:
        previous = old.pop((row[0], row[1], row[2]), None)
        if previous is None:
            added += 1
        elif list(previous) == list(row):
            unchanged += 1
        else:
            updated += 1
    return ImportCounts(added=added, updated=updated, unchanged=unchanged, removed=len(old))

"""Reading MSRC data from files: plain or gzip, single files or whole folders, format detected.

Detection looks at the bytes, never the file name: ``<`` opens CVRF XML; a JSON object with
``DocumentTracking`` is CVRF JSON; an OData page of ``affectedProduct`` records is SUG.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopatch.catalog.cvrf_json import parse_cvrf_json
from autopatch.catalog.cvrf_xml import parse_cvrf_xml
from autopatch.catalog.sug import is_sug_page, parse_sug_records
from autopatch.domain.catalog import CatalogDocument
from autopatch.errors import DocumentFormatError, ValidationError

_SUFFIXES = (".xml", ".json", ".gz")
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file to import, with the hash of its bytes (to skip unchanged re-imports cheaply)."""

    path: Path
    raw: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their .xml/.json/.gz files (sorted, non-recursive)."""
    files: list[Path] = []
    for raw_path in paths:
        path = Path(raw_path)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(_SUFFIXES)))
        elif path.is_file():
            files.append(path)
        else:
            raise ValidationError("path", str(path), "must be an existing file or folder")
    return files


def decompress(raw: bytes, source: str) -> bytes:
    """Gunzip when the bytes say gzip; a truncated or damaged archive is a format error."""
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DocumentFormatError(f"{source}: truncated or damaged gzip data ({exc})") from exc


def parse_payload(raw: bytes, source: str) -> list[CatalogDocument]:
    """Parse the bytes of one file or response into catalog documents (SUG pages may hold several)."""
    data = decompress(raw, source)
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        return [parse_cvrf_xml(data, source)]
    if head.startswith(b"{"):
        return parse_json(_load_json(data, source), source)
    raise DocumentFormatError(f"{source}: not MSRC data (expected CVRF XML, CVRF JSON or a SUG page)")


def parse_json(payload: Any, source: str) -> list[CatalogDocument]:
    if isinstance(payload, dict) and "DocumentTracking" in payload:
        return [parse_cvrf_json(payload, source)]
    if is_sug_page(payload):
        return parse_sug_records(payload["value"], source)
    raise DocumentFormatError(f"{source}: JSON that is neither a CVRF document nor a SUG affectedProduct page")


def _load_json(data: bytes, source: str) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DocumentFormatError(f"{source}: not valid JSON ({exc})") from exc


def read_source(path: Path) -> SourceFile:
    try:
        return SourceFile(path=path, raw=path.read_bytes())
    except OSError as exc:
        raise ValidationError("path", str(path), f"must be readable ({exc.strerror})") from exc

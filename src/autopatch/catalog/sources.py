"""Reading MSRC data from files and streams: plain or gzip, single files or whole folders, format detected.

Detection looks at the bytes, never the file name: the gzip magic number, then ``<`` opens CVRF
XML and ``{`` JSON (a CVRF document with ``DocumentTracking``, or an OData page of SUG
``affectedProduct`` records).

Nothing is read whole before its size is known to be acceptable, because a megabyte of gzip can
inflate to a gigabyte: files are hashed in chunks, gzip is inflated as a stream with a cap on the
inflated size, XML is parsed as it streams in, and only JSON, which must be decoded in one piece,
is held in memory, up to its own smaller cap. Whatever passes a cap is a ``DocumentFormatError``
naming the file and the cap.
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from autopatch.catalog.cvrf_json import parse_cvrf_json
from autopatch.catalog.cvrf_xml import MIB, ByteStream, echo, parse_cvrf_xml
from autopatch.catalog.sug import is_sug_page, parse_sug_records
from autopatch.domain.catalog import CatalogDocument
from autopatch.errors import DocumentFormatError, ValidationError

XML_SIZE_LIMIT = 256 * MIB  # inflated; the biggest real month is 10.8 MB (2024-Dec)
JSON_SIZE_LIMIT = 64 * MIB  # decoded in one piece, and Python objects take several times their text
# Decoded, a JSON value costs ~64 bytes however short its text ("[]," is 3): real MSRC JSON has one
# value per 12 to 20 bytes, so 64 MiB of it holds under 6 million, and 8 million caps the decoded
# objects at about half a gigabyte whatever the text.
JSON_VALUE_LIMIT = 8_000_000
_SUFFIXES = (".xml", ".json", ".gz")

_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer around the deflate stream
_INFLATE_CHUNK = 16 * 1024  # compressed bytes per read: small, as the unread rest is copied per call
_CHUNK = MIB
_HEAD = 64  # enough to see past a byte order mark and blank lines


def too_big(source: str, limit: int, what: str) -> DocumentFormatError:
    return DocumentFormatError(f"{source}: more than {limit // MIB} MiB of {what}, the size cap for one MSRC document")


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their .xml/.json/.gz files (sorted, non-recursive).

    A folder holding none is an input error: an import that silently finds nothing is a typo.
    """
    files: list[Path] = []
    for raw_path in paths:
        path = Path(raw_path)
        try:
            if path.is_dir():
                found = sorted(p for p in path.iterdir() if p.name.endswith(_SUFFIXES) and p.is_file())
                if not found:
                    raise ValidationError("path", str(path), "holds no MSRC documents (.xml, .json or .gz files)")
                files.extend(found)
            elif path.is_file():
                files.append(path)
            else:
                raise ValidationError("path", str(path), "must be an existing file or folder")
        except OSError as exc:  # a name too long, a folder we may not list
            raise ValidationError("path", str(path), f"must be readable ({exc.strerror})") from exc
    return files


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks: what recognises a file imported before."""
    try:
        with path.open("rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()
    except OSError as exc:
        raise ValidationError("path", str(path), f"must be readable ({exc.strerror})") from exc


def parse_file(path: Path) -> tuple[str, list[CatalogDocument]]:
    """Stream-parse one file: the SHA-256 of the bytes that were parsed, and its documents."""
    try:
        with path.open("rb") as file:
            return parse_hashed(file, str(path))
    except OSError as exc:  # gzip errors are DocumentFormatErrors by now: this is the file itself
        raise ValidationError("path", str(path), f"must be readable ({exc.strerror})") from exc


def parse_hashed(stream: ByteStream, source: str) -> tuple[str, list[CatalogDocument]]:
    """Parse a stream (a file, a downloaded body) and hash every byte of it on the way."""
    hashing = _Hashing(stream)
    documents = parse_stream(hashing, source)
    return hashing.hexdigest_of_all(), documents


def parse_payload(raw: bytes, source: str) -> list[CatalogDocument]:
    """Parse the bytes of one file or response into catalog documents (SUG pages may hold several)."""
    return parse_stream(io.BytesIO(raw), source)


def parse_stream(stream: ByteStream, source: str) -> list[CatalogDocument]:
    """Detect the format from the first (inflated) bytes and parse, never holding more than a cap allows."""
    source = echo(source)
    magic = _read_up_to(stream, len(_GZIP_MAGIC))
    body: ByteStream = _Prefixed(magic, stream)
    if magic == _GZIP_MAGIC:
        body = _Gunzip(body, source)
    capped = _Capped(body, XML_SIZE_LIMIT, "CVRF XML", source)
    head = _read_up_to(capped, _HEAD)
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if first == b"<":
        return [parse_cvrf_xml(_Prefixed(head, capped), source)]
    if first == b"{":
        capped.lower_limit(JSON_SIZE_LIMIT, "JSON")
        data = bytearray(head)
        while chunk := capped.read(_CHUNK):
            data += chunk
        return parse_json(load_json(data, source), source)
    raise DocumentFormatError(f"{source}: not MSRC data (expected CVRF XML, CVRF JSON or a SUG page)")


def parse_json(payload: Any, source: str) -> list[CatalogDocument]:
    """Decoded JSON → documents: a CVRF JSON document or a SUG ``affectedProduct`` page."""
    try:
        if isinstance(payload, dict) and "DocumentTracking" in payload:
            return [parse_cvrf_json(payload, source)]
        if is_sug_page(payload):
            return parse_sug_records(payload["value"], source)
    except RecursionError as exc:
        raise DocumentFormatError(f"{source}: JSON nested too deeply to be an MSRC document") from exc
    raise DocumentFormatError(f"{source}: JSON that is neither a CVRF document nor a SUG affectedProduct page")


def load_json(data: bytes | bytearray, source: str) -> Any:
    """Decode JSON; anything the decoder refuses (depth, 4,300-digit numbers, bad UTF-8) is a format error."""
    # Separators and openers bound the number of values from above (some sit inside strings).
    if sum(map(data.count, (b",", b":", b"[", b"{"))) > JSON_VALUE_LIMIT:
        raise DocumentFormatError(
            f"{source}: more than {JSON_VALUE_LIMIT:,} JSON values, the cap for one MSRC document"
        )
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise DocumentFormatError(f"{source}: JSON nested too deeply to be an MSRC document") from exc
    except MemoryError as exc:
        raise DocumentFormatError(f"{source}: JSON too large to decode in memory") from exc
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise DocumentFormatError(f"{source}: not valid JSON ({echo(exc)})") from exc


def _read_up_to(stream: ByteStream, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := stream.read(size - len(data))):
        data += chunk
    return data


class _Prefixed:
    """A stream with bytes already read from it (to detect the format) put back in front."""

    def __init__(self, head: bytes, stream: ByteStream) -> None:
        self._head = head
        self._stream = stream

    def read(self, size: int, /) -> bytes:
        if not self._head:
            return self._stream.read(size)
        data, self._head = self._head[:size], self._head[size:]
        return data


class _Hashing:
    """Hashes every byte read through it; draining the rest makes the hash the whole stream's."""

    def __init__(self, stream: ByteStream) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()

    def read(self, size: int, /) -> bytes:
        data = self._stream.read(size)
        self._hash.update(data)
        return data

    def hexdigest_of_all(self) -> str:
        while self.read(_CHUNK):
            pass
        return self._hash.hexdigest()


class _Gunzip:
    """Inflates gzip as it is read, member after member, never more than asked for at once.

    zlib does the work in C (header, CRC and length checks included); ``max_length`` bounds each
    read's output, so a bomb costs no more memory than a real document.
    """

    def __init__(self, stream: ByteStream, source: str) -> None:
        self._stream = stream
        self._source = source
        self._inflater = zlib.decompressobj(_GZIP_WBITS)
        self._input = b""  # compressed bytes read but not yet inflated
        self._in_member = False

    def read(self, size: int, /) -> bytes:
        try:
            while True:
                data = self._input or self._stream.read(_INFLATE_CHUNK)
                if not data:
                    output = self._inflater.decompress(b"", size) if self._in_member else b""
                    if not output and self._in_member:
                        raise DocumentFormatError(f"{self._source}: truncated or damaged gzip data (ends mid-stream)")
                    return output
                self._in_member = True
                output = self._inflater.decompress(data, size)
                self._input = self._inflater.unconsumed_tail
                if self._inflater.eof:  # a member ends; another may follow (RFC 1952 allows several)
                    self._input = self._inflater.unused_data
                    self._inflater = zlib.decompressobj(_GZIP_WBITS)
                    self._in_member = False
                if output:
                    return output
        except zlib.error as exc:
            raise DocumentFormatError(f"{self._source}: truncated or damaged gzip data ({echo(exc)})") from exc


class _Capped:
    """Refuses to yield more than ``limit`` bytes: the cap on one document's (inflated) size."""

    def __init__(self, stream: ByteStream, limit: int, what: str, source: str) -> None:
        self._stream = stream
        self._limit = limit
        self._what = what
        self._source = source
        self._count = 0

    def lower_limit(self, limit: int, what: str) -> None:
        self._limit, self._what = min(self._limit, limit), what

    def read(self, size: int, /) -> bytes:
        data = self._stream.read(min(size, self._limit + 1 - self._count))
        self._count += len(data)
        if self._count > self._limit:
            raise too_big(self._source, self._limit, self._what)
        return data

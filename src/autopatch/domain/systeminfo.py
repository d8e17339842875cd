"""Reading the output of Windows' ``systeminfo`` (pure): what an air-gapped admin can hand us.

``systeminfo`` prints labels in the system's language ("OS Name", "Betriebssystemname", "Nom du
système d'exploitation", Russian…), in the console's code page (cp850, cp866…) or, redirected
from PowerShell, as UTF-16. Labels are therefore not read at all: the field ORDER is fixed (host
name, OS name, OS version, …) and values start at one column shared by every field, whatever the
language; hotfixes are the ``[NN]: KBnnnnnnn`` entries. Only ASCII is needed from the values (the
"Windows Server 2016" in the OS name, the digits of the version), so any single-byte decoding that
keeps ASCII works for legacy code pages. ``systeminfo /fo csv`` output is read too.

systeminfo gives neither the build revision (UBR) nor whether the server is Server Core.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass

from autopatch.errors import DocumentFormatError

MAX_BYTES = 1_000_000  # a systeminfo text is a few kilobytes, even with hundreds of hotfixes
_VERSION = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{3,6})", re.ASCII)
_HOTFIX = re.compile(r"^\s*\[[0-9]+\]\s*:?\s*(?:KB)?([0-9]{6,7})\s*$", re.ASCII | re.IGNORECASE)
_HOTFIX_IN_CELL = re.compile(r"\[[0-9]+\]\s*:?\s*(?:KB)?([0-9]{6,7})(?![0-9])", re.ASCII | re.IGNORECASE)
_FIELD_START = re.compile(r":\s+(?=\S)")


@dataclass(frozen=True, slots=True)
class SystemInfo:
    os_name: str  # e.g. "Microsoft Windows Server 2016 Datacenter"
    os_version: str  # e.g. "10.0.14393" (systeminfo prints no revision)
    hotfixes: tuple[str, ...]  # "KB4483229", in the order listed, each once
    host_name: str | None = None


def decode(raw: bytes) -> str:
    """Text from UTF-16 (PowerShell redirection), UTF-8, or a legacy code page (ASCII kept)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    if len(raw) > 1 and raw[1:2] == b"\x00" and raw[:1] != b"\x00":  # UTF-16 LE without a BOM
        return raw.decode("utf-16-le", errors="replace")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def parse_systeminfo(raw: bytes, source: str = "systeminfo") -> SystemInfo:
    """Parse ``systeminfo`` output (list or CSV format, any language); raise ``DocumentFormatError``."""
    if len(raw) > MAX_BYTES:
        raise DocumentFormatError(f"{source}: {len(raw):,} bytes is too large for systeminfo output")
    text = decode(raw).replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    first = next((line for line in lines if line.strip()), "")
    info = _from_csv(text) if first.lstrip().startswith('"') else _from_list(lines)
    if info is None or "windows" not in info.os_name.lower():
        raise DocumentFormatError(
            f"{source}: not systeminfo output (expected the OS name and version as its second and third fields)"
        )
    return info


def _from_list(lines: list[str]) -> SystemInfo | None:
    top = [line for line in lines if line and not line[0].isspace()]
    # Every field's value starts at the same column; labels may hold colons ("Virtual Memory: Max Size:").
    starts = Counter(match.end() for line in top for match in [*_FIELD_START.finditer(line)][-1:])
    if not starts:
        return None
    column = starts.most_common(1)[0][0]
    values = [line[column:].strip() if len(line) > column else "" for line in top]
    if len(values) < 3:
        return None
    version = _VERSION.search(values[2])
    if version is None:
        return None
    hotfixes = [f"KB{match.group(1)}" for line in lines if (match := _HOTFIX.match(line))]
    return SystemInfo(values[1], version.group(0), tuple(dict.fromkeys(hotfixes)), values[0] or None)


def _from_csv(text: str) -> SystemInfo | None:
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if len(rows) < 2 or len(rows[1]) < 3:
        return None
    values = rows[1]
    version = _VERSION.search(values[2])
    if version is None:
        return None
    hotfixes = [f"KB{match.group(1)}" for cell in values for match in _HOTFIX_IN_CELL.finditer(cell)]
    return SystemInfo(values[1].strip(), version.group(0), tuple(dict.fromkeys(hotfixes)), values[0].strip() or None)

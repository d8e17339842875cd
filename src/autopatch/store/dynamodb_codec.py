"""DynamoDB's attribute-value format, and packed blobs for lists that would not fit an item.

The adapter speaks to the low-level client (as the SSM adapter does), so values are encoded here
rather than by boto3's ``TypeSerializer``: that one refuses ``float`` (it wants ``Decimal``), and
lease times and CVSS scores are floats that must read back exactly (``repr`` round-trips them).

``None`` is never stored: a missing attribute reads back as ``None``, which keeps items small and
lets an update ``REMOVE`` what SQLite would set to NULL. Empty sets cannot be stored either
(DynamoDB refuses them), so they are dropped the same way.

Long lists (a month's fix rows, a server's installed KBs) are stored as zlib-compressed JSON in
binary attributes: JSON of KB and CVE ids compresses about tenfold, which keeps the largest real
month far below the 400 KB item limit, and ``split_blob`` cuts what is still too big into parts.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

# The part of an item a blob may take: DynamoDB's limit is 400 KB per item, keys and other
# attributes included, so a blob part stays well below it.
BLOB_PART_BYTES = 300_000
ITEM_LIMIT_BYTES = 400_000


def encode(value: Any) -> dict[str, Any]:
    """One Python value as a DynamoDB attribute value (bool before int: ``True`` is an int too)."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        return {"N": repr(value)}
    if isinstance(value, bytes):
        return {"B": value}
    if isinstance(value, (set, frozenset)):
        if all(isinstance(member, int) and not isinstance(member, bool) for member in value):
            return {"NS": [str(member) for member in sorted(value)]}
        return {"SS": sorted(str(member) for member in value)}
    if isinstance(value, Mapping):
        return {"M": encode_item(value)}
    if isinstance(value, (list, tuple)):
        return {"L": [encode(member) for member in value]}
    raise TypeError(f"cannot store a {type(value).__name__} in DynamoDB")


def encode_item(fields: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """An item from a mapping; ``None`` and empty sets are left out (absent reads back as None)."""
    return {
        name: encode(value)
        for name, value in fields.items()
        if value is not None and not (isinstance(value, (set, frozenset)) and not value)
    }


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def decode(attribute: Mapping[str, Any]) -> Any:
    """A DynamoDB attribute value as a Python value (numbers as int when integral text, else float)."""
    kind, value = next(iter(attribute.items()))
    if kind in ("S", "BOOL"):
        return value
    if kind == "N":
        return _number(value)
    if kind == "B":
        return bytes(value)
    if kind == "NULL":
        return None
    if kind == "SS":
        return set(value)
    if kind == "NS":
        return {_number(member) for member in value}
    if kind == "M":
        return decode_item(value)
    if kind == "L":
        return [decode(member) for member in value]
    raise TypeError(f"unknown DynamoDB attribute type {kind}")


def decode_item(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {name: decode(value) for name, value in raw.items()}


def pack(data: Any) -> bytes:
    """Compact JSON, zlib-compressed: how long lists are kept in one binary attribute."""
    return zlib.compress(json.dumps(data, separators=(",", ":")).encode("utf-8"), 6)


def unpack(blob: bytes) -> Any:
    return json.loads(zlib.decompress(blob))


def split_blob(blob: bytes, limit: int = BLOB_PART_BYTES) -> list[bytes]:
    """Cut a packed blob into parts of at most ``limit`` bytes, each stored in an item of its own."""
    return [blob[start : start + limit] for start in range(0, len(blob), limit)] or [b""]


def join_blob(parts: Iterable[bytes]) -> bytes:
    return b"".join(parts)


def item_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    """DynamoDB's measure of an item, close enough to refuse one before the service does."""
    return sum(len(name.encode("utf-8")) + _value_size(value) for name, value in item.items())


def _value_size(attribute: Mapping[str, Any]) -> int:
    kind, value = next(iter(attribute.items()))
    if kind == "S":
        return len(str(value).encode("utf-8"))
    if kind == "B":
        return len(value)
    if kind in ("N", "BOOL", "NULL"):
        return 21 if kind == "N" else 1
    if kind in ("SS", "NS"):
        return sum(len(str(member)) for member in value)
    if kind == "M":
        return 3 + item_size(value)
    return 3 + sum(1 + _value_size(member) for member in value)

"""The instance id validator, shared by every edge that names a server (CLI, HTTP, fleet adapters).

An id reaches AWS APIs and our store; validating it once, here, means a typo fails with a message
naming the rule instead of an opaque AWS error, and no free text ever travels inward.
"""

from __future__ import annotations

import re

from autopatch.errors import ValidationError

# EC2 ids had 8 hex digits until 2016 and have 17 since; SSM hybrid activations ("managed
# instances": on-premises or other clouds) always have 17. AWS prints them in lower case.
_INSTANCE_ID = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})|mi-[0-9a-f]{17}")

INSTANCE_ID_RULE = (
    "an instance id is 'i-' followed by 8 or 17 lowercase hex digits (EC2, e.g. i-0123456789abcdef0) "
    "or 'mi-' followed by 17 (SSM managed instance, e.g. mi-0123456789abcdef0)"
)


def parse_instance_id(value: str, field: str = "instance_id") -> str:
    """Return the instance id (surrounding blanks removed) or raise ``ValidationError`` naming the rule."""
    candidate = value.strip() if isinstance(value, str) else None
    if candidate is None or _INSTANCE_ID.fullmatch(candidate) is None:
        raise ValidationError(field, value, INSTANCE_ID_RULE)
    return candidate


def is_managed_instance_id(instance_id: str) -> bool:
    """True for SSM hybrid ids (``mi-``): such servers have no EC2 record, tags or AMI, and EC2 cannot reboot them."""
    return instance_id.startswith("mi-")

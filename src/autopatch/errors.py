"""The one error tree of AutoPatch.

    AutoPatchError
    ├── InputError            the caller's fault: exit code 2 on the CLI, 4xx over HTTP
    │   ├── ValidationError   a value breaks a rule (names the field, the value and the rule)
    │   ├── NotFoundError     a well-formed name that the store does not know
    │   ├── ConflictError     the request collides with the current state (a live run holds the server): 409
    │   └── DocumentFormatError  a file or payload that is not MSRC data (or is truncated)
    ├── ExecutionError        the world's fault: recorded, retried where policy allows
    │   ├── SourceUnavailableError  Microsoft's API cannot be reached or keeps failing
    │   ├── StoreError        the database failed (adapters translate sqlite3/botocore errors)
    │   └── TransientError    worth retrying with backoff (throttling, Undeliverable, offline)
    │       └── DeliveryUncertainError  a request that may or may not have reached the service
    └── StateError            an illegal state transition: a bug or a race, never retried

Adapters translate vendor exceptions into these (``raise StoreError(...) from exc``), so nothing
above an adapter ever catches a vendor exception.
"""

from __future__ import annotations

ECHO_LIMIT = 80  # characters of a caller's value repeated in an error message


def shorten(text: str, limit: int = ECHO_LIMIT) -> str:
    """Cut an echoed value so that a hostile 10 MB argument never floods a terminal or a log."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class AutoPatchError(Exception):
    """Base of every error AutoPatch raises on purpose."""


class InputError(AutoPatchError):
    """The request itself is wrong; retrying it unchanged cannot help."""


class ValidationError(InputError):
    """A value breaks a rule. The message names the field, the value and the rule."""

    def __init__(self, field: str, value: object, rule: str) -> None:
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(f"{field}: {shorten(repr(value))} is invalid: {rule}")


class NotFoundError(InputError):
    """A well-formed identifier that is not in the store (unknown product, KB, instance...)."""


class ConflictError(InputError):
    """The request is valid but collides with what is going on (another run holds the server)."""


class DocumentFormatError(InputError):
    """A file or payload that is not an MSRC document, or is damaged (truncated gzip, bad XML)."""


class ExecutionError(AutoPatchError):
    """Something outside the caller's control failed; the operation may succeed later."""


class SourceUnavailableError(ExecutionError):
    """Microsoft's API is unreachable (offline, DNS, TLS) or kept failing after retries."""


class StoreError(ExecutionError):
    """The store failed to read or write."""


class TransientError(ExecutionError):
    """A failure that usually goes away: throttling, an undeliverable command, a briefly offline server."""


class DeliveryUncertainError(TransientError):
    """A send whose fate is unknown (a timeout or 5xx after the request left): ask before sending again.

    SSM's SendCommand has no idempotency token: resending after such an error can run the command
    twice. The engine keeps the attempt in "sending" and asks the fleet by token instead.
    """


class RunTakenOverError(ExecutionError):
    """Another driver holds the run now (``resume`` after this one's lease ran out): this one stops touching it."""


class StateError(AutoPatchError):
    """A state machine was asked for a transition its table does not allow."""

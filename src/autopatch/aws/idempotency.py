"""Once per key: Powertools idempotency around the tasks whose repeat would repeat a side effect.

Step Functions retries a task whose Lambda failed or timed out, and Lambda itself retries on some
service errors: an install sent, a reboot asked for or a summary mailed would then happen twice.
The steps already guard the first two through the store (an attempt's token is recorded before
its send; a reboot's intent before the call), and each task checks the stored phase before acting;
this adds the record of the first result, keyed by what the action is about (run, server, KB,
attempt), so a repeat returns that result without touching the fleet or the notifiers.

The persistence layer comes from the runtime (built lazily inside the caller's mock or account),
and the Lambda context is registered so that an invocation killed mid-way leaves an "in progress"
record that expires with the invocation, not one that blocks the retry for hours.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.typing import LambdaContext

from autopatch.aws.wiring import Runtime

# A repeat comes within minutes (a retried task); a day covers the longest run's retries.
EXPIRES_AFTER_SECONDS = 24 * 3600


def once(
    runtime: Runtime,
    name: str,
    key: dict[str, Any],
    action: Callable[[], dict[str, Any]],
    context: LambdaContext | None,
) -> dict[str, Any]:
    """``action()``'s result, run at most once per (``name``, ``key``); a repeat returns the stored result.

    An ``action`` that raises stores nothing (Powertools deletes its record): the retry runs it again.
    """
    config = IdempotencyConfig(expires_after_seconds=EXPIRES_AFTER_SECONDS)
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        config.register_lambda_context(context)

    def guarded(key: dict[str, Any]) -> dict[str, Any]:
        return action()

    wrapped = idempotent_function(
        guarded,
        data_keyword_argument="key",
        persistence_store=runtime.persistence_layer(name),
        config=config,
        key_prefix=name,
    )
    result: dict[str, Any] = wrapped(key=key)
    return result

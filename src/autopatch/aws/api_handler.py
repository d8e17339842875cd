"""The HTTP API on Lambda: the very FastAPI app of ``autopatch serve`` behind API Gateway, through Mangum.

Settings come from the function's environment (``AUTOPATCH_STORE=dynamodb``, the table names,
``AUTOPATCH_STATE_MACHINE_ARN``), so the app reads and writes DynamoDB and hands the runs it starts
to Step Functions instead of driving them. Tokens are the app's own (hashed, in the state table).
Server-Sent Events come back buffered through API Gateway: the dashboard then polls the run.
The app is built once per container, on the first request, so a cold start pays for it once.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from autopatch.api.app import create_app
from autopatch.cli.context import load_settings


@cache
def asgi_handler() -> Any:
    from mangum import Mangum

    # lifespan "off": nothing to start in a Lambda container (the run driver is Step Functions).
    return Mangum(create_app(load_settings(), start_worker=False), lifespan="off")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response: dict[str, Any] = asgi_handler()(event, context)
    return response

"""AutoPatch errors → HTTP answers: one JSON shape, one line of text, never a stack trace.

Every error body is ``{"error": {"field", "rule", "message"}}``. Input errors map to 4xx (bad value
422 naming the field and the rule, unknown id 404, a collision with live state 409); execution
errors (MSRC or the fleet unreachable, the database failing) to 503, since retrying later can
help; anything else to 500 with a fixed sentence: an unexpected exception's text may hold paths or
SQL, which a client has no use for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from autopatch.errors import (
    AutoPatchError,
    ConflictError,
    ExecutionError,
    InputError,
    NotFoundError,
    ValidationError,
    shorten,
)

MESSAGE_LIMIT = 240


def one_line(message: str) -> str:
    """One short line whatever the message holds (a hostile value may carry newlines)."""
    return shorten(" ".join(message.split()), MESSAGE_LIMIT)


def status_for(exc: BaseException) -> int:
    """The HTTP status of an AutoPatch error (the CLI's exit code 2 splits into 404, 409 and 422)."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, InputError):
        return 422
    if isinstance(exc, ExecutionError):
        return 503
    return 500


def error_response(
    status: int,
    message: str,
    field: str | None = None,
    rule: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"field": field, "rule": rule, "message": one_line(message)}}
    return JSONResponse(body, status_code=status, headers=headers)


def _autopatch_error(request: Request, exc: Exception) -> JSONResponse:
    status = status_for(exc)
    if isinstance(exc, ValidationError):
        return error_response(status, str(exc), exc.field, exc.rule)
    if status == 500:  # a StateError is a bug or a race: say so, without internals
        return error_response(500, f"internal error ({type(exc).__name__}); the request may be retried")
    return error_response(status, str(exc))


def _first_problem(exc: RequestValidationError) -> tuple[str | None, str]:
    """The field (``limit``, ``name``, ``body``…) and rule of the first problem FastAPI found."""
    first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    return ".".join(location) or None, str(first.get("msg", "invalid request"))


def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    field, rule = _first_problem(exc)
    return error_response(422, f"{field or 'request'}: {rule}", field, rule)


def describe_failure(exc: BaseException) -> str:
    """``<status> <one line>``: how a refused or failed request ended, for the audit log."""
    if isinstance(exc, HTTPException):
        return f"{exc.status_code} {one_line(str(exc.detail))}"
    if isinstance(exc, RequestValidationError):
        field, rule = _first_problem(exc)
        return f"422 {one_line((field or 'request') + ': ' + rule)}"
    if isinstance(exc, AutoPatchError):
        return f"{status_for(exc)} {one_line(str(exc))}"
    return f"500 internal error ({type(exc).__name__})"


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(500, "internal error; the request may be retried")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AutoPatchError, _autopatch_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)

"""One place that turns every error into an RFC 9457 answer (FastAPI handlers and a backstop)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bazaar.shared.dbfailure import is_retryable
from bazaar.shared.problem import (
    PROBLEM_CONTENT_TYPE,
    RETRY_AFTER_SECONDS,
    Problem,
    ProblemError,
    ProblemSpec,
    ServiceUnavailable,
    problem_from_exception,
)
from bazaar.shared.tracecontext import current_trace_id

log = logging.getLogger("bazaar.errors")
_UNEXPECTED = "An unexpected error occurred."
_UNPARSABLE_BODY = (UnicodeDecodeError, RecursionError, ValueError)

ErrorMap = Mapping[type[BaseException], ProblemSpec]

#: Problem slugs for the statuses the framework itself answers.
_FRAMEWORK_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "payload-too-large",
    415: "unsupported-media-type",
}


def problem_response(
    problem: Problem, *, instance: str | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    """Render a problem as an `application/problem+json` response."""
    problem.instance = problem.instance or instance
    problem.trace_id = problem.trace_id or current_trace_id()
    body = json.dumps(problem.to_dict(), ensure_ascii=False, default=str).encode()
    sent = dict(headers or {})
    if problem.status == 503 and not any(name.lower() == "retry-after" for name in sent):
        # Every 503 tells the client when to come back (API.md, "Service availability").
        sent["Retry-After"] = RETRY_AFTER_SECONDS
    return Response(body, problem.status, headers=sent, media_type=PROBLEM_CONTENT_TYPE)


def is_outage(exc: BaseException) -> bool:
    """Answer whether `exc` says a dependency is down (or a conflict worth retrying), not a bug.

    Such errors escaping a route are answered 503 `service-unavailable` with `Retry-After`,
    never 500: a database restarting, a connection cut mid-statement, a deadlock.
    """
    if isinstance(exc, BaseExceptionGroup):
        return all(is_outage(inner) for inner in exc.exceptions)
    return is_retryable(exc)


def error_response(exc: ProblemError, scope: Scope) -> Response:
    """The problem+json answer of `exc` to the request of `scope`, with `exc`'s headers."""
    problem = Problem(exc.status, exc.slug, exc.title, exc.detail)
    return problem_response(problem, instance=scope["path"], headers=exc.headers)


def outage_response(scope: Scope) -> Response:
    """The 503 answer to a request that failed because a dependency is down."""
    return error_response(ServiceUnavailable(), scope)


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """The `errors` of a 422: location, message and type; never the input (it may be secret)."""
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


def install_problem_handlers(app: FastAPI, error_map: ErrorMap) -> None:
    """Answer every error of `app` as problem+json, domain errors through `error_map`."""
    app.state.error_map = dict(error_map)

    async def on_mapped(request: Request, exc: Exception) -> Response:
        problem = problem_from_exception(exc, app.state.error_map)
        if problem is None:  # pragma: no cover - only registered classes reach here
            raise exc
        headers = exc.headers if isinstance(exc, ProblemError) else None
        return problem_response(problem, instance=request.url.path, headers=headers)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this class only
        problem = Problem(
            422,
            "validation-error",
            "Validation Error",
            "The request is invalid.",
            extensions={"errors": validation_errors(exc)},
        )
        return problem_response(problem, instance=request.url.path)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for this class only
        if isinstance(exc.__cause__, ProblemError):
            # Raised while FastAPI read the body (e.g. the size limit): answer it as itself.
            return await on_mapped(request, exc.__cause__)
        if exc.status_code == 400 and isinstance(exc.__cause__, _UNPARSABLE_BODY):
            # FastAPI answers 400 for a body that is not UTF-8 or nests too deep; to a client
            # that is malformed JSON, which everywhere else is a 422 validation-error.
            problem = Problem(
                422,
                "validation-error",
                "Validation Error",
                "The request body is not valid JSON.",
                extensions={
                    "errors": [{"loc": ["body"], "msg": "Invalid JSON", "type": "json_invalid"}]
                },
            )
            return problem_response(problem, instance=request.url.path)
        status = exc.status_code
        phrase = HTTPStatus(status).phrase
        slug = _FRAMEWORK_SLUGS.get(status, phrase.lower().replace(" ", "-"))
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
        return problem_response(
            Problem(status, slug, phrase, detail), instance=request.url.path, headers=exc.headers
        )

    app.add_exception_handler(ProblemError, on_mapped)
    for cls in error_map:
        if issubclass(cls, Exception):
            app.add_exception_handler(cls, on_mapped)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)


async def answer_unhandled(
    exc: Exception, scope: Scope, receive: Receive, send: Send, *, started: bool
) -> None:
    """Backstop for an exception no handler took: an outage is a 503, anything else a 500.

    The 500 says nothing of the internals (the traceback goes to the log). When the
    response has already started, the exception is raised again for the server to cut it.
    """
    if is_outage(exc):
        # The infrastructure's fault, not ours: no traceback per request while it lasts.
        log.warning(
            "dependency unavailable serving %s %s: %s: %s",
            scope["method"],
            scope["path"],
            type(exc).__name__,
            exc,
        )
        if started:
            raise exc
        await outage_response(scope)(scope, receive, send)
        return
    log.error("unhandled error serving %s %s", scope["method"], scope["path"], exc_info=exc)
    if started:
        raise exc
    response = problem_response(
        Problem(500, "internal-error", "Internal Server Error", _UNEXPECTED),
        instance=scope["path"],
    )
    await response(scope, receive, send)

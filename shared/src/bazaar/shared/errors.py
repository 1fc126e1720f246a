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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bazaar.shared.problem import (
    PROBLEM_CONTENT_TYPE,
    Problem,
    ProblemError,
    ProblemSpec,
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
    return Response(
        body, problem.status, headers=dict(headers or {}), media_type=PROBLEM_CONTENT_TYPE
    )


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
        assert isinstance(exc, RequestValidationError)
        problem = Problem(
            422,
            "validation-error",
            "Validation Error",
            "The request is invalid.",
            extensions={"errors": validation_errors(exc)},
        )
        return problem_response(problem, instance=request.url.path)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
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


class UnhandledErrorMiddleware:
    """Backstop: an unexpected exception becomes a 500 problem with no internals, and is logged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request; answer 500 if it fails before the response started."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error serving %s %s", scope["method"], scope["path"])
            if started:
                raise
            response = problem_response(
                Problem(500, "internal-error", "Internal Server Error", _UNEXPECTED),
                instance=scope["path"],
            )
            await response(scope, receive, send)

"""RFC 9457 problem details: the one error shape of every Bazaar response."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE_URI = "https://bazaar.example/problems/"


@dataclass(frozen=True, slots=True)
class ProblemSpec:
    """How one exception class is answered: status, type slug and title."""

    status: int
    slug: str
    title: str
    #: Extra members of the problem body, read off the exception (e.g. the short product ids).
    extensions: Callable[[BaseException], Mapping[str, Any]] | None = None


class ProblemError(Exception):
    """An error that knows its own problem+json answer."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal Server Error"
    #: The detail when the raiser gives none.
    default_detail: ClassVar[str | None] = None
    #: Headers every answer of this problem carries (e.g. Retry-After).
    default_headers: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail or self.title)
        self.headers = {**self.default_headers, **(headers or {})}
        self.extensions = dict(extensions or {})


class Unauthorized(ProblemError):
    """No valid credentials were presented."""

    status, slug, title = 401, "unauthorized", "Unauthorized"


class Forbidden(ProblemError):
    """The credentials are valid but do not allow this."""

    status, slug, title = 403, "forbidden", "Forbidden"


class NotFound(ProblemError):
    """The resource does not exist (or the caller may not know it does)."""

    status, slug, title = 404, "not-found", "Not Found"


class Conflict(ProblemError):
    """The request conflicts with the current state of the resource."""

    status, slug, title = 409, "conflict", "Conflict"


class ValidationFailed(ProblemError):
    """Input failed validation; `errors` lists each failure."""

    status, slug, title = 422, "validation-error", "Validation Error"

    def __init__(self, errors: list[dict[str, Any]], detail: str | None = None) -> None:
        super().__init__(detail or "The request is invalid.", extensions={"errors": errors})


class PayloadTooLarge(ProblemError):
    """The request body is larger than this service accepts."""

    status, slug, title = 413, "payload-too-large", "Payload Too Large"


#: Seconds a 503 asks the client to wait: a service is ready again within 3 s of its
#: dependency coming back (API.md, "Service availability").
RETRY_AFTER_SECONDS = "1"


class ServiceUnavailable(ProblemError):
    """A dependency of this service is unavailable for now."""

    status, slug, title = 503, "service-unavailable", "Service Unavailable"
    default_detail = "A dependency of this service is unavailable right now."
    default_headers: ClassVar[Mapping[str, str]] = {"Retry-After": RETRY_AFTER_SECONDS}


@dataclass(slots=True)
class Problem:
    """A problem document ready to be rendered."""

    status: int
    slug: str
    title: str
    detail: str | None = None
    instance: str | None = None
    trace_id: str | None = None
    extensions: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, base_uri: str = PROBLEM_BASE_URI) -> dict[str, Any]:
        """Render as the RFC 9457 JSON object."""
        body: dict[str, Any] = {
            "type": base_uri + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail if self.detail is not None else self.title,
        }
        if self.instance is not None:
            body["instance"] = self.instance
        body["trace_id"] = self.trace_id
        body.update(self.extensions)
        return body


def problem_from_exception(
    exc: BaseException, error_map: Mapping[type[BaseException], ProblemSpec]
) -> Problem | None:
    """Find the problem for an exception: a ProblemError, or a class in the error map."""
    if isinstance(exc, ProblemError):
        return Problem(exc.status, exc.slug, exc.title, exc.detail, extensions=exc.extensions)
    for cls in type(exc).__mro__:
        spec = error_map.get(cls)
        if spec is not None:
            detail = str(exc) or spec.title
            extensions = dict(spec.extensions(exc)) if spec.extensions else {}
            return Problem(spec.status, spec.slug, spec.title, detail, extensions=extensions)
    return None

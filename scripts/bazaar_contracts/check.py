"""Every contract document of a release against the current ones: the breaks, and a summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from .asyncapi import compare_asyncapi, events
from .change import Break
from .openapi import compare_openapi, operations
from .source import Documents


@dataclass(frozen=True)
class Outcome:
    """The breaking changes found, and what was compared."""

    breaks: list[Break]
    summary: str


def _count(documents: Documents, kind: str) -> int:
    count = operations if kind == "openapi" else events
    return sum(len(count(doc)) for name, doc in documents.items() if name.startswith(kind))


def compare(old: Documents, new: Documents) -> Outcome:
    """The breaking changes from the documents `old` to `new` (both keyed by path)."""
    breaks: list[Break] = []
    for name, document in sorted(old.items()):
        shown = PurePosixPath(name).name
        if name not in new:
            breaks.append(Break(shown, "document", "removed"))
        elif name.startswith("asyncapi/"):
            breaks += compare_asyncapi(shown, document, new[name])
        else:
            breaks += compare_openapi(shown, document, new[name])
    openapi_documents = sum(1 for name in new if name.startswith("openapi/"))
    summary = (
        f"{openapi_documents} OpenAPI documents, "
        f"{_count(old, 'openapi')} -> {_count(new, 'openapi')} operations; "
        f"{len(new) - openapi_documents} AsyncAPI document(s), "
        f"{_count(old, 'asyncapi')} -> {_count(new, 'asyncapi')} event types"
    )
    return Outcome(breaks, summary)

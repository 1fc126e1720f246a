"""The contract gate: what a change to Bazaar's OpenAPI and AsyncAPI documents breaks.

uv run python scripts/contracts_check.py [--base REV|FOLDER]
"""

from .asyncapi import compare_asyncapi
from .change import Break, Change, changes
from .check import Outcome, compare
from .openapi import compare_openapi
from .schema import Direction, Resolver
from .source import (
    Base,
    SourceError,
    read_directory,
    read_revision,
    resolve_base,
    write_baseline,
)

__all__ = [
    "Base",
    "Break",
    "Change",
    "Direction",
    "Outcome",
    "Resolver",
    "SourceError",
    "changes",
    "compare",
    "compare_asyncapi",
    "compare_openapi",
    "read_directory",
    "read_revision",
    "resolve_base",
    "write_baseline",
]

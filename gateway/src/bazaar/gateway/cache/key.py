"""Which requests the response cache serves, under which key, and what a write makes stale.

Only `/v1/products` and `/v1/products/<id>` with the id in its canonical form (lower-case,
hyphenated UUID, as catalog writes it and as events name it) are cached: another spelling
of the same id would be another entry that no event or write ever names, so it is passed
through (`fwd=bypass`). So is a product read with a query (catalog reads none) and a list
read with a parameter catalog's list route does not read (`LIST_PARAMETERS`): otherwise
made-up parameters (`?utm=<random>`) would each make an entry of the same answer, without
bound. The key is the raw path plus the query parameters sorted by name (the values of one
name keep their order: catalog reads the last of a repeated parameter), hashed so that a
long query costs a fixed-size key.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

#: The path the lists are served on, and the prefix of every product path.
LISTS_PATH = "/v1/products"
_PRODUCT_PREFIX = LISTS_PATH + "/"
#: The group of every list entry (product groups are the product ids).
LISTS = "lists"
#: The query parameters catalog's list route reads (services/catalog `api/products.py`
#: `list_products`, its page from `bazaar.shared.pagination.page_params`).
LIST_PARAMETERS = frozenset(
    {"limit", "cursor", "q", "min_price_cents", "max_price_cents", "in_stock"}
)
_CANONICAL_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class Target:
    """A cacheable resource: its group (what an invalidation names) and its entry's key."""

    group: str
    key: str


def is_product_path(path: str) -> bool:
    """Whether a (decoded) path is under `/v1/products`: the cache has a say in its requests.
    Decoded, as the gateway routes it and catalog reads it: a write to `/v1/product%73` is a
    write to the products all the same."""
    return path == LISTS_PATH or path.startswith(_PRODUCT_PREFIX)


def target_of(raw_path: str, raw_query: str) -> Target | None:
    """The cacheable resource a read names, or None (not cached: bypass)."""
    if raw_path == LISTS_PATH:
        pairs = parse_qsl(raw_query, keep_blank_values=True)
        if any(name not in LIST_PARAMETERS for name, _ in pairs):
            return None
        group = LISTS
    elif raw_path.startswith(_PRODUCT_PREFIX) and not raw_query:
        product = raw_path[len(_PRODUCT_PREFIX) :]
        if not _CANONICAL_ID.fullmatch(product):
            return None
        group = product
    else:
        return None
    return Target(group, _digest(raw_path, raw_query))


def written_groups(path: str) -> list[str]:
    """The groups a write to this (decoded) product path makes stale: every list, and the
    product it names (in canonical form, however the client spelt or encoded it) if any."""
    groups = [LISTS]
    if path.startswith(_PRODUCT_PREFIX):
        segment = path[len(_PRODUCT_PREFIX) :].split("/", 1)[0]
        try:
            groups.append(str(uuid.UUID(segment)))
        except ValueError:
            pass  # no product has that id: nothing of it can be cached
    return groups


def normalised_query(raw_query: str) -> str:
    """The query with its parameters decoded, stably sorted by name and encoded again."""
    if not raw_query:
        return ""
    pairs = parse_qsl(raw_query, keep_blank_values=True)
    pairs.sort(key=lambda pair: pair[0])  # stable: one name's values keep their order
    return urlencode(pairs)


def _digest(raw_path: str, raw_query: str) -> str:
    text = f"{raw_path}?{normalised_query(raw_query)}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

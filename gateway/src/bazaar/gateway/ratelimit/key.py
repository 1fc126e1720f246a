"""Turn client-supplied strings (addresses, subjects, usernames) into safe counter keys."""

from __future__ import annotations

import functools
import hashlib
import re

# Short, plain keys stay readable in Redis; '#' is outside this set, so a hashed key can
# never equal a plain one.
_PLAIN = re.compile(r"[A-Za-z0-9._:@\[\]-]{1,64}")


@functools.lru_cache(maxsize=16_384)  # the same few keys come back on every request
def safe_key(key: str) -> str:
    """Return `key` if it is short printable ASCII, else `#` and its sha256 hex digest."""
    if _PLAIN.fullmatch(key):
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return "#" + digest

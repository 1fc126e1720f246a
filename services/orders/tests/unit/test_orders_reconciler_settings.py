"""The reconciler's settings: leases outlast catalog calls; requests keep catalog connections."""

from __future__ import annotations

import pytest

from bazaar.orders.config import OrdersSettings


def test_a_reconciler_concurrency_that_would_take_every_catalog_connection_is_refused() -> None:
    with pytest.raises(ValueError, match="reconcile_concurrency"):
        OrdersSettings(
            _env_file=None,  # type: ignore[call-arg]
            catalog_pool_size=20,
            reconcile_concurrency=20,
        )

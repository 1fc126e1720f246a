"""Topic matching as RabbitMQ's topic exchange does it: what a subscription receives."""

from __future__ import annotations

import pytest

from bazaar.shared.messaging.consumer import topic_matches


@pytest.mark.parametrize(
    ("binding", "routing_key", "routed"),
    [
        ("orders.order.cancelled", "orders.order.cancelled", True),
        ("orders.order.cancelled", "orders.order.placed", False),
        ("orders.order.*", "orders.order.placed", True),
        ("orders.*", "orders.order.placed", False),  # `*` is exactly one word
        ("orders.#", "orders.order.placed", True),
        ("orders.#", "orders", True),  # `#` is zero or more words
        ("#", "catalog.stock.released", True),
        ("catalog.#.released", "catalog.stock.released", True),
        ("catalog.#.released", "catalog.released", True),
        ("catalog.#.released", "catalog.stock.reserved", False),
        ("*.stock.*", "catalog.stock.released", True),
        ("*.stock.*", "stock.released", False),
        ("catalog.stock", "catalog.stock.released", False),  # no prefix matching
    ],
)
def test_a_binding_routes_the_keys_rabbitmq_would_route(
    binding: str, routing_key: str, routed: bool
) -> None:
    assert topic_matches(binding, routing_key) is routed

"""Events over RabbitMQ: topology, outbox relay, idempotent consumers, retries and parking."""

from bazaar.shared.messaging.connection import Broker
from bazaar.shared.messaging.consumer import Consumer, ConsumerSettings, Handler, Subscription
from bazaar.shared.messaging.envelope import decode_event, encode_event
from bazaar.shared.messaging.inbox import (
    PROCESSED_MESSAGE_DDL,
    PROCESSED_MESSAGE_DROP_DDL,
    claim_message,
)
from bazaar.shared.messaging.metrics import MessagingMetrics
from bazaar.shared.messaging.parking import ParkedMessage, list_parked, redrive_parked
from bazaar.shared.messaging.relay import OutboxRelay, RelaySettings
from bazaar.shared.messaging.runtime import Messaging, MessagingSettings, messaging_settings
from bazaar.shared.messaging.topology import EVENTS_EXCHANGE, QueueNames

__all__ = [
    "EVENTS_EXCHANGE",
    "PROCESSED_MESSAGE_DDL",
    "PROCESSED_MESSAGE_DROP_DDL",
    "Broker",
    "Consumer",
    "ConsumerSettings",
    "Handler",
    "Messaging",
    "MessagingMetrics",
    "MessagingSettings",
    "OutboxRelay",
    "ParkedMessage",
    "QueueNames",
    "RelaySettings",
    "Subscription",
    "claim_message",
    "decode_event",
    "encode_event",
    "list_parked",
    "messaging_settings",
    "redrive_parked",
]

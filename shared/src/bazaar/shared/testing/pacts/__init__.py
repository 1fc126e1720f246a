"""Consumer-driven contracts (Pact) in Bazaar's tests: mock providers, pact files, verification.

Pact's library (the Rust FFI bundled with pact-python) serves mock providers and replays
pacts against real providers, blocking the thread that calls it, while Bazaar's tests run on
one event loop. So a blocking Pact call runs in a worker thread while the loop goes on serving
the provider under test and the verifier's hooks (provider states, messages), and a callback
Pact makes from its thread (a message for a consumer) runs its async work back on the loop.

- `consumer`: what a consumer's tests use (a pact, its mock provider, its messages delivered
  to the real consumer code);
- `provider`: what a provider's tests use (replaying pacts against the real provider);
- `files`: where pacts live (contracts/pacts/, build/pacts/) and the drift check.
"""

from __future__ import annotations

import os

# Pact's library reports each mock server and verification to its makers' analytics service
# unless PACT_DO_NOT_TRACK is set, and it reads the variable each time it would report, so it
# must be set before the first `Pact` or `Verifier` is used. The bazaar pytest plugin sets it
# at configure time, `make` and CI in the environment; this covers a process that uses these
# helpers without any of them. setdefault: a value someone set on purpose stays.
os.environ.setdefault("PACT_DO_NOT_TRACK", "true")

from bazaar.shared.testing.pacts.consumer import (
    ROUTING_KEY,
    apply_event,
    deliver,
    mock_provider,
    new_pact,
)
from bazaar.shared.testing.pacts.files import (
    BUILD_PACTS,
    PACTS,
    UPDATE_PACTS_ENV,
    check_pact,
    consumer_pact_files,
    interactions,
    pacts_of_provider,
    write_pact,
)
from bazaar.shared.testing.pacts.provider import (
    MESSAGE_PATH,
    STATE_PATH,
    MessageMaker,
    StateSetup,
    Verification,
    outbox_message,
    verify_provider,
)

__all__ = [
    "BUILD_PACTS",
    "MESSAGE_PATH",
    "PACTS",
    "ROUTING_KEY",
    "STATE_PATH",
    "UPDATE_PACTS_ENV",
    "MessageMaker",
    "StateSetup",
    "Verification",
    "apply_event",
    "check_pact",
    "consumer_pact_files",
    "deliver",
    "interactions",
    "mock_provider",
    "new_pact",
    "outbox_message",
    "pacts_of_provider",
    "verify_provider",
    "write_pact",
]

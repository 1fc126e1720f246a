"""contracts/pacts/ holds exactly the pacts the consumers' tests write: none orphaned.

Each consumer's pact tests, `services/<consumer>/tests/pact/test_<consumer>_<provider>_pact.py`,
write `<consumer>-<provider>.json` (their drift check refuses any other name) and fail until
the committed copy is the one they wrote. A committed pact no test writes any more (a
consumer that stopped calling a provider, a renamed test) would still be verified against
its provider for ever: it fails here until it is removed. (Here, in orders' tests, as one
place for all of them: orders is both a consumer and a provider.)
"""

from __future__ import annotations

from bazaar.shared.testing.pacts import PACTS, consumer_pact_files


def test_the_committed_pacts_are_those_the_consumers_tests_write() -> None:
    written = set(consumer_pact_files())
    committed = {pact.name for pact in PACTS.glob("*.json")}

    assert written, "no consumer pact test found"
    assert committed - written == set(), "committed pacts no consumer test writes (remove them)"
    assert written - committed == set(), "pacts the tests write but nobody committed (make pacts)"

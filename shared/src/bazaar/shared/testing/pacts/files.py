"""Where pacts live, and the drift check between the pacts the tests write and the committed.

Consumer tests write their pacts into build/pacts/ (never committed) and compare each with
its committed copy in contracts/pacts/: a change to a consumer's contract fails its test
until it is reviewed and committed. `make pacts` (BAZAAR_UPDATE_PACTS=1) runs the consumer
tests with the committed copies replaced by what they write.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path

from pact import Pact


def _repo_root() -> Path:
    """The checkout these helpers run from: the nearest folder above holding contracts/."""
    here = Path(__file__).resolve()
    for folder in here.parents:
        if (folder / "contracts").is_dir() and (folder / "services").is_dir():
            return folder
    raise RuntimeError(f"{here} is not inside a Bazaar checkout (no contracts/ above it)")


ROOT = _repo_root()
#: The committed pacts, reviewed like any contract.
PACTS = ROOT / "contracts" / "pacts"
#: Where the consumer tests write the pacts they generate.
BUILD_PACTS = ROOT / "build" / "pacts"
#: Set to 1 (as `make pacts` does), the drift check makes the committed pact the generated one.
UPDATE_PACTS_ENV = "BAZAAR_UPDATE_PACTS"
#: A consumer's pact tests, `services/<consumer>/tests/pact/test_<consumer>_<provider>_pact.py`,
#: write `<consumer>-<provider>.json` and no other pact.
CONSUMER_TEST = re.compile(r"^test_(?P<consumer>[a-z]+)_(?P<provider>[a-z]+)_pact\.py$")


def consumer_pact_files(root: Path = ROOT) -> dict[str, Path]:
    """Each pact file the consumers' tests write (its name), and the test module writing it."""
    written: dict[str, Path] = {}
    for test in sorted(root.glob("services/*/tests/pact/test_*_pact.py")):
        named = CONSUMER_TEST.match(test.name)
        if named is None or named["consumer"] != test.parents[2].name:
            raise ValueError(f"{test} is named as no consumer's pact test")
        written[f"{named['consumer']}-{named['provider']}.json"] = test
    return written


def pacts_of_provider(provider: str) -> list[Path]:
    """Every committed pact naming `provider` as its provider."""
    return sorted(PACTS.glob(f"*-{provider}.json"))


def interactions(pacts: list[Path]) -> list[str]:
    """The description of each interaction of `pacts` (files)."""
    return [
        str(interaction["description"])
        for pact in pacts
        for interaction in json.loads(pact.read_text("utf-8"))["interactions"]
    ]


def write_pact(*pacts: Pact, directory: Path = BUILD_PACTS) -> Path:
    """Write pacts of one consumer and provider (say, its HTTP and its message interactions)
    into their one file in `directory`, replacing it; return the file."""
    first, *others = pacts
    first.write_file(directory, overwrite=True)
    for other in others:
        other.write_file(directory, overwrite=False)  # merged into the same file
    return directory / f"{first.consumer}-{first.provider}.json"


def check_pact(
    generated: Path, *, written_by: str | Path, committed_dir: Path = PACTS
) -> str | None:
    """How the pact a consumer's test module (`written_by`, its __file__) generated differs
    from the committed one; None if it does not.

    Like the OpenAPI drift check, a test fails on the answer: a change to a consumer's
    contract is reviewed and committed, never picked up silently. With BAZAAR_UPDATE_PACTS=1
    the committed file is made the generated one first (`make pacts`; review it with
    `git diff contracts/pacts`). Raises ValueError if the module writes a pact its name does
    not promise (see `consumer_pact_files`).
    """
    named = CONSUMER_TEST.match(Path(written_by).name)
    promised = f"{named['consumer']}-{named['provider']}.json" if named else None
    if generated.name != promised:
        raise ValueError(f"{Path(written_by).name} wrote {generated.name}, not {promised}")
    committed = committed_dir / generated.name
    fresh = generated.read_text("utf-8")
    stored = committed.read_text("utf-8") if committed.exists() else ""
    if stored and json.loads(stored) == json.loads(fresh):
        return None
    if os.environ.get(UPDATE_PACTS_ENV) == "1":
        committed_dir.mkdir(parents=True, exist_ok=True)
        committed.write_text(fresh, "utf-8")
        return None
    diff = difflib.unified_diff(
        stored.splitlines(), fresh.splitlines(), "committed", "generated", lineterm="", n=2
    )
    return (
        f"{committed} is not the pact the tests wrote ({generated}); if the change is meant, "
        f"run `make pacts` (or set {UPDATE_PACTS_ENV}=1), review and commit it:\n"
        + "\n".join(list(diff)[:80])
    )

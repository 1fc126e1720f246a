"""The project's own files: the GitHub workflow (valid, and the same run as .ci/run with the
infrastructure the tests look for), pre-commit hooks, Dependabot, licence and changelog."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft7Validator

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def _yaml(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text("utf-8"))
    if True in loaded:  # YAML 1.1 reads the key `on` as true; GitHub reads it as "on"
        loaded["on"] = loaded.pop(True)
    return loaded


def _schema_errors(document: Any, schema_file: str) -> list[str]:
    schema = json.loads((SCHEMAS / schema_file).read_text("utf-8"))
    validator = Draft7Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    return _yaml(WORKFLOW)


@pytest.fixture(scope="module")
def job(workflow: dict[str, Any]) -> dict[str, Any]:
    (only,) = workflow["jobs"].values()
    return dict(only)


# --- the CI workflow ----------------------------------------------------------------------


def test_the_workflow_is_valid_against_the_github_workflow_schema(
    workflow: dict[str, Any],
) -> None:
    assert _schema_errors(workflow, "github-workflow.json") == []


def test_the_vendored_schema_refuses_a_broken_workflow(workflow: dict[str, Any]) -> None:
    broken = {**workflow, "jobs": {"test": {"runs-on": "x", "steps": [{"uses": "a", "run": "b"}]}}}
    assert _schema_errors(broken, "github-workflow.json")  # a step is a `uses` or a `run`


def test_the_workflow_runs_what_ci_runs(workflow: dict[str, Any], job: dict[str, Any]) -> None:
    assert job["steps"][-1]["run"] == "bash .ci/run"
    assert "\nmake test\n" in (REPO / ".ci" / "run").read_text()
    assert {"push", "pull_request"} <= set(workflow["on"])
    assert workflow["permissions"] == {"contents": "read"}
    assert job["timeout-minutes"] <= 90


def test_the_workflow_checks_out_the_release_tags_and_the_project_python(
    job: dict[str, Any],
) -> None:
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # tags: the contract gate's base
    python = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == f">={python['with']['python-version']},<3.12"


def test_the_workflow_has_postgresql_15_rabbitmq_3_and_redis_7_with_health_checks(
    job: dict[str, Any],
) -> None:
    images = {name: service["image"] for name, service in job["services"].items()}
    assert images == {"postgres": "postgres:15", "rabbitmq": "rabbitmq:3.13", "redis": "redis:7"}
    for service in job["services"].values():
        assert "--health-cmd" in service["options"]  # steps wait until each one answers


def _infrastructure_variables() -> set[str]:
    """The BAZAAR_TEST_* variables the test plugin reads to find its servers."""
    testing = REPO / "shared" / "src" / "bazaar" / "shared" / "testing"
    found = {
        name
        for path in testing.glob("*.py")
        for name in re.findall(r'env_var="(BAZAAR_TEST_[A-Z_]+)"', path.read_text())
    }
    assert found, "no BAZAAR_TEST_* variable found: has bazaar.shared.testing moved?"
    return found


def test_the_workflow_names_every_server_the_tests_look_for(job: dict[str, Any]) -> None:
    named = {k: v for k, v in job["env"].items() if k.startswith("BAZAAR_TEST_")}
    assert set(named) == _infrastructure_variables()
    published = {
        int(port.split(":")[0]): name
        for name, service in job["services"].items()
        for port in service["ports"]
    }
    schemes = {"postgresql": "postgres", "amqp": "rabbitmq", "redis": "redis"}
    for url in named.values():
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1"
        assert published[parts.port or 0] == schemes[parts.scheme], url


# --- pre-commit -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hooks() -> dict[str, dict[str, Any]]:
    config = _yaml(REPO / ".pre-commit-config.yaml")
    assert isinstance(config["repos"], list)
    found: dict[str, dict[str, Any]] = {}
    for repo in config["repos"]:
        assert repo["repo"] == "local"  # the workspace's locked tools, no second copy
        for hook in repo["hooks"]:
            # What pre-commit requires of a local hook.
            assert {"id", "name", "entry", "language"} <= set(hook), hook
            found[hook["id"]] = hook
    return found


def _makefile_recipe(target: str) -> list[str]:
    text = (REPO / "Makefile").read_text()
    body = text.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in body.splitlines()[1:] if line.startswith("\t")]


def test_the_hooks_run_ruff_format_and_mypy_as_make_does(hooks: dict[str, Any]) -> None:
    assert {"ruff-check", "ruff-format", "mypy"} <= set(hooks)
    for hook in hooks.values():
        assert hook["language"] == "system"
        assert re.match(r"^(env \S+ )?uv run --locked ", hook["entry"]), hook["entry"]
    lint = _makefile_recipe("lint")
    assert (
        any("ruff check" in line for line in lint) and "ruff check" in hooks["ruff-check"]["entry"]
    )
    assert (
        any("ruff format" in line for line in lint)
        and "ruff format" in hooks["ruff-format"]["entry"]
    )
    assert "mypy --strict" in hooks["mypy"]["entry"]
    assert "MYPYPATH=scripts" in hooks["mypy"]["entry"]


def _type_checked() -> list[str]:
    """Every path `make typecheck` gives mypy (SRC and the scripts' packages)."""
    makefile = (REPO / "Makefile").read_text()
    src = re.search(r"^SRC := (.+)$", makefile, re.MULTILINE)
    assert src is not None
    paths = src.group(1).split()
    commands: list[str] = []
    for line in _makefile_recipe("typecheck"):  # a line ending in \\ goes on in the next
        if commands and commands[-1].endswith("\\"):
            commands[-1] = commands[-1][:-1] + " " + line
        else:
            commands.append(line)
    for command in commands:
        paths += [p for p in command.split("--strict", 1)[1].split() if p != "$(SRC)"]
    return paths


def test_the_mypy_hook_covers_every_tree_make_type_checks(hooks: dict[str, Any]) -> None:
    pattern = re.compile(hooks["mypy"]["files"])
    for path in _type_checked():
        sample = REPO / path if path.endswith(".py") else next((REPO / path).rglob("*.py"))
        assert pattern.search(sample.relative_to(REPO).as_posix()), sample
    assert not pattern.search("shared/tests/test_settings.py")
    assert not pattern.search("tests/contracts/test_breaking_changes.py")


def test_the_contract_gate_hook_runs_on_contract_changes(hooks: dict[str, Any]) -> None:
    gate = hooks["contracts-check"]
    assert gate["entry"].endswith("python scripts/contracts_check.py")
    assert gate["pass_filenames"] is False
    assert re.search(gate["files"], "contracts/openapi/orders.json")
    assert re.search(gate["files"], "contracts/asyncapi/events.yaml")


# --- Dependabot -------------------------------------------------------------------------


def test_dependabot_is_valid_and_updates_the_uv_lock_and_the_actions() -> None:
    config = _yaml(REPO / ".github" / "dependabot.yml")
    assert _schema_errors(config, "dependabot-2.0.json") == []
    ecosystems = {u["package-ecosystem"]: u["directory"] for u in config["updates"]}
    assert set(ecosystems) == {"uv", "github-actions"}
    assert (REPO / ecosystems["uv"].lstrip("/") / "uv.lock").is_file()
    assert ecosystems["github-actions"] == "/" and WORKFLOW.is_file()


def test_the_vendored_dependabot_schema_refuses_an_unknown_ecosystem() -> None:
    config = {"version": 2, "updates": [{"package-ecosystem": "uvx", "directory": "/",
                                         "schedule": {"interval": "weekly"}}]}  # fmt: skip
    assert _schema_errors(config, "dependabot-2.0.json")


# --- licence and changelog ---------------------------------------------------------------


def _pyprojects() -> list[Path]:
    root = REPO / "pyproject.toml"
    members = tomllib.loads(root.read_text())["tool"]["uv"]["workspace"]["members"]
    found = [root] + [p / "pyproject.toml" for m in members for p in sorted(REPO.glob(m))]
    assert len(found) == 6  # the root, shared, three services, the gateway
    return found


def test_every_package_is_mit_licensed() -> None:
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 Bazaar contributors\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text
    for path in _pyprojects():
        project = tomllib.loads(path.read_text())["project"]
        assert project.get("license") == "MIT", path


KINDS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_the_changelog_keeps_a_changelog() -> None:
    text = (REPO / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n")
    assert "https://keepachangelog.com/en/1.1.0/" in text
    versions = re.findall(r"^## \[([^\]]+)\](?: - (\S+))?$", text, re.MULTILINE)
    assert versions[0] == ("Unreleased", "")
    released = versions[1:]
    assert released, "no release yet"
    for version, date in released:
        assert re.fullmatch(r"\d+\.\d+\.\d+", version) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", date)
    keys = [tuple(map(int, v.split("."))) for v, _ in released]
    assert keys == sorted(keys, reverse=True), "newest first"
    assert set(re.findall(r"^### (.+)$", text, re.MULTILINE)) <= KINDS


def test_the_newest_release_has_its_version_and_its_contract_baseline() -> None:
    text = (REPO / "CHANGELOG.md").read_text()
    newest = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - ", text, re.MULTILINE)[0]
    assert (REPO / "contracts" / "released" / f"v{newest}").is_dir(), (
        f"run: uv run python scripts/contracts_check.py --release v{newest}"
    )
    versions = {tomllib.loads(p.read_text())["project"]["version"] for p in _pyprojects()}
    assert len(versions) == 1  # one version for the whole suite
    (current,) = versions
    as_tuple = tuple(map(int, current.split(".")))
    assert as_tuple >= tuple(map(int, newest.split(".")))


def test_contributing_gives_the_two_commands_and_a_layout_that_exists() -> None:
    text = (REPO / "CONTRIBUTING.md").read_text()
    assert "make up " in text and "make test " in text
    layout = text.split("## Layout", 1)[1].split("```", 2)[1]
    for line in layout.strip().splitlines():
        path = line.split()[0].replace("<name>", "catalog")
        assert (REPO / path).exists(), path

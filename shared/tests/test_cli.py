"""The shared command line: the committed OpenAPI document, create-db, migrate, openapi."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import pytest
from fastapi import APIRouter, FastAPI
from pydantic_settings import SettingsConfigDict

from bazaar.shared.app import create_service_app
from bazaar.shared.cli import ServiceCommands, openapi_document, run
from bazaar.shared.settings import ServiceSettings
from bazaar.shared.testing.infrastructure import Resolved
from bazaar.shared.testing.postgres import DatabaseFactory, with_database

CATALOG_TEMPLATE = Path(__file__).parents[2] / "services/catalog/migrations/script.py.mako"
ENV_PY = "from bazaar.shared.migrations import run_migrations\n\nrun_migrations()\n"
REVISION = '''"""Create the gadget table."""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE gadget (id int PRIMARY KEY)")


def downgrade() -> None:
    op.execute("DROP TABLE gadget")
'''


class GadgetSettings(ServiceSettings):
    """Settings of the throwaway service the command line runs for."""

    model_config = SettingsConfigDict(env_prefix="GADGETSVC_", env_file=None, extra="ignore")
    service_name: ClassVar[str] = "gadgets"


router = APIRouter()


@router.get("/gadgets/{gadget_id}")
async def get_gadget(gadget_id: str) -> dict[str, str]:
    """Return one gadget."""
    return {"id": gadget_id}


@router.post("/gadgets", status_code=201)
async def add_gadget(body: dict[str, Any]) -> dict[str, Any]:
    """Add a gadget."""
    return body


def make_settings(
    database_url: str = "postgresql://postgres@127.0.0.1:5432/gadgets",
) -> GadgetSettings:
    return GadgetSettings(  # type: ignore[call-arg]
        _env_file=None,
        environment="test",
        database_url=database_url,
        jwt_jwks_url="http://127.0.0.1:8001/.well-known/jwks.json",
        jwt_issuer="https://auth.bazaar.test",
    )


def make_app(settings: GadgetSettings) -> FastAPI:
    return create_service_app(
        settings,
        title="Gadgets",
        description="Gadgets — a throwaway service for the command line's tests.",
        routers=[router],
        error_map={},
    )


def commands(database_url: str, migrations_dir: Path) -> ServiceCommands:
    return ServiceCommands(
        name="gadgets",
        settings=lambda: make_settings(database_url),
        app=make_app,
        migrations_dir=migrations_dir,
    )


async def drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def test_the_openapi_document_is_stable_sorted_json_with_a_trailing_newline() -> None:
    first = openapi_document(make_app(make_settings()))
    second = openapi_document(make_app(make_settings()))

    assert first == second
    assert first.endswith("}\n")
    assert not first.endswith("\n\n")
    document = json.loads(first)
    assert first == json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert "—" in first  # written as UTF-8, not as \u escapes
    assert document["info"]["title"] == "Gadgets"
    assert set(document["paths"]) == {"/gadgets/{gadget_id}", "/gadgets"}


async def test_create_db_creates_the_database_once(
    postgres_server: Resolved,
    test_run_id: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = f"bazaar_test_{test_run_id}_cli_create"
    gadgets = commands(with_database(postgres_server.url, name), tmp_path)
    try:
        # run() calls asyncio.run, as the real command line does: give it a thread of its own.
        assert await asyncio.to_thread(run, gadgets, ["create-db"]) == 0
        assert capsys.readouterr().out == "gadgets: database created\n"

        assert await asyncio.to_thread(run, gadgets, ["create-db"]) == 0
        assert capsys.readouterr().out == "gadgets: database already exists\n"

        conn = await asyncpg.connect(with_database(postgres_server.url, name))
        try:
            assert await conn.fetchval("SELECT current_database()") == name
        finally:
            await conn.close()
    finally:
        await drop_database(postgres_server.url, name)


async def test_migrate_and_downgrade_run_the_service_migrations(
    database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    url = await database_factory.create("cli_migrate")
    (tmp_path / "versions").mkdir()
    (tmp_path / "env.py").write_text(ENV_PY)
    shutil.copyfile(CATALOG_TEMPLATE, tmp_path / "script.py.mako")
    (tmp_path / "versions" / "20260101_0000_0001_gadget.py").write_text(REVISION)
    gadgets = commands(url, tmp_path)

    async def has_gadget_table() -> bool:
        conn = await asyncpg.connect(url)
        try:
            return bool(await conn.fetchval("SELECT to_regclass('public.gadget') IS NOT NULL"))
        finally:
            await conn.close()

    assert await asyncio.to_thread(run, gadgets, ["migrate"]) == 0
    assert await has_gadget_table()
    assert await asyncio.to_thread(run, gadgets, ["downgrade", "base"]) == 0
    assert not await has_gadget_table()


def test_openapi_writes_the_document_to_the_output_file(tmp_path: Path) -> None:
    output = tmp_path / "contracts" / "gadgets.json"
    output.parent.mkdir()

    assert run(commands(make_settings().dsn(), tmp_path), ["openapi", "--output", str(output)]) == 0

    assert output.read_text() == openapi_document(make_app(make_settings()))


def test_openapi_without_output_prints_the_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(commands(make_settings().dsn(), tmp_path), ["openapi"]) == 0

    assert capsys.readouterr().out == openapi_document(make_app(make_settings()))


def test_seed_without_demo_data_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(commands(make_settings().dsn(), tmp_path), ["seed"]) == 0

    assert capsys.readouterr().out == "gadgets: no demo data\n"


def test_an_unknown_command_exits_with_usage_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as excinfo:
        run(commands(make_settings().dsn(), tmp_path), ["launch-rockets"])

    assert excinfo.value.code == 2
    assert "usage: bazaar-gadgets" in capsys.readouterr().err

"""The Alembic glue: upgrade and downgrade over asyncpg, dated revision files, URL conversion."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from alembic import command

from bazaar.shared import migrations
from bazaar.shared.testing.postgres import DatabaseFactory

CATALOG_TEMPLATE = Path(__file__).parents[2] / "services/catalog/migrations/script.py.mako"

ENV_PY = '''"""Alembic environment of the throwaway test migrations."""

from bazaar.shared.migrations import run_migrations

run_migrations()
'''

REVISION = '''"""{message}

Revision ID: {revision}
Revises: {down}
"""

from alembic import op

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    {upgrade}


def downgrade() -> None:
    {downgrade}
'''


def write_revision(
    versions: Path, revision: str, down: str | None, upgrade: str, downgrade: str
) -> None:
    text = REVISION.format(
        message=f"revision {revision}",
        revision=revision,
        down=down,
        upgrade=upgrade,
        downgrade=downgrade,
    )
    (versions / f"20260101_0000_{revision}_revision_{revision}.py").write_text(text)


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Path:
    """A two-revision migrations directory laid out as a service's."""
    root = tmp_path / "migrations"
    versions = root / "versions"
    versions.mkdir(parents=True)
    (root / "env.py").write_text(ENV_PY)
    shutil.copyfile(CATALOG_TEMPLATE, root / "script.py.mako")
    write_revision(
        versions,
        "0001",
        None,
        'op.execute("CREATE TABLE alpha (id int PRIMARY KEY)")',
        'op.execute("DROP TABLE alpha")',
    )
    write_revision(
        versions,
        "0002",
        "0001",
        'op.execute("CREATE TABLE beta (id int PRIMARY KEY)")',
        'op.execute("DROP TABLE beta")',
    )
    return root


@pytest.fixture
async def fresh_url(database_factory: DatabaseFactory) -> str:
    return await database_factory.create(f"mig_{uuid.uuid4().hex[:8]}")


async def tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def versions_recorded(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [
            r["version_num"] for r in await conn.fetch("SELECT version_num FROM alembic_version")
        ]
    finally:
        await conn.close()


async def test_upgrade_downgrade_and_upgrade_again_on_a_fresh_database(
    migrations_dir: Path, fresh_url: str
) -> None:
    assert await tables(fresh_url) == set()

    await asyncio.to_thread(migrations.upgrade, migrations_dir, fresh_url)
    assert await tables(fresh_url) == {"alpha", "beta", "alembic_version"}
    assert await versions_recorded(fresh_url) == ["0002"]

    await asyncio.to_thread(migrations.downgrade, migrations_dir, fresh_url)
    assert await tables(fresh_url) == {"alembic_version"}
    assert await versions_recorded(fresh_url) == []

    await asyncio.to_thread(migrations.upgrade, migrations_dir, fresh_url)
    assert await tables(fresh_url) == {"alpha", "beta", "alembic_version"}
    assert await versions_recorded(fresh_url) == ["0002"]


async def test_upgrade_and_downgrade_stop_at_the_revision_asked_for(
    migrations_dir: Path, fresh_url: str
) -> None:
    await asyncio.to_thread(migrations.upgrade, migrations_dir, fresh_url, "0001")
    assert await tables(fresh_url) == {"alpha", "alembic_version"}

    await asyncio.to_thread(migrations.upgrade, migrations_dir, fresh_url)
    await asyncio.to_thread(migrations.downgrade, migrations_dir, fresh_url, "0001")
    assert await tables(fresh_url) == {"alpha", "alembic_version"}
    assert await versions_recorded(fresh_url) == ["0001"]


async def test_a_failing_revision_leaves_no_half_applied_change(
    migrations_dir: Path, fresh_url: str
) -> None:
    write_revision(
        migrations_dir / "versions",
        "0003",
        "0002",
        'op.execute("CREATE TABLE gamma (id int)")\n'
        '    op.execute("SELECT no_such_column FROM gamma")',
        'op.execute("DROP TABLE gamma")',
    )

    with pytest.raises(Exception, match="no_such_column"):
        await asyncio.to_thread(migrations.upgrade, migrations_dir, fresh_url)

    assert "gamma" not in await tables(fresh_url)
    assert await versions_recorded(fresh_url) == ["0002"]


@pytest.mark.slow
async def test_current_prints_the_database_revision(migrations_dir: Path, fresh_url: str) -> None:
    await asyncio.to_thread(migrations.upgrade, migrations_dir, fresh_url)

    # Alembic binds its stdout when it is imported, so watch a process of its own, as the
    # `current` command of the CLI would run.
    script = "import sys; from pathlib import Path; from bazaar.shared import migrations; "
    script += "migrations.current(Path(sys.argv[1]), sys.argv[2])"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        str(migrations_dir),
        fresh_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)

    assert process.returncode == 0, err.decode()
    assert out.decode().strip() == "0002 (head)"


async def test_revision_writes_a_date_prefixed_file_that_migrates(
    migrations_dir: Path, fresh_url: str
) -> None:
    versions = migrations_dir / "versions"
    before = set(versions.glob("*.py"))
    started = datetime.now(UTC).replace(second=0, microsecond=0)

    await asyncio.to_thread(migrations.revision, migrations_dir, fresh_url, "add gamma table")

    finished = datetime.now(UTC)
    [created] = set(versions.glob("*.py")) - before
    match = re.fullmatch(r"(\d{8}_\d{4})_([0-9a-f]+)_add_gamma_table\.py", created.name)
    assert match, created.name
    stamped = datetime.strptime(match[1], "%Y%m%d_%H%M").replace(tzinfo=UTC)
    assert started <= stamped <= finished + timedelta(minutes=1)
    text = created.read_text()
    assert f"revision: str = {match[2]!r}" in text
    assert "down_revision: str | None = '0002'" in text

    await asyncio.to_thread(migrations.upgrade, migrations_dir, fresh_url)
    assert await versions_recorded(fresh_url) == [match[2]]


async def test_offline_sql_generation_is_refused(migrations_dir: Path, fresh_url: str) -> None:
    config = migrations.alembic_config(migrations_dir, fresh_url)

    with pytest.raises(RuntimeError, match="offline"):
        await asyncio.to_thread(command.upgrade, config, "head", sql=True)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@db:5432/x", "postgresql+asyncpg://u:p@db:5432/x"),
        ("postgres://u:p@db:5432/x", "postgresql+asyncpg://u:p@db:5432/x"),
        ("postgresql+asyncpg://u:p@db:5432/x", "postgresql+asyncpg://u:p@db:5432/x"),
        ("postgresql://db/x?sslmode=require", "postgresql+asyncpg://db/x?sslmode=require"),
    ],
)
def test_sqlalchemy_url_names_the_asyncpg_dialect(url: str, expected: str) -> None:
    assert migrations.sqlalchemy_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:s3cret-pw@db/x",
        "postgresql+psycopg://u:s3cret-pw@db/x",
        "db:5432/x",
        "",
    ],
)
def test_sqlalchemy_url_refuses_a_non_postgres_url_without_echoing_it(url: str) -> None:
    with pytest.raises(ValueError, match=r"postgresql://") as excinfo:
        migrations.sqlalchemy_url(url)

    assert "s3cret-pw" not in str(excinfo.value)


def test_alembic_config_keeps_a_percent_encoded_password_intact(tmp_path: Path) -> None:
    config = migrations.alembic_config(tmp_path, "postgresql://u:p%40ss%25w@db/x")

    assert config.get_main_option("sqlalchemy.url") == "postgresql+asyncpg://u:p%40ss%25w@db/x"
    assert config.get_main_option("script_location") == str(tmp_path)


async def test_a_url_with_libpq_options_such_as_sslmode_migrates(
    migrations_dir: Path, fresh_url: str
) -> None:
    url = fresh_url + "?sslmode=disable&application_name=migrate"
    await asyncio.to_thread(migrations.upgrade, migrations_dir, url)
    assert await versions_recorded(fresh_url) == ["0002"]

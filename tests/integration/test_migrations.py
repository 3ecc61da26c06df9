"""The Alembic history builds exactly the schema of saga_store.tables, on every backend."""

from __future__ import annotations

import importlib.resources
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url

from saga_store import migrate
from saga_store.db import make_engine
from saga_store.errors import StoreError
from saga_store.tables import attempts, events, metadata, sagas
from tests import dbs

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAGA_TABLES = {"saga_sagas", "saga_attempts", "saga_events"}

#: a microsecond-precise time, written with a +02:00 offset where noted
MOMENT = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """The store's own engine (on SQLite: WAL, busy timeout, foreign keys on)."""
    engine = make_engine(db_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _tables(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def _version_rows(engine: Engine, table: str = migrate.VERSION_TABLE) -> list[str]:
    with engine.connect() as conn:
        query = sa.select(sa.column("version_num", sa.String)).select_from(sa.table(table))
        return list(conn.execute(query).scalars())


def _alembic_config(connection: Connection, script_location: Path = ROOT / "migrations") -> Config:
    """What `alembic` reads from alembic.ini, with our connection: env.py as the CLI runs it."""
    config = Config(attributes={"connection": connection})
    config.set_main_option("script_location", str(script_location))
    return config


def _diffs(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                # Alembic leaves its own version table out of the comparison only when it knows
                # the table's name.
                "version_table": migrate.VERSION_TABLE,
            },
        )
        # No filter: on all three backends every type, comment, index, unique constraint and
        # foreign key round-trips exactly.
        diffs: list[Any] = compare_metadata(context, metadata)
        return diffs


def _insert_saga(conn: Connection, saga_id: str, *, updated_at: datetime = MOMENT) -> None:
    conn.execute(
        sagas.insert().values(
            id=saga_id,
            mode="orchestrated",
            status="running",
            on_crash="resume",
            plan="{}",
            created_at=MOMENT,
            updated_at=updated_at,
            version=1,
        )
    )


def _insert_children(conn: Connection, saga_id: str) -> None:
    conn.execute(
        attempts.insert().values(
            saga_id=saga_id,
            step=0,
            step_name="reserve",
            kind="action",
            attempt=1,
            status="running",
            started_at=MOMENT,
        )
    )
    conn.execute(events.insert().values(saga_id=saga_id, at=MOMENT, kind="parked"))


# -- (a) the migrated schema is the metadata ---------------------------------------------------


def test_upgrade_from_empty_matches_the_metadata(engine: Engine) -> None:
    assert _tables(engine) == set()

    migrate.upgrade(engine)

    assert _tables(engine) == SAGA_TABLES | {migrate.VERSION_TABLE}
    assert _diffs(engine) == []


def test_alembic_check_finds_nothing_to_generate(engine: Engine) -> None:
    # The same comparison through env.py, with its hooks (version table, name filter, types)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        command.check(_alembic_config(conn))


def test_every_column_has_exactly_the_type_of_the_metadata(engine: Engine) -> None:
    # Stricter than compare_type, which takes MySQL's DATETIME for DATETIME(6): microseconds
    # would be lost without a diff.
    migrate.upgrade(engine)
    inspector = sa.inspect(engine)
    for table in metadata.sorted_tables:
        for reflected in inspector.get_columns(table.name):
            found = reflected["type"].compile(dialect=engine.dialect)
            if engine.dialect.name == "mysql":
                # MariaDB reports INTEGER's display width, INTEGER(11): no effect on storage
                found = re.sub(r"^INTEGER\(\d+\)$", "INTEGER", found)
            wanted = table.c[reflected["name"]].type.compile(dialect=engine.dialect)
            assert (table.name, reflected["name"], found) == (table.name, reflected["name"], wanted)


def test_constraints_and_indexes_have_their_conventional_names(engine: Engine) -> None:
    migrate.upgrade(engine)
    inspector = sa.inspect(engine)

    for table in ("saga_attempts", "saga_events"):
        (fk,) = inspector.get_foreign_keys(table)
        assert fk["name"] == f"fk_{table}_saga_id_saga_sagas"
        assert (fk["referred_table"], fk["referred_columns"]) == ("saga_sagas", ["id"])
        assert fk["options"].get("ondelete") == "CASCADE"
    (unique,) = inspector.get_unique_constraints("saga_attempts")
    assert unique["name"] == "uq_saga_attempts_saga_id_kind_step_attempt"
    assert unique["column_names"] == ["saga_id", "kind", "step", "attempt"]
    assert {ix["name"] for ix in inspector.get_indexes("saga_sagas")} == {
        "ix_saga_sagas_status_lease_expires_at",
        "ix_saga_sagas_status_created_at",
        "ix_saga_sagas_name_status_created_at",
        "ix_saga_sagas_created_at",
    }
    # MySQL would add its own index for a foreign key that no index starts with
    assert {ix["name"] for ix in inspector.get_indexes("saga_events")} == {
        "ix_saga_events_saga_id_at"
    }


def test_deleting_a_saga_cascades_to_its_attempts_and_events(engine: Engine) -> None:
    migrate.upgrade(engine)
    with engine.begin() as conn:
        _insert_saga(conn, "s1")
        _insert_children(conn, "s1")
    with engine.begin() as conn:
        conn.execute(sagas.delete())
    with engine.connect() as conn:
        for table in (attempts, events):
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 0


# -- (b) down to base and up again -------------------------------------------------------------


def test_downgrade_to_base_drops_everything_and_upgrade_works_again(engine: Engine) -> None:
    migrate.upgrade(engine)
    with engine.begin() as conn:
        _insert_saga(conn, "s1")

    migrate.downgrade(engine)

    # Alembic keeps its (now empty) version table
    assert _tables(engine) == {migrate.VERSION_TABLE}
    assert _version_rows(engine) == []

    migrate.upgrade(engine)
    assert _tables(engine) == SAGA_TABLES | {migrate.VERSION_TABLE}
    assert _version_rows(engine) == [migrate.head()]
    assert _diffs(engine) == []


# -- (c) beside an application's own Alembic history -------------------------------------------


def test_an_applications_alembic_history_and_tables_are_untouched(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('app0042')"))
        conn.execute(sa.text("CREATE TABLE orders (id INTEGER PRIMARY KEY)"))

    migrate.upgrade(engine)

    assert _version_rows(engine, "alembic_version") == ["app0042"]
    assert _version_rows(engine) == [migrate.head()]
    # env.py leaves foreign tables out of autogenerate: no drop of alembic_version or orders
    with engine.connect() as conn:
        command.check(_alembic_config(conn))

    migrate.downgrade(engine)

    assert _tables(engine) == {"alembic_version", "orders", migrate.VERSION_TABLE}
    assert _version_rows(engine, "alembic_version") == ["app0042"]


# -- (d) the command line from the repo root ---------------------------------------------------


def _alembic(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "alembic", *args],
        cwd=ROOT,
        env={**os.environ, "SAGA_STORE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_alembic_upgrade_head_from_the_repo_root(db_url: str, engine: Engine) -> None:
    done = _alembic("upgrade", "head", url=db_url)
    assert done.returncode == 0, done.stderr

    assert migrate.is_current(engine)
    assert _diffs(engine) == []
    done = _alembic("check", url=db_url)
    assert done.returncode == 0, done.stderr
    assert "No new upgrade operations detected" in done.stdout


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///never-created.db", ["CREATE TABLE saga_sagas", "DATETIME NOT NULL"]),
        (
            "postgresql+psycopg://nobody@127.0.0.1:1/none",
            ["CREATE TABLE saga_sagas", "TIMESTAMP WITH TIME ZONE NOT NULL", "ON DELETE CASCADE"],
        ),
        (
            "mysql+pymysql://nobody@127.0.0.1:1/none",
            ["CREATE TABLE saga_sagas", "DATETIME(6) NOT NULL", "MEDIUMTEXT NOT NULL"],
        ),
    ],
    ids=["sqlite", "postgresql", "mysql"],
)
def test_alembic_upgrade_sql_writes_the_ddl_offline(url: str, expected: list[str]) -> None:
    # --sql connects to nothing: the URLs point nowhere on purpose
    done = _alembic("upgrade", "head", "--sql", url=url)
    assert done.returncode == 0, done.stderr
    for text in [*expected, f"INSERT INTO {migrate.VERSION_TABLE}"]:
        assert text in done.stdout
    assert not (ROOT / "never-created.db").exists()


# -- (e) current() and is_current() ------------------------------------------------------------


def test_current_and_is_current_follow_the_migrations(engine: Engine) -> None:
    head = migrate.head()
    assert migrate.current(engine) is None
    assert not migrate.is_current(engine)

    migrate.upgrade(engine, "0001")
    assert migrate.current(engine) == "0001"
    assert migrate.is_current(engine) == (head == "0001")

    migrate.upgrade(engine)
    assert migrate.current(engine) == head
    assert migrate.is_current(engine)

    migrate.downgrade(engine, "base")
    assert migrate.current(engine) is None
    assert not migrate.is_current(engine)


# -- (f) timestamps ----------------------------------------------------------------------------


def test_timestamps_round_trip_as_aware_utc_with_microseconds(engine: Engine) -> None:
    migrate.upgrade(engine)
    plus_two = MOMENT.astimezone(timezone(timedelta(hours=2)))  # 2024-03-01 01:59:58+02:00
    with engine.begin() as conn:
        _insert_saga(conn, "s1", updated_at=plus_two)
        _insert_children(conn, "s1")

    with engine.connect() as conn:
        row = conn.execute(sa.select(sagas.c.created_at, sagas.c.updated_at)).one()
        started_at = conn.execute(sa.select(attempts.c.started_at)).scalar_one()
        at = conn.execute(sa.select(events.c.at)).scalar_one()
        found = conn.execute(sa.select(sagas.c.id).where(sagas.c.updated_at == MOMENT)).scalar()
        raw = conn.execute(sa.text("SELECT updated_at FROM saga_sagas")).scalar_one()

    for value in (row.created_at, row.updated_at, started_at, at):
        assert value == MOMENT
        assert value.tzinfo is UTC
        assert value.microsecond == 123456
    # stored as the UTC moment, so comparisons in SQL work whatever offset was written
    assert found == "s1"
    stored = raw if isinstance(raw, datetime) else datetime.fromisoformat(raw)
    assert stored.replace(tzinfo=stored.tzinfo or UTC) == MOMENT


# -- SQLite with the store's engine ------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sqlite_upgrade_beside_open_wal_connections(db_url: str, engine: Engine) -> None:
    path = make_url(db_url).database
    assert path is not None
    with engine.connect() as idle:  # one of the store's own connections, checked out and idle
        assert idle.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        idle.commit()
        # and another process in the middle of a read: in WAL the migration still commits
        reader = sqlite3.connect(path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM sqlite_master").fetchone()

            migrate.upgrade(engine)

            assert migrate.is_current(engine)
        finally:
            reader.close()
    with engine.connect() as conn:
        # the migration's connection went back to the pool as it came: WAL, foreign keys on
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def _add_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    """Point saga_store.migrate at a copy of the migrations with one more revision, 9001."""
    scripts = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", scripts, ignore=shutil.ignore_patterns("__pycache__"))
    revision = source.format(down=migrate.head())
    (scripts / "versions" / "9001_extra.py").write_text(revision, encoding="utf-8")
    monkeypatch.setattr(migrate, "_script_location", lambda: scripts)


_BATCH_REVISION = '''"""a batch migration that rebuilds saga_sagas"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("saga_sagas", recreate="always") as batch_op:
        batch_op.add_column(sa.Column("extra", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("saga_sagas", recreate="always") as batch_op:
        batch_op.drop_column("extra")
'''


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sqlite_batch_migration_keeps_the_children_of_a_rebuilt_table(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rebuilding saga_sagas drops the old table: with the store's foreign keys on, SQLite
    # would first delete its rows, and ON DELETE CASCADE every attempt and event with them.
    migrate.upgrade(engine)
    with engine.begin() as conn:
        _insert_saga(conn, "s1")
        _insert_children(conn, "s1")
    _add_revision(tmp_path, monkeypatch, _BATCH_REVISION)

    migrate.upgrade(engine)
    assert migrate.current(engine) == "9001"
    migrate.downgrade(engine, "-1")

    with engine.connect() as conn:
        for table in (sagas, attempts, events):
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 1
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


_ORPHANING_REVISION = '''"""a migration that leaves an attempt without its saga"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("DELETE FROM saga_sagas"))


def downgrade() -> None:
    pass
'''


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sqlite_migration_that_breaks_a_foreign_key_is_rolled_back(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # foreign keys are off while migrating, so SQLite itself lets the orphans be
    migrate.upgrade(engine)
    with engine.begin() as conn:
        _insert_saga(conn, "s1")
        _insert_children(conn, "s1")
    _add_revision(tmp_path, monkeypatch, _ORPHANING_REVISION)

    with pytest.raises(StoreError, match=r"saga_(attempts|events) .* saga_sagas row is gone"):
        migrate.upgrade(engine)

    assert migrate.current(engine) == "0001"
    with engine.connect() as conn:
        for table in (sagas, attempts, events):
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 1


_FAILING_REVISION = '''"""a migration that fails half-way"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("saga_half", sa.Column("id", sa.Integer(), primary_key=True))
    op.add_column("saga_sagas", sa.Column("extra", sa.Integer(), nullable=True))
    raise RuntimeError("half-way")


def downgrade() -> None:
    pass
'''


@pytest.mark.parametrize("plain", [False, True], ids=["store_engine", "plain_engine"])
def test_a_failed_migration_leaves_the_schema_as_it_was(
    backend: dbs.Backend,
    db_url: str,
    plain: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if backend == "mysql":
        pytest.skip("MySQL/MariaDB commit each DDL statement: a failed step stays half-done")
    # pysqlite on its own runs DDL outside any transaction; upgrade() opens one all the same
    engine = sa.create_engine(db_url) if plain else make_engine(db_url)
    try:
        migrate.upgrade(engine)
        _add_revision(tmp_path, monkeypatch, _FAILING_REVISION)

        with pytest.raises(RuntimeError, match="half-way"):
            migrate.upgrade(engine)

        assert _tables(engine) == SAGA_TABLES | {migrate.VERSION_TABLE}
        assert "extra" not in {c["name"] for c in sa.inspect(engine).get_columns("saga_sagas")}
        assert migrate.current(engine) == "0001"
    finally:
        engine.dispose()


# -- where the scripts are found --------------------------------------------------------------


def test_scripts_come_from_the_installed_package_else_the_checkout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = migrate._script_location()
    assert (found / "env.py").is_file()
    assert (found / "versions" / "0001_initial_schema.py").is_file()

    def not_installed(package: str) -> Path:
        raise ModuleNotFoundError(f"No module named {package!r}", name=package)

    monkeypatch.setattr(importlib.resources, "files", not_installed)
    assert migrate._script_location() == ROOT / "migrations"


# -- autogenerate ------------------------------------------------------------------------------


def test_autogenerate_from_scratch_writes_importable_ruff_clean_code(
    engine: Engine, tmp_path: Path
) -> None:
    # What `alembic revision --autogenerate` writes through env.py's render hook and
    # script.py.mako rebuilds the metadata: UTCDateTime and LongText render importably.
    scripts = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", scripts, ignore=shutil.ignore_patterns("__pycache__"))
    for revision in (scripts / "versions").glob("0*.py"):
        revision.unlink()

    with engine.connect() as conn:
        command.revision(
            _alembic_config(conn, scripts), message="everything", autogenerate=True, rev_id="0001"
        )
    (written,) = (scripts / "versions").glob("0001_*.py")
    assert "from saga_store.tables import UTCDateTime" in written.read_text(encoding="utf-8")

    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn, scripts), "head")
    assert _diffs(engine) == []

    lint = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--config",
            "pyproject.toml",
            written,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr

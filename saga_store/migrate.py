"""Create and migrate the saga tables from code, with the Alembic scripts shipped in the package.

``alembic upgrade head`` in a checkout does the same through ``alembic.ini``; here the Alembic
``Config`` is built in code, so an installed package needs no ini file. The history is kept in its
own version table, `VERSION_TABLE`, so the saga tables can share a database with an application's
own Alembic history.
"""

from __future__ import annotations

import importlib.resources
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine

from micro_saga.errors import SagaDefinitionError

from .db import translate_errors
from .errors import StoreError

__all__ = ["VERSION_TABLE", "current", "downgrade", "head", "is_current", "upgrade"]

#: Alembic's version table for the saga tables (an application's ``alembic_version`` is not ours)
VERSION_TABLE: Final = "saga_alembic_version"

_PACKAGE: Final = "saga_store.migrations"

# Alembic's `context` and `op` are module-level proxies: one migration at a time per process
_RUNNING = threading.Lock()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the saga tables up to ``revision``, creating them in an empty database."""
    with (
        _RUNNING,
        _known_revisions(),
        translate_errors(engine.url),
        _migration_connection(engine) as connection,
    ):
        command.upgrade(_config(connection), revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Migrate the saga tables down to ``revision``; ``"base"`` drops them all."""
    with (
        _RUNNING,
        _known_revisions(),
        translate_errors(engine.url),
        _migration_connection(engine) as connection,
    ):
        command.downgrade(_config(connection), revision)


@contextmanager
def _known_revisions() -> Iterator[None]:
    try:
        yield
    except CommandError as error:
        raise SagaDefinitionError(
            f"{error}: pass a revision this package ships (head, base, or an id such as "
            f"{head()}; `saga-store current` shows the database's)"
        ) from None


def current(engine: Engine) -> str | None:
    """The revision the database's saga tables are at, or None before the first upgrade."""
    with translate_errors(engine.url), engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def head() -> str:
    """The newest revision in the package: where `upgrade` goes by default."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    if revision is None:
        raise RuntimeError(f"no Alembic revisions in {_script_location()}")
    return revision


def is_current(engine: Engine) -> bool:
    """Whether the database's saga tables are at `head`."""
    return current(engine) == head()


def _config(connection: Connection | None = None) -> Config:
    config = Config(attributes={} if connection is None else {"connection": connection})
    # ConfigParser interpolates "%": a literal one in the path must be doubled
    config.set_main_option("script_location", str(_script_location()).replace("%", "%%"))
    return config


def _script_location() -> Path:
    try:
        shipped = importlib.resources.files(_PACKAGE)
    except ModuleNotFoundError as error:
        if error.name != _PACKAGE:
            raise
        # A plain checkout: migrations/ sits at the repo root, beside the saga_store folder
        return Path(__file__).resolve().parent.parent / "migrations"
    if not isinstance(shipped, Path):  # e.g. a zipped install: Alembic needs real files
        raise RuntimeError(f"{_PACKAGE} is not a folder on disk ({shipped!r})")
    return shipped


@contextmanager
def _migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that commits if the migration succeeds.

    PostgreSQL and SQLite roll a failed migration back whole; MySQL/MariaDB commit each DDL
    statement as it runs.
    """
    with engine.connect() as connection:
        if connection.dialect.name != "sqlite":
            with connection.begin():
                yield connection
            return
        with _sqlite_foreign_keys_off(connection) as were_on, connection.begin():
            # The store's engine has already sent BEGIN IMMEDIATE; pysqlite's default mode would
            # leave DDL outside any transaction, one statement committed at a time.
            if not _driver(connection).in_transaction:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            yield connection
            if were_on:
                _check_foreign_keys(connection)


@contextmanager
def _sqlite_foreign_keys_off(connection: Connection) -> Iterator[bool]:
    """Foreign keys off for the migration (the store's engine turns them on); yields whether
    they were on.

    Batch migrations copy a table, drop the old one and rename the copy: with foreign keys on,
    dropping saga_sagas would first delete, and so cascade to, every attempt and event. The
    pragma is a no-op inside a transaction, so it goes to the driver before ours begins.
    """
    driver = _driver(connection)
    were_on = bool(driver.execute("PRAGMA foreign_keys").fetchone()[0])
    if not were_on:
        yield False
        return
    driver.execute("PRAGMA foreign_keys=OFF")
    try:
        yield True
    finally:
        driver.execute("PRAGMA foreign_keys=ON")


def _driver(connection: Connection) -> Any:
    # sqlite3's own connection: its execute() bypasses SQLAlchemy's transaction (and BEGIN)
    driver = connection.connection.driver_connection
    if driver is None:
        raise RuntimeError("the connection is closed")
    return driver


def _check_foreign_keys(connection: Connection) -> None:
    # Step 10 of SQLite's own recipe for a schema change with foreign keys turned off
    # (https://www.sqlite.org/lang_altertable.html#otheralter), on the saga tables only.
    tables = connection.exec_driver_sql(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'saga\\_%' ESCAPE '\\'"
    ).scalars()
    quote = connection.dialect.identifier_preparer.quote
    for table in tables.all():
        broken = connection.exec_driver_sql(f"PRAGMA foreign_key_check({quote(table)})").first()
        if broken is not None:
            raise StoreError(
                f"the migration left a row in {table} (rowid {broken[1]}) whose {broken[2]} row is"
                " gone; rolled back"
            )

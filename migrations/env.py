"""Alembic environment of the saga tables.

Used by ``alembic`` on the command line (the database from ``$SAGA_STORE_URL``) and by
``saga_store.migrate``, which hands over its connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from sqlalchemy import Connection, create_engine, make_url, pool

from saga_store.db import resolve_url
from saga_store.migrate import VERSION_TABLE
from saga_store.tables import UTCDateTime, metadata

#: every table of ours starts with this; an application's tables in the same database do not
TABLE_PREFIX = "saga_"

config = context.config

if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def include_name(
    name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
) -> bool:
    """Only the saga tables: autogenerate must never propose dropping an application's."""
    if type_ == "table":
        return name is not None and name.startswith(TABLE_PREFIX)
    return True


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render UTCDateTime importably (Alembic would write ``saga_store.tables.UTCDateTime()``
    without importing it). LongText needs nothing: Alembic renders its MEDIUMTEXT variant."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        autogen_context.imports.add("from saga_store.tables import UTCDateTime")
        return "UTCDateTime()"
    return False


def run_migrations_offline() -> None:
    """``--sql``: write the DDL for the URL's dialect instead of running it."""
    url = _url()
    context.configure(
        url=url,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=make_url(url).get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate over the connection saga_store.migrate passed in, or one opened from the URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        render_item=render_item,
        compare_type=True,
        # no server defaults today: a future one shows up in autogenerate (and tests prove the
        # comparison gives no false positives on SQLite, PostgreSQL and MariaDB)
        compare_server_default=True,
        # SQLite cannot ALTER most things: autogenerate writes batch (copy-and-move) operations
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    # sqlalchemy.url is empty in alembic.ini, so $SAGA_STORE_URL, else sqlite:///sagas.db
    return resolve_url(config.get_main_option("sqlalchemy.url") or None)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

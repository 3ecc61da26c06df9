"""Engines configured for a journal, and database errors translated into ours."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url

from micro_saga.errors import SagaDefinitionError

from .errors import DatabaseUnavailable, SchemaNotMigrated, StoreError

__all__ = ["DEFAULT_URL", "URL_ENV", "make_engine", "redact", "resolve_url", "translate_errors"]

URL_ENV = "SAGA_STORE_URL"
#: the embedded default: a SQLite file in the working directory
DEFAULT_URL = "sqlite:///sagas.db"

SqliteSync = Literal["FULL", "NORMAL"]


def resolve_url(url: str | None) -> str:
    """``url``, else ``$SAGA_STORE_URL``, else the embedded SQLite file."""
    return url or os.environ.get(URL_ENV) or DEFAULT_URL


def redact(url: str | URL) -> str:
    """The URL with any password masked, safe to print."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "<unparseable URL>"


def make_engine(url: str, *, sqlite_synchronous: SqliteSync = "FULL", **options: Any) -> Engine:
    """An engine set up for journaling on SQLite, PostgreSQL or MySQL/MariaDB."""
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (exc.ArgumentError, exc.NoSuchModuleError) as error:
        raise SagaDefinitionError(
            f"invalid database URL {redact(url)} ({error}): pass e.g. sqlite:///sagas.db, "
            "postgresql+psycopg://user@host/db or mysql+pymysql://user@host/db"
        ) from None
    except ModuleNotFoundError as error:
        extra = {"psycopg": "postgresql", "pymysql": "mysql"}.get(error.name or "", "")
        hint = f"pip install 'micro-saga[{extra}]'" if extra else "install its driver"
        raise SagaDefinitionError(
            f"the driver for {redact(url)} is missing ({error.name}): {hint}"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed, sqlite_synchronous, options)
    options.setdefault("pool_pre_ping", True)
    options.setdefault("isolation_level", "READ COMMITTED")
    connect_args = options.setdefault("connect_args", {})
    if backend in ("postgresql", "mysql", "mariadb"):
        connect_args.setdefault("connect_timeout", 10)
    return create_engine(parsed, **options)


def _sqlite_engine(parsed: URL, synchronous: SqliteSync, options: dict[str, Any]) -> Engine:
    if synchronous not in ("FULL", "NORMAL"):
        raise SagaDefinitionError(
            f"sqlite_synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}"
        )
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        # A folder we cannot make is reported by the first connection, as DatabaseUnavailable.
        with suppress(OSError):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    connect_args = options.setdefault("connect_args", {})
    connect_args.setdefault("timeout", 30.0)
    engine = create_engine(parsed, **options)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # We issue BEGIN ourselves (below): pysqlite's own transaction handling would
        # defer it and let a read-then-write transaction fail with "database is locked".
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@contextmanager
def translate_errors(url: str | URL) -> Iterator[None]:
    """Turn SQLAlchemy errors into the store's own, naming the database (never its password)."""
    try:
        yield
    except exc.DBAPIError as error:
        if error.connection_invalidated or _is_connect_error(error):
            raise DatabaseUnavailable(
                f"cannot reach the database at {redact(url)}: {_first_line(error.orig)}"
            ) from error
        if _is_missing_table(error):
            raise SchemaNotMigrated(
                f"the saga tables are missing in {redact(url)}: run `saga-store upgrade` "
                "(or SagaStore.upgrade()) first"
            ) from error
        raise StoreError(f"database error on {redact(url)}: {_first_line(error.orig)}") from error
    except exc.SQLAlchemyError as error:
        raise StoreError(f"database error on {redact(url)}: {_first_line(error)}") from error


def _is_connect_error(error: exc.DBAPIError) -> bool:
    text = str(error.orig).lower()
    markers = (
        "connection refused",
        "could not connect",
        "can't connect",
        "connection failed",
        "unable to open database",
        "server closed the connection",
        "lost connection",
        "timeout expired",
        "name or service not known",
        "access denied",
        "password authentication failed",
        "unknown database",
        "does not exist",
    )
    if "relation" in text or "table" in text:
        return False
    return isinstance(error, exc.OperationalError) and any(m in text for m in markers)


def _is_missing_table(error: exc.DBAPIError) -> bool:
    text = str(error.orig).lower()
    return any(
        m in text for m in ("no such table", "undefinedtable", "doesn't exist", "does not exist")
    ) and ("saga_" in text)


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

"""Throwaway databases for the tests, the crash-test subprocesses and the benchmarks.

Which backends run comes from the environment:

- ``sqlite`` always;
- ``postgresql`` when ``SAGA_TEST_POSTGRES_URL`` is set
  (``postgresql+psycopg://postgres@127.0.0.1:5432/test`` in CI);
- ``mysql`` when ``SAGA_TEST_MYSQL_URL`` is set
  (``mysql+pymysql://root@127.0.0.1:3306/test`` in CI, served by MariaDB);
- ``SAGA_TEST_BACKENDS``, a comma list, keeps only the backends it names.

``create_database(base_url)`` makes a fresh, empty database beside the one ``base_url`` names and
returns its URL; ``drop_database(url)`` removes it. Their names start with ``saga_t_``, and
``drop_database`` refuses any other name, so a misdirected call cannot drop a real database.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final, Literal, get_args

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import NullPool

Backend = Literal["sqlite", "postgresql", "mysql"]

ALL_BACKENDS: Final[tuple[Backend, ...]] = get_args(Backend)
URL_VARIABLES: Final[Mapping[Backend, str]] = {
    "postgresql": "SAGA_TEST_POSTGRES_URL",
    "mysql": "SAGA_TEST_MYSQL_URL",
}
BACKENDS_VARIABLE: Final = "SAGA_TEST_BACKENDS"
NAME_PREFIX: Final = "saga_t_"

_NAME = re.compile(rf"{NAME_PREFIX}[0-9a-f]{{12}}")
_SQLITE_SUFFIXES: Final = ("", "-wal", "-shm", "-journal")
# Seconds a MariaDB DROP DATABASE may wait for a metadata lock (the server default is a year).
_MYSQL_LOCK_WAIT_TIMEOUT: Final = 30


class BackendConfigError(Exception):
    """The SAGA_TEST_* variables ask for something that cannot be run."""


def active_backends(environ: Mapping[str, str] = os.environ) -> tuple[Backend, ...]:
    """The backends to test against, in a fixed order, as the environment selects them."""
    available = [b for b in ALL_BACKENDS if b == "sqlite" or environ.get(URL_VARIABLES[b])]
    selection = environ.get(BACKENDS_VARIABLE, "").strip()
    if not selection:
        return tuple(available)
    wanted = {name.strip() for name in selection.split(",") if name.strip()}
    unknown = wanted.difference(ALL_BACKENDS)
    if unknown:
        msg = f"{BACKENDS_VARIABLE} names unknown backends {sorted(unknown)}; known: {ALL_BACKENDS}"
        raise BackendConfigError(msg)
    missing = wanted.difference(available)
    if missing:
        needed = " and ".join(URL_VARIABLES[b] for b in ALL_BACKENDS if b in missing)
        msg = f"{BACKENDS_VARIABLE}={selection!r} but {needed} is not set"
        raise BackendConfigError(msg)
    return tuple(b for b in ALL_BACKENDS if b in wanted)


def base_url(backend: Backend, directory: Path, environ: Mapping[str, str] = os.environ) -> str:
    """The URL that `create_database` makes its fresh databases beside.

    For SQLite that is a (never created) file in ``directory``; for a server, the configured URL.
    """
    if backend == "sqlite":
        return _render(URL.create("sqlite", database=str(directory / "base.db")))
    url = environ.get(URL_VARIABLES[backend])
    if not url:
        msg = f"{URL_VARIABLES[backend]} is not set"
        raise BackendConfigError(msg)
    return url


def backend_of(url: str) -> Backend:
    """The backend a SQLAlchemy URL points at (``mariadb://`` counts as ``mysql``)."""
    name = make_url(url).get_backend_name()
    if name == "mariadb":
        return "mysql"
    for backend in ALL_BACKENDS:
        if name == backend:
            return backend
    msg = f"unsupported backend {name!r} in {url!r}"
    raise ValueError(msg)


def create_database(base_url: str) -> str:
    """Create a fresh, empty database beside ``base_url``'s and return its URL.

    PostgreSQL and MySQL/MariaDB: a new database ``saga_t_<random>`` on the same server, created
    through a connection to ``base_url``'s database (which must exist). SQLite: a new file
    ``saga_t_<random>.db`` in the folder of ``base_url``'s file (the temp folder for in-memory).
    The new URL keeps everything else of ``base_url``: driver, credentials and query options.
    """
    base = make_url(base_url)
    name = f"{NAME_PREFIX}{secrets.token_hex(6)}"
    backend = backend_of(base_url)
    if backend == "sqlite":
        in_memory = base.database in (None, "", ":memory:")
        folder = Path(tempfile.gettempdir()) if in_memory else Path(str(base.database)).parent
        url = base.set(database=str(folder / f"{name}.db"))
        engine = sa.create_engine(url, poolclass=NullPool)
        try:
            with engine.connect():  # SQLite creates the file on the first connection
                pass
        finally:
            engine.dispose()
        return _render(url)
    with _admin_connection(base) as conn:
        quoted = conn.dialect.identifier_preparer.quote(name)
        if backend == "postgresql":
            # template0 is never connected to, so a session on template1 (psql, another run)
            # cannot fail the CREATE, and it holds nothing but the system catalogs.
            conn.exec_driver_sql(f"CREATE DATABASE {quoted} TEMPLATE template0 ENCODING 'UTF8'")
        else:
            conn.exec_driver_sql(f"CREATE DATABASE {quoted} CHARACTER SET utf8mb4")
    return _render(base.set(database=name))


def drop_database(url: str) -> None:
    """Drop a database made by `create_database`, closing any session still using it.

    Dropping one that is already gone is fine; a name that `create_database` cannot have made
    raises `ValueError`.
    """
    target = make_url(url)
    backend = backend_of(url)
    name = _database_name(target, backend)
    if backend == "sqlite":
        for suffix in _SQLITE_SUFFIXES:
            Path(f"{target.database}{suffix}").unlink(missing_ok=True)
        return
    with _admin_connection(_maintenance_url(target, backend)) as conn:
        quoted = conn.dialect.identifier_preparer.quote(name)
        if backend == "postgresql":
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
            return
        # MariaDB has no WITH (FORCE): end the sessions still in the database, then drop it.
        sessions = conn.execute(
            sa.text(
                "SELECT id FROM information_schema.processlist"
                " WHERE db = :name AND id <> CONNECTION_ID()"
            ),
            {"name": name},
        ).scalars()
        for session in sessions.all():
            with suppress(sa.exc.OperationalError):  # it may have ended on its own meanwhile
                conn.exec_driver_sql(f"KILL CONNECTION {int(session)}")
        conn.exec_driver_sql(f"SET SESSION lock_wait_timeout = {_MYSQL_LOCK_WAIT_TIMEOUT}")
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}")


def database_exists(url: str) -> bool:
    """Whether the database a `create_database` URL names exists, without creating it."""
    target = make_url(url)
    backend = backend_of(url)
    name = _database_name(target, backend)
    if backend == "sqlite":
        return Path(name).exists()
    with _admin_connection(_maintenance_url(target, backend)) as conn:
        query = (
            "SELECT count(*) FROM pg_database WHERE datname = :name"
            if backend == "postgresql"
            else "SELECT count(*) FROM information_schema.schemata WHERE schema_name = :name"
        )
        return bool(conn.execute(sa.text(query), {"name": name}).scalar_one())


@contextmanager
def fresh_database(backend: Backend, directory: Path) -> Iterator[str]:
    """A fresh database for ``backend`` for the length of the block, dropped afterwards."""
    url = create_database(base_url(backend, directory))
    try:
        yield url
    finally:
        drop_database(url)


@contextmanager
def _admin_connection(url: URL) -> Iterator[Connection]:
    # NullPool and AUTOCOMMIT: CREATE/DROP DATABASE cannot run inside a transaction, and no
    # pooled session may outlive the call (it would keep the database in use).
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _maintenance_url(target: URL, backend: Backend) -> URL:
    # A database cannot be dropped from a session inside it: connect to one that always exists
    # (`postgres` is the maintenance database that dropdb uses too).
    return target.set(database="postgres" if backend == "postgresql" else "information_schema")


def _database_name(url: URL, backend: Backend) -> str:
    database = url.database or ""
    name = Path(database).name.removesuffix(".db") if backend == "sqlite" else database
    if not _NAME.fullmatch(name):
        msg = f"{database!r} was not made by create_database(); refusing to touch it"
        raise ValueError(msg)
    return database


def _render(url: URL) -> str:
    return url.render_as_string(hide_password=False)

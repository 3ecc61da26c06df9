"""SQLite settings of the store: WAL, a busy timeout, synchronous=FULL (NORMAL on request)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from micro_saga import Operation
from saga_store import SagaStore, default_registry
from tests import dbs

#: PRAGMA synchronous answers with a number
FULL, NORMAL = 2, 1


def noop(value: int) -> int:
    return value


default_registry.register(noop)


@pytest.fixture
def sqlite_only(backend: dbs.Backend) -> None:
    if backend != "sqlite":
        pytest.skip(f"SQLite PRAGMAs: the {backend} backend has no such settings")


@contextmanager
def _raw(store: SagaStore) -> Iterator[Any]:
    """A DBAPI connection from the store's own pool (no transaction begun)."""
    connection = store.engine.raw_connection()
    try:
        yield connection
    finally:
        connection.close()


def _pragma(connection: Any, name: str) -> Any:
    cursor = connection.cursor()
    try:
        cursor.execute(f"PRAGMA {name}")
        return cursor.fetchone()[0]
    finally:
        cursor.close()


@pytest.mark.usefixtures("sqlite_only")
def test_store_connections_use_wal_full_sync_and_a_busy_timeout(store: SagaStore) -> None:
    # Two connections at once: every connection the pool opens is configured, not just one.
    with _raw(store) as first, _raw(store) as second:
        for connection in (first, second):
            assert str(_pragma(connection, "journal_mode")).lower() == "wal"
            assert _pragma(connection, "synchronous") == FULL
            assert _pragma(connection, "busy_timeout") >= 1000
            assert _pragma(connection, "foreign_keys") == 1
    # and through SQLAlchemy, as the journal uses them
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == FULL


@pytest.mark.usefixtures("sqlite_only")
def test_synchronous_normal_is_an_opt_in(db_url: str) -> None:
    with SagaStore(db_url, sqlite_synchronous="NORMAL", heartbeat=False) as store:
        store.upgrade()
        with _raw(store) as connection:
            assert _pragma(connection, "synchronous") == NORMAL
            assert str(_pragma(connection, "journal_mode")).lower() == "wal"
            assert _pragma(connection, "busy_timeout") >= 1000
        saga = store.saga("normal", saga_id="normal-1").operation(Operation(noop, 3))
        assert saga.orchestrator_execute() == [3]
        assert store.get("normal-1").status == "succeeded"
        # The writes went through the write-ahead log: its file is there beside the database.
        path = sa.make_url(db_url).database
        assert path is not None
        assert Path(f"{path}-wal").exists()


@pytest.mark.usefixtures("sqlite_only")
def test_only_full_or_normal_are_accepted(db_url: str) -> None:
    with pytest.raises(ValueError, match="sqlite_synchronous must be 'FULL' or 'NORMAL'"):
        SagaStore(db_url, sqlite_synchronous="OFF", heartbeat=False)  # type: ignore[arg-type]

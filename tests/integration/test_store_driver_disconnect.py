"""A connection the server drops under a driver transaction, or under a PostgreSQL autocommit
statement, is invalidated (once: a dead connection is not rolled back first) and replaced, and
the error is the store's DatabaseUnavailable."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy import exc as sa_exc

from saga_store import DatabaseUnavailable
from saga_store.db import make_engine, translate_errors
from saga_store.driver import Writer
from tests import dbs
from tests.integration.test_store_driver import (
    count,
    insert,
    kill,
    metadata,
    notes,
    session_id,
    write,
)


@pytest.fixture
def other(db_url: str) -> Iterator[Engine]:
    engine = create_engine(db_url)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("single", [False, True], ids=["transaction", "single"])
@pytest.mark.parametrize("when", ["between", "during"])
def test_a_dropped_connection_is_invalidated_and_replaced(
    db_url: str, other: Engine, backend: dbs.Backend, single: bool, when: str
) -> None:
    if backend == "sqlite":
        pytest.skip("an SQLite connection is a file handle: no server can drop it")
    options: dict[str, Any] = {"pool_pre_ping": False} if when == "between" else {}
    engine = make_engine(db_url, pool_size=1, max_overflow=0, pool_timeout=5, **options)
    try:
        metadata.create_all(engine)
        writer = Writer(engine)
        with writer.transaction() as cur:
            dropped = cur.scalar(session_id(backend), {})
        drop = partial(kill, other, backend, dropped)
        if when == "between":
            drop()
        first = insert(writer.dialect, 1)
        actions = [drop, first] if when == "during" else [first]
        with pytest.raises(sa_exc.DBAPIError) as caught:
            write(writer, *actions, single=single)
        assert caught.value.connection_invalidated is True
        assert count(other) == 0
        write(writer, insert(writer.dialect, 2), single=single)
        with writer.transaction() as cur:
            assert cur.scalar(session_id(backend), {}) != dropped
        assert notes(other) == [(2, "x")]
    finally:
        engine.dispose()


def test_translate_errors_names_a_drop_in_a_transaction_database_unavailable(
    db_url: str, other: Engine, backend: dbs.Backend
) -> None:
    if backend == "sqlite":
        pytest.skip("an SQLite connection is a file handle: no server can drop it")
    engine = make_engine(db_url, pool_size=1, max_overflow=0, pool_timeout=5)
    try:
        metadata.create_all(engine)
        writer = Writer(engine)
        with writer.transaction() as cur:
            dropped = cur.scalar(session_id(backend), {})
        drop = partial(kill, other, backend, dropped)
        with pytest.raises(DatabaseUnavailable), translate_errors(engine.url):
            write(writer, drop, insert(writer.dialect, 1))  # single=False: a transaction
    finally:
        engine.dispose()

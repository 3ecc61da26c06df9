"""Errors at the store boundary: database errors come out as the library's own exceptions.

A database that is down gives DatabaseUnavailable quickly, naming the URL without its password;
a database without the saga tables gives SchemaNotMigrated saying what to run; an unknown id
gives SagaNotFound. Every one is a ``micro_saga.SagaError``, and no step runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import micro_saga
from micro_saga import Operation, SagaAssembler
from saga_store import (
    DatabaseUnavailable,
    InvalidTransition,
    SagaNotFound,
    SagaStore,
    SchemaNotMigrated,
    SerializationError,
    StoreError,
    UnregisteredFunction,
    default_registry,
)
from tests import dbs

#: a failed connection must be reported well before this (no hang)
QUICKLY = 5.0
PASSWORD = "s3cret-pw"  # noqa: S105 - a fake one, to check that messages hide it

_calls: Counter[str] = Counter()
_lock = threading.Lock()


@pytest.fixture(autouse=True)
def _fresh_counters() -> Iterator[None]:
    _calls.clear()
    yield
    _calls.clear()


def side_effect(order_id: int) -> str:
    with _lock:
        _calls["side_effect"] += 1
    return f"done {order_id}"


default_registry.register(side_effect)

Run = Callable[[SagaAssembler], list[Any]]
RUNS: dict[str, Run] = {
    "orchestrator_execute": lambda saga: saga.orchestrator_execute(),
    "choreography_execute_async": lambda saga: asyncio.run(saga.choreography_execute_async()),
}


#: a chosen id is looked up first (through SQLAlchemy); a generated one is not, so the journal's
#: own driver transaction is the first to connect
IDS = {"chosen-id": "boundary-1", "generated-id": None}


def _saga(store: SagaStore, saga_id: str | None = "boundary-1") -> SagaAssembler:
    return store.saga("boundary", saga_id=saga_id).operation(Operation(side_effect, 1))


def test_the_store_errors_hang_from_the_one_root() -> None:
    runtime: list[type[Exception]] = [
        DatabaseUnavailable,
        SchemaNotMigrated,
        SagaNotFound,
        InvalidTransition,
    ]
    definition: list[type[Exception]] = [UnregisteredFunction, SerializationError]
    for error in runtime:
        assert issubclass(error, StoreError)
        assert issubclass(error, micro_saga.JournalError)
    for error in [*runtime, StoreError, *definition]:
        assert issubclass(error, micro_saga.SagaError)
    for error in definition:
        assert issubclass(error, micro_saga.SagaDefinitionError)


# -- a database that is down -----------------------------------------------------------------

DOWN_URLS = {
    # Port 1 on the loopback: nothing listens there, the connection is refused at once.
    "postgresql": f"postgresql+psycopg://saga:{PASSWORD}@127.0.0.1:1/sagas",
    "mysql": f"mysql+pymysql://saga:{PASSWORD}@127.0.0.1:1/sagas",
}


def _assert_down(error: BaseException, shown_url: str, elapsed: float) -> None:
    assert isinstance(error, DatabaseUnavailable)
    assert isinstance(error, micro_saga.SagaError)
    message = str(error)
    assert shown_url in message, message
    assert PASSWORD not in message
    assert elapsed < QUICKLY, f"took {elapsed:.1f} s to report {message!r}"


@pytest.mark.parametrize("saga_id", IDS.values(), ids=IDS.keys())
@pytest.mark.parametrize("run", RUNS.values(), ids=RUNS.keys())
@pytest.mark.parametrize("url", DOWN_URLS.values(), ids=DOWN_URLS.keys())
def test_a_server_that_is_down_gives_database_unavailable_quickly(
    url: str, run: Run, saga_id: str | None
) -> None:
    shown = url.replace(PASSWORD, "***")
    with SagaStore(url, heartbeat=False) as store:
        assert PASSWORD not in repr(store)
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as executing:
            run(_saga(store, saga_id))
        _assert_down(executing.value, shown, time.monotonic() - started)

        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as getting:
            store.get("boundary-1")
        _assert_down(getting.value, shown, time.monotonic() - started)

        with pytest.raises(DatabaseUnavailable) as upgrading:
            store.upgrade()
        assert PASSWORD not in str(upgrading.value)
    assert _calls == Counter()


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/proc/saga-store-nowhere/sagas.db", id="missing read-only folder"),
        pytest.param("/proc/sagas.db", id="read-only folder"),
    ],
)
@pytest.mark.parametrize("saga_id", IDS.values(), ids=IDS.keys())
def test_a_sqlite_file_that_cannot_be_opened_gives_database_unavailable(
    path: str, saga_id: str | None
) -> None:
    url = f"sqlite:///{path}"
    with SagaStore(url, heartbeat=False) as store:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as executing:
            _saga(store, saga_id).orchestrator_execute()
        _assert_down(executing.value, url, time.monotonic() - started)
        with pytest.raises(DatabaseUnavailable) as getting:
            store.get("boundary-1")
        _assert_down(getting.value, url, time.monotonic() - started)
    assert not Path(path).exists()
    assert _calls == Counter()


def test_a_server_database_that_does_not_exist_gives_database_unavailable(
    backend: dbs.Backend, tmp_path: Path
) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite creates a missing database file; only servers can lack one")
    url = sa.make_url(dbs.base_url(backend, tmp_path)).set(database="saga_t_000000000000")
    assert not dbs.database_exists(url.render_as_string(hide_password=False))
    with SagaStore(url.render_as_string(hide_password=False), heartbeat=False) as store:
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as caught:
            _saga(store).orchestrator_execute()
    _assert_down(caught.value, "saga_t_000000000000", time.monotonic() - started)
    assert _calls == Counter()


# -- a database without the saga tables ------------------------------------------------------


def test_an_unmigrated_database_gives_schema_not_migrated(db_url: str) -> None:
    with SagaStore(db_url, heartbeat=False) as store:
        for name, run in RUNS.items():
            with pytest.raises(SchemaNotMigrated) as executing:
                run(_saga(store))
            assert "saga-store upgrade" in str(executing.value), name
            assert isinstance(executing.value, micro_saga.SagaError)
        with pytest.raises(SchemaNotMigrated) as getting:
            store.get("boundary-1")
        assert "saga-store upgrade" in str(getting.value)
        with pytest.raises(SchemaNotMigrated):
            store.list()
        assert store.current_revision() is None
        assert _calls == Counter()

        store.upgrade()  # the fix the message names
        assert RUNS["orchestrator_execute"](_saga(store)) == ["done 1"]
        assert store.get("boundary-1").status == "succeeded"


# -- an unknown saga -------------------------------------------------------------------------


def test_get_of_an_unknown_id_raises_saga_not_found(store: SagaStore) -> None:
    with pytest.raises(SagaNotFound, match="'no-such-saga'") as caught:
        store.get("no-such-saga")
    assert isinstance(caught.value, micro_saga.SagaError)
    assert isinstance(caught.value, LookupError)

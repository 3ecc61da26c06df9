"""The journal's driver transactions (``saga_store.driver.Writer``) on each backend.

They run on the pool's DBAPI connections, past SQLAlchemy's ``Connection``, so what it would
guarantee is checked here: a commit is seen by others, a block that raises leaves nothing
behind, driver errors come out as SQLAlchemy's (and, through ``translate_errors``, as ours), a
connection the server dropped (in a transaction, or under a PostgreSQL one-statement write) is
invalidated once and replaced, and the connection goes back to the pool as it was lent (on
PostgreSQL: autocommit off again after a one-statement transaction; on MySQL: without another
ROLLBACK).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Dialect,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy import exc as sa_exc

from micro_saga import Operation, clock
from saga_store import DatabaseUnavailable, SagaStore, StoreError, default_registry, writes
from saga_store.db import make_engine, translate_errors
from saga_store.driver import Moment, Writer
from tests import dbs
from tests.integration.recovery_support import new_saga_row, new_start_row

metadata = MetaData()
probe = Table(
    "driver_probe",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("note", String(40), nullable=False),
)

_PLACEHOLDER = re.compile(r":(\w+)")


def bound(dialect: Dialect, sql: str, **values: Any) -> tuple[str, Any]:
    """``sql`` with its ``:name`` placeholders in the driver's paramstyle, and its parameters."""
    names = _PLACEHOLDER.findall(sql)
    style = dialect.paramstyle
    if style == "pyformat":
        return _PLACEHOLDER.sub(r"%(\1)s", sql), {name: values[name] for name in names}
    if style == "named":
        return sql, {name: values[name] for name in names}
    marks = {"qmark": "?", "format": "%s"}
    if style not in marks:
        raise NotImplementedError(f"paramstyle {style!r}")
    return _PLACEHOLDER.sub(marks[style], sql), tuple(values[name] for name in names)


def insert(dialect: Dialect, row_id: int, note: str = "x") -> tuple[str, Any]:
    return bound(
        dialect, "INSERT INTO driver_probe (id, note) VALUES (:id, :note)", id=row_id, note=note
    )


@default_registry.register(name="driver-tests:noop")
def _noop(value: int) -> int:
    return value


#: a statement, or something to do between statements (raise, drop the connection)
Action = tuple[str, Any] | Callable[[], object]


def write(writer: Writer, *actions: Action, single: bool = False) -> None:
    """One write transaction: each (sql, params) runs in it, each callable is called in it."""
    with writer.transaction(single=single) as cur:
        for action in actions:
            if callable(action):
                action()
            else:
                cur.execute(*action)


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(probe)).scalar_one())


def notes(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        return [(r.id, r.note) for r in conn.execute(select(probe).order_by(probe.c.id))]


def session_id(backend: dbs.Backend) -> str:
    """SQL for the server's id of the session it runs in."""
    return "SELECT pg_backend_pid()" if backend == "postgresql" else "SELECT CONNECTION_ID()"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A pool of one connection, so each transaction reuses the one the last gave back (and a
    connection never given back makes the next checkout time out instead of hanging)."""
    pooled = make_engine(db_url, pool_size=1, max_overflow=0, pool_timeout=5)
    metadata.create_all(pooled)
    yield pooled
    pooled.dispose()


@pytest.fixture
def observer(db_url: str, engine: Engine) -> Iterator[Engine]:
    """What other sessions see, once ``engine`` made the table (and SQLite's WAL): a plain
    engine, since the store's takes SQLite's write lock for every transaction, reads too, and
    would queue behind the writer under test."""
    other = create_engine(db_url)
    yield other
    other.dispose()


@pytest.fixture
def writer(engine: Engine) -> Writer:
    return Writer(engine)


# -- commit and rollback ---------------------------------------------------------------------


def test_a_commit_makes_the_rows_visible_to_other_sessions(
    writer: Writer, observer: Engine
) -> None:
    dialect = writer.dialect
    with writer.transaction() as cur:
        assert cur.execute(*insert(dialect, 1, "one")) == 1
        sql, _ = insert(dialect, 0)
        cur.executemany(sql, [insert(dialect, 2, "two")[1], insert(dialect, 3, "three")[1]])
        assert cur.scalar("SELECT count(*) FROM driver_probe", ()) == 3  # its own writes
        assert count(observer) == 0  # not committed yet
    assert notes(observer) == [(1, "one"), (2, "two"), (3, "three")]

    with writer.transaction() as cur:
        changed = cur.execute(
            *bound(dialect, "UPDATE driver_probe SET note = :note WHERE id > :id", note="n", id=1)
        )
    assert changed == 2
    assert notes(observer) == [(1, "one"), (2, "n"), (3, "n")]


def test_a_block_that_raises_writes_nothing_and_the_connection_serves_again(
    writer: Writer, observer: Engine
) -> None:
    dialect = writer.dialect

    def give_up() -> None:
        raise ValueError("the caller gave up")

    with pytest.raises(ValueError, match="the caller gave up"):
        write(writer, insert(dialect, 1), insert(dialect, 2), give_up)
    assert count(observer) == 0

    # the same (only) pooled connection, out of its aborted transaction: the same ids go in
    with writer.transaction() as cur:
        cur.execute(*insert(dialect, 1, "again"))
        cur.execute(*insert(dialect, 2, "again"))
    assert notes(observer) == [(1, "again"), (2, "again")]


@pytest.mark.parametrize("single", [False, True], ids=["transaction", "single"])
def test_a_driver_error_rolls_back_and_comes_out_as_sqlalchemys(
    writer: Writer, observer: Engine, single: bool
) -> None:
    dialect = writer.dialect
    with writer.transaction() as cur:
        cur.execute(*insert(dialect, 1, "first"))

    duplicate = insert(dialect, 1, "duplicate")
    # one statement, or one before it that the error must undo
    statements = [duplicate] if single else [insert(dialect, 2, "rolled back"), duplicate]
    with pytest.raises(sa_exc.IntegrityError) as caught:
        write(writer, *statements, single=single)
    error = caught.value
    assert isinstance(error.orig, dialect.loaded_dbapi.IntegrityError)
    assert error.__cause__ is error.orig
    assert error.connection_invalidated is False
    assert error.statement == insert(dialect, 1)[0]
    assert error.params == insert(dialect, 1, "duplicate")[1]
    assert notes(observer) == [(1, "first")]  # the statement before the error is undone too

    with writer.transaction(single=single) as cur:
        cur.execute(*insert(dialect, 2, "after"))
    assert notes(observer) == [(1, "first"), (2, "after")]


def test_translate_errors_names_a_duplicate_key_a_store_error(writer: Writer) -> None:
    dialect = writer.dialect
    with writer.transaction() as cur:
        cur.execute(*insert(dialect, 1))
    url = writer.engine.url
    with pytest.raises(StoreError) as caught, translate_errors(url), writer.transaction() as cur:
        cur.execute(*insert(dialect, 1))
    assert type(caught.value) is StoreError
    assert isinstance(caught.value.__cause__, sa_exc.IntegrityError)
    assert str(caught.value).startswith("database error on ")


def test_a_saga_id_taken_twice_is_an_integrity_error_under_the_store_error(
    store: SagaStore,
) -> None:
    # the journal's own statement (one CTE on PostgreSQL, two INSERTs elsewhere)
    journal_writer = store.journal.writer
    now = clock.utcnow()
    starts = [new_start_row("s", 0, now)]
    single = writes.one_statement(journal_writer.dialect, [], starts, new_saga=True)
    with journal_writer.transaction(single=single) as cur:
        writes.insert_saga(cur, new_saga_row("s", now), [], starts)
    with (
        pytest.raises(StoreError) as caught,
        translate_errors(store.engine.url),
        journal_writer.transaction(single=single) as cur,
    ):
        writes.insert_saga(cur, new_saga_row("s", now), [], starts)
    assert type(caught.value) is StoreError
    assert isinstance(caught.value.__cause__, sa_exc.IntegrityError)
    record = store.get("s")
    assert len(record.attempts) == 1  # the second saga's attempt went nowhere


# -- listeners ---------------------------------------------------------------------------------


class Moments:
    """What a listener hears, with the rows another session sees at that moment."""

    def __init__(self, observer: Engine) -> None:
        self.observer = observer
        self.heard: list[tuple[Moment, str, int]] = []

    def __call__(self, moment: Moment, sql: str) -> None:
        self.heard.append((moment, sql.split(None, 1)[0] if sql else "", count(self.observer)))


def test_listeners_hear_each_statement_then_the_commit_then_that_it_committed(
    writer: Writer, observer: Engine
) -> None:
    dialect = writer.dialect
    first, second = Moments(observer), Moments(observer)
    writer.listen(first)
    writer.listen(second)
    order: list[str] = []
    writer.listen(lambda moment, _sql: order.append(f"third {moment}"))
    with writer.transaction() as cur:
        cur.execute(*insert(dialect, 1))
        cur.scalar("SELECT count(*) FROM driver_probe", ())
    assert first.heard == [
        ("execute", "INSERT", 0),
        ("execute", "SELECT", 0),
        ("commit", "SELECT", 0),  # the SQL of the last statement
        ("committed", "SELECT", 1),
    ]
    assert second.heard == first.heard
    assert order == ["third execute", "third execute", "third commit", "third committed"]

    writer.unlisten(second)
    with writer.transaction(single=True) as cur:
        cur.execute(*insert(dialect, 2))
    # on PostgreSQL the statement is the commit: "commit" comes before it runs; elsewhere
    # after it, before COMMIT; either way no other session sees it until "committed"
    assert first.heard[4:] == [
        ("execute", "INSERT", 1),
        ("commit", "INSERT", 1),
        ("committed", "INSERT", 2),
    ]
    assert len(second.heard) == 4


def test_a_transaction_that_fails_is_never_heard_committing(
    writer: Writer, observer: Engine
) -> None:
    dialect = writer.dialect
    heard = Moments(observer)
    writer.listen(heard)
    with writer.transaction() as cur:
        cur.execute(*insert(dialect, 1))
    del heard.heard[:]
    for single in (False, True):
        with pytest.raises(sa_exc.IntegrityError), writer.transaction(single=single) as cur:
            cur.execute(*insert(dialect, 1))
    expected: list[tuple[Moment, str, int]] = [("execute", "INSERT", 1)]
    if writer.single_statement:  # the single statement's "commit" is heard before it runs,
        # and that it did not commit after it failed
        expected += [("execute", "INSERT", 1), ("commit", "INSERT", 1), ("failed", "INSERT", 1)]
    else:
        expected += expected
    assert heard.heard == expected

    writer.unlisten(heard)
    with writer.transaction() as cur:
        cur.execute(*insert(dialect, 2))
    assert len(heard.heard) == len(expected)


def test_a_listener_that_raises_at_the_commit_leaves_nothing_written(
    writer: Writer, observer: Engine
) -> None:
    # how the crash tests die at a commit: before it, nothing may be in the database
    class Killed(BaseException):
        pass

    def kill_at_commit(moment: Moment, _sql: str) -> None:
        if moment == "commit":
            raise Killed

    writer.listen(kill_at_commit)
    for single in (False, True):
        with pytest.raises(Killed), writer.transaction(single=single) as cur:
            cur.execute(*insert(writer.dialect, 1))
    writer.unlisten(kill_at_commit)
    assert count(observer) == 0
    with writer.transaction(single=True) as cur:
        cur.execute(*insert(writer.dialect, 1))
    assert count(observer) == 1


# -- one statement, one round trip (PostgreSQL) -------------------------------------------------


def _autocommit_after(engine: Engine) -> bool:
    raw = engine.raw_connection()
    try:
        dbapi: Any = raw.driver_connection
        return bool(dbapi.autocommit)
    finally:
        raw.close()


def test_a_single_statement_is_its_own_transaction_on_postgresql(
    writer: Writer, engine: Engine, observer: Engine, backend: dbs.Backend
) -> None:
    if backend != "postgresql":
        pytest.skip("autocommit single statements are PostgreSQL's (psycopg) only")
    assert writer.single_statement
    dialect = writer.dialect
    with writer.transaction(single=True) as cur:
        pid = cur.scalar(session_id(backend), {})
    with writer.transaction(single=True) as cur:
        cur.execute(*insert(dialect, 1))
        assert count(observer) == 1  # committed before the block ends: autocommit
    assert _autocommit_after(engine) is False

    with pytest.raises(RuntimeError, match="one statement only"):
        write(writer, insert(dialect, 2), insert(dialect, 3), single=True)
    assert notes(observer) == [(1, "x"), (2, "x")]  # the first was its own transaction
    assert _autocommit_after(engine) is False

    with pytest.raises(sa_exc.IntegrityError), writer.transaction(single=True) as cur:
        cur.execute(*insert(dialect, 1))
    assert _autocommit_after(engine) is False

    # and a transaction after them all is a transaction again
    with writer.transaction() as cur:
        assert cur.scalar(session_id(backend), {}) == pid  # the same pooled connection
        cur.execute(*insert(dialect, 4))
        assert count(observer) == 2
    assert count(observer) == 3


def test_single_is_only_a_promise_where_the_driver_cannot_autocommit(
    writer: Writer, observer: Engine, backend: dbs.Backend
) -> None:
    if backend == "postgresql":
        pytest.skip("PostgreSQL runs a single statement in autocommit (the test above)")
    assert not writer.single_statement
    dialect = writer.dialect
    with writer.transaction(single=True) as cur:
        cur.execute(*insert(dialect, 1))
        cur.execute(*insert(dialect, 2))  # allowed: an ordinary transaction
        assert count(observer) == 0
    assert count(observer) == 2


# -- a connection the database dropped ---------------------------------------------------------


def kill(observer: Engine, backend: dbs.Backend, session: int) -> None:
    """End a server session from another one."""
    with observer.connect() as conn:
        if backend == "postgresql":  # waits (up to 5 s) until the backend is gone
            query = text("SELECT pg_terminate_backend(:pid, 5000)")
            assert conn.execute(query, {"pid": session}).scalar_one() is True
        else:
            conn.exec_driver_sql(f"KILL CONNECTION {int(session)}")
        conn.commit()


def one_connection(db_url: str, backend: dbs.Backend, **options: Any) -> tuple[Engine, int]:
    """An engine with a pool of one connection, and the server's id of that one's session."""
    if backend == "sqlite":
        pytest.skip("an SQLite connection is a file handle: no server can drop it")
    engine = make_engine(db_url, pool_size=1, max_overflow=0, pool_timeout=5, **options)
    metadata.create_all(engine)
    with Writer(engine).transaction() as cur:
        return engine, int(cur.scalar(session_id(backend), {}))


@pytest.mark.parametrize("single", [False, True], ids=["transaction", "single"])
@pytest.mark.parametrize("when", ["between", "during"])
def test_a_dropped_connection_is_invalidated_once_and_replaced(
    db_url: str, observer: Engine, backend: dbs.Backend, when: str, single: bool
) -> None:
    # "between": the pool's pre-ping is off, so the dead connection reaches the writer;
    # "during": the store's own engine (pre-ping on), dropped after the checkout.
    # Invalidated once: a second invalidation would warn, and warnings are errors here.
    options: dict[str, Any] = {"pool_pre_ping": False} if when == "between" else {}
    engine, dropped = one_connection(db_url, backend, **options)
    try:
        writer = Writer(engine)
        dialect = writer.dialect
        drop = partial(kill, observer, backend, dropped)
        if when == "between":
            drop()
        actions = [drop, insert(dialect, 1)] if when == "during" else [insert(dialect, 1)]
        with pytest.raises(sa_exc.DBAPIError) as caught:
            write(writer, *actions, single=single)
        assert caught.value.connection_invalidated is True
        assert isinstance(caught.value.orig, dialect.loaded_dbapi.OperationalError)
        assert count(observer) == 0

        # the pool replaced it: the next transactions run on a new session, autocommit off
        write(writer, insert(dialect, 2), single=single)
        with writer.transaction() as cur:
            assert cur.scalar(session_id(backend), {}) != dropped
        assert notes(observer) == [(2, "x")]
        if backend == "postgresql":
            assert _autocommit_after(engine) is False
    finally:
        engine.dispose()


@pytest.mark.parametrize("single", [False, True], ids=["transaction", "single"])
def test_translate_errors_names_a_dropped_connection_database_unavailable(
    db_url: str, observer: Engine, backend: dbs.Backend, single: bool
) -> None:
    engine, dropped = one_connection(db_url, backend)
    try:
        writer = Writer(engine)
        drop = partial(kill, observer, backend, dropped)
        with pytest.raises(DatabaseUnavailable) as caught, translate_errors(engine.url):
            write(writer, drop, insert(writer.dialect, 1), single=single)
        assert "cannot reach the database" in str(caught.value)
        cause = caught.value.__cause__
        assert isinstance(cause, sa_exc.DBAPIError)
        assert cause.connection_invalidated is True
    finally:
        engine.dispose()


# -- what review found: listeners after the fact, MySQL check-in, autocommit engines ----------


def test_a_listener_that_raises_after_the_commit_changes_nothing(
    writer: Writer, observer: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(moment: Moment, _sql: str) -> None:
        if moment == "committed":
            raise RuntimeError("a tracer's bug")

    writer.listen(broken)
    with caplog.at_level("ERROR", logger="saga_store"):
        write(writer, insert(writer.dialect, 1))  # no error: the row is committed
    assert notes(observer) == [(1, "x")]
    assert "a journal writer listener failed at 'committed'" in caplog.text
    assert "a tracer's bug" in caplog.text


class GlobalStatus:
    """MySQL's server-wide statement counters, read on one connection that never ends a
    transaction (so that reading them counts no COMMIT or ROLLBACK)."""

    _SQL = "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = %s"

    def __init__(self, engine: Engine) -> None:
        self.raw = engine.raw_connection()

    def __getitem__(self, name: str) -> int:
        cursor = self.raw.cursor()
        try:
            cursor.execute(self._SQL, (name,))
            row = cursor.fetchone()
        finally:
            cursor.close()
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        self.raw.close()


def test_mysql_checks_a_connection_in_without_another_rollback(
    writer: Writer, observer: Engine, backend: dbs.Backend
) -> None:
    if backend != "mysql":
        pytest.skip("only PyMySQL sends ROLLBACK for a connection that is already idle")
    status = GlobalStatus(observer)
    try:
        rollbacks, commits = status["COM_ROLLBACK"], status["COM_COMMIT"]
        for row_id in range(5):
            with writer.transaction() as cur:
                cur.execute(*insert(writer.dialect, row_id))
        assert status["COM_COMMIT"] - commits == 5
        assert status["COM_ROLLBACK"] == rollbacks  # the pool did not reset them again
        # a block that raises is rolled back once, by the writer
        with pytest.raises(ValueError, match="undo"):
            write(writer, insert(writer.dialect, 9), _raise_undo)
        assert status["COM_ROLLBACK"] == rollbacks + 1
    finally:
        status.close()
    assert count(observer) == 5


def _raise_undo() -> None:
    raise ValueError("undo")


def test_an_autocommit_engine_is_used_as_it_is_and_left_as_it_was(
    db_url: str, observer: Engine, backend: dbs.Backend
) -> None:
    if backend != "postgresql":
        pytest.skip("only PostgreSQL runs a single statement in autocommit")
    engine = make_engine(db_url, pool_size=1, max_overflow=0, isolation_level="AUTOCOMMIT")
    try:
        metadata.create_all(engine)
        writer = Writer(engine)
        with writer.transaction(single=True) as cur:
            cur.execute(*insert(writer.dialect, 1))
            # the connection was in autocommit already: not a one-statement promise to keep
            cur.execute(*insert(writer.dialect, 2))
        assert notes(observer) == [(1, "x"), (2, "x")]
        raw = engine.raw_connection()
        try:
            assert raw.driver_connection is not None
            assert raw.driver_connection.autocommit is True  # as the engine made it
        finally:
            raw.close()
    finally:
        engine.dispose()


def test_sqlite_writers_of_one_process_queue_instead_of_meeting_the_busy_timeout(
    db_url: str, observer: Engine, backend: dbs.Backend
) -> None:
    if backend != "sqlite":
        pytest.skip("only SQLite has one writer at a time and a busy handler that sleeps")
    engine = make_engine(db_url, pool_size=8, max_overflow=0)

    @event.listens_for(engine, "connect")
    def _no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
        # after the store's own PRAGMAs: a writer that meets the lock fails at once
        dbapi_connection.execute("PRAGMA busy_timeout=0")

    try:
        metadata.create_all(engine)
        writer = Writer(engine)
        threads, each = 8, 40
        start = threading.Barrier(threads)
        errors: list[BaseException] = []

        def hammer(first: int) -> None:
            start.wait()
            try:
                for row_id in range(first, first + each):
                    write(writer, insert(writer.dialect, row_id))
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=hammer, args=(n * each,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert errors == []  # without the queue, "database is locked" at once
        assert count(observer) == threads * each
    finally:
        engine.dispose()


# -- SQLite: one connection kept for all the writes ------------------------------------------


@pytest.fixture
def sqlite_url(db_url: str, backend: dbs.Backend) -> str:
    if backend != "sqlite":
        pytest.skip("only SQLite's writers take turns, and can share one connection")
    return db_url


@pytest.fixture
def spare_pool(sqlite_url: str) -> Iterator[Engine]:
    """An engine as the store makes its own (connections to spare), with the table."""
    engine = make_engine(sqlite_url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def impatient(sqlite_url: str, spare_pool: Engine) -> Iterator[Engine]:
    """Another session that gives up at once if the write lock is held."""
    other = create_engine(sqlite_url, connect_args={"timeout": 0})
    yield other
    other.dispose()


def checkouts(engine: Engine) -> list[int]:
    """A list that grows by one at each checkout from the engine's pool."""
    seen: list[int] = []
    event.listen(engine, "checkout", lambda *_: seen.append(1))
    return seen


@pytest.fixture
def kept(spare_pool: Engine) -> Iterator[tuple[Writer, list[int]]]:
    """A writer that keeps its connection, and the pool's checkouts since it was made."""
    seen = checkouts(spare_pool)
    writer = Writer(spare_pool, keep_connection=True)
    yield writer, seen
    writer.close()


def test_a_kept_connection_serves_every_write_and_holds_no_lock_between_them(
    spare_pool: Engine, impatient: Engine, kept: tuple[Writer, list[int]]
) -> None:
    writer, seen = kept
    dialect = writer.dialect
    for row_id in (1, 2, 3):
        write(writer, insert(dialect, row_id))
        # between writes the kept connection is idle: another session writes at once
        with impatient.begin() as conn:
            conn.execute(probe.insert(), {"id": 100 + row_id, "note": "other"})
    assert len(seen) == 1
    assert spare_pool.pool.checkedout() == 1  # type: ignore[attr-defined]
    assert [row_id for row_id, _ in notes(impatient)] == [1, 2, 3, 101, 102, 103]

    writer.close()
    assert spare_pool.pool.checkedout() == 0  # type: ignore[attr-defined]
    # a writer used after close checks one out for the write, and gives it back
    write(writer, insert(dialect, 4))
    assert len(seen) == 2
    assert spare_pool.pool.checkedout() == 0  # type: ignore[attr-defined]


def pool_events(engine: Engine, *names: str) -> list[str]:
    """A list of the named pool events of ``engine``, in the order they happen."""
    seen: list[str] = []
    for name in names:
        event.listen(engine, name, lambda *_, name=name: seen.append(name))
    return seen


def test_after_the_engine_is_disposed_the_writes_move_to_its_new_pool(
    spare_pool: Engine, kept: tuple[Writer, list[int]]
) -> None:
    writer, seen = kept
    write(writer, insert(writer.dialect, 1))
    closed = pool_events(spare_pool, "close", "close_detached")
    old_pool = spare_pool.pool

    spare_pool.dispose()  # e.g. before the database file is replaced
    write(writer, insert(writer.dialect, 2))

    assert spare_pool.pool is not old_pool
    assert len(seen) == 2  # a connection of the new pool
    assert spare_pool.pool.checkedout() == 1  # type: ignore[attr-defined]
    assert closed == ["close_detached"]  # the old pool's is closed, not kept by it
    assert count(spare_pool) == 2


def test_a_failed_write_leaves_the_kept_connection_idle_and_serving(
    impatient: Engine, kept: tuple[Writer, list[int]]
) -> None:
    writer, seen = kept
    dialect = writer.dialect

    def give_up() -> None:
        raise ValueError("the caller gave up")

    with pytest.raises(ValueError, match="the caller gave up"):
        write(writer, insert(dialect, 1), give_up)
    with pytest.raises(sa_exc.IntegrityError):
        write(writer, insert(dialect, 2), insert(dialect, 2))
    with impatient.begin() as conn:  # rolled back both times: the lock is free
        conn.execute(probe.insert(), {"id": 50, "note": "other"})

    write(writer, insert(dialect, 1, "again"))
    assert notes(impatient) == [(1, "again"), (50, "other")]
    assert len(seen) == 1


def test_without_keep_connection_each_write_checks_one_out_and_gives_it_back(
    spare_pool: Engine,
) -> None:
    seen = checkouts(spare_pool)
    writer = Writer(spare_pool)
    for row_id in (1, 2, 3):
        write(writer, insert(writer.dialect, row_id))
        assert spare_pool.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert len(seen) == 3


def test_a_store_keeps_a_connection_only_on_the_engine_it_made(sqlite_url: str) -> None:
    own = SagaStore(sqlite_url)
    own.upgrade()
    lent = pool_events(own.engine, "checkout", "checkin")

    def outstanding() -> int:
        return lent.count("checkout") - lent.count("checkin")

    try:
        own.saga("kept").operation(Operation(_noop, 1)).orchestrator_execute()
        assert outstanding() == 1
    finally:
        own.close()
    assert outstanding() == 0  # close gave the kept one back

    # A caller's pool of one connection: keeping it would starve the store's own reads.
    tight = make_engine(sqlite_url, pool_size=1, max_overflow=0, pool_timeout=2)
    store = SagaStore(tight)
    try:
        for n in range(3):
            store.saga("tight", saga_id=f"tight-{n}").operation(
                Operation(_noop, n)
            ).orchestrator_execute()
            assert tight.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert store.get("tight-2").status == "succeeded"
    finally:
        store.close()
        tight.dispose()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # 3.12+: multi-threaded fork()
def test_a_forked_child_writes_on_a_connection_of_its_own(
    spare_pool: Engine, impatient: Engine
) -> None:
    writer = Writer(spare_pool, keep_connection=True)
    write(writer, insert(writer.dialect, 1, "parent"))
    assert count(spare_pool) == 1  # and the read leaves an idle connection in the pool
    connects = pool_events(spare_pool, "connect")

    pid = os.fork()
    if pid == 0:  # the child: report by exit code, never return into pytest
        code = 3
        try:
            write(writer, insert(writer.dialect, 2, "child"))
            # 1: it wrote on a connection of its parent's (the kept one, or the idle one)
            code = 0 if connects == ["connect"] else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0, "the child used its parent's connection"
    write(writer, insert(writer.dialect, 3, "parent"))  # the parent's is still its own
    assert connects == []
    assert notes(impatient) == [(1, "parent"), (2, "child"), (3, "parent")]
    writer.close()

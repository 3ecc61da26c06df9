"""The journal's write transactions, run on the pool's own driver connections.

SQLAlchemy compiles the journal's statements (``saga_store.writes``) and pools the connections;
a journal commit then runs on the checked-out DBAPI connection itself: BEGIN, the statements,
COMMIT. SQLAlchemy's ``Connection`` spends tens of microseconds on each transaction and each
statement (execution contexts, result objects, event dispatch), which on SQLite is more than
the database's own work and on every backend a large part of a step's cost.

* SQLite: ``BEGIN IMMEDIATE`` (the write lock first, as the engine's own transactions take it).
  The process's writers take turns (SQLite has one writer at a time), so with
  ``keep_connection`` they share one connection, kept checked out between writes: no pool
  checkout and check-in per commit. A forked child leaves its parent's connections alone (the
  kept one, and the pool's idle ones), and a disposed engine's new pool serves the next write.
* PostgreSQL: a transaction of one statement runs in autocommit, as its own implicit
  transaction: committed and flushed before the reply, without the round trips of BEGIN and
  COMMIT.
* MySQL/MariaDB: the driver's implicit transaction and ``commit()``.

What SQLAlchemy's ``Connection`` would do is done here too: a driver error (checking out a
connection included) becomes SQLAlchemy's ``DBAPIError``, so ``translate_errors`` names it; the
transaction is rolled back; a connection the database dropped is invalidated so that the pool
replaces it; and a connection whose transaction ended is checked in without another rollback.

Engine events for cursors and transactions do not fire for these statements (the connection
pool's do). What happens here is observed with :meth:`Writer.listen` instead: tests count the
journal's commits with it, and the crash tests kill the process at each one.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Literal

from sqlalchemy import Dialect, Engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import SingletonThreadPool

__all__ = ["Cursor", "Listener", "Moment", "Writer"]

log = logging.getLogger("saga_store")

#: ``"execute"`` before each statement (with its SQL); ``"commit"`` just before a transaction
#: commits (a one-statement transaction in autocommit: just before its statement);
#: ``"committed"`` once it did, or ``"failed"`` if it was announced and then did not commit
#: (with the SQL of the last statement)
Moment = Literal["execute", "commit", "committed", "failed"]
Listener = Callable[[Moment, str], None]


class Cursor:
    """The statements of one write transaction (driver SQL, driver parameters)."""

    __slots__ = ("_cursor", "_notify", "_single", "announced", "dialect", "last", "used")

    def __init__(
        self,
        cursor: Any,
        dialect: Dialect,
        notify: Callable[[Moment, str], None] | None,
        *,
        single: bool,
    ) -> None:
        self._cursor = cursor
        self.dialect = dialect
        self._notify = notify
        self._single = single
        #: whether a statement ran
        self.used = False
        #: whether the commit was announced to the listeners
        self.announced = False
        #: the statement under way, for error messages
        self.last: tuple[str, Any] = ("", None)

    def execute(self, sql: str, params: Any) -> int:
        """Run one statement; returns the rows it changed."""
        self._before(sql, params)
        self._cursor.execute(sql, params)
        return int(self._cursor.rowcount)

    def scalar(self, sql: str, params: Any) -> Any:
        """Run one statement that returns one value, and return it."""
        self._before(sql, params)
        self._cursor.execute(sql, params)
        row = self._cursor.fetchone()
        return None if row is None else row[0]

    def executemany(self, sql: str, many: Sequence[Any]) -> None:
        self._before(sql, many)
        self._cursor.executemany(sql, many)

    def _before(self, sql: str, params: Any) -> None:
        if self._single and self.used:
            raise RuntimeError("a single-statement transaction runs one statement only")
        self.used = True
        self.last = (sql, params)
        if self._notify is not None:
            self._notify("execute", sql)
            if self._single:  # the statement is the commit
                self.announced = True
                self._notify("commit", sql)


class Writer:
    """Write transactions on one engine's pooled driver connections."""

    def __init__(self, engine: Engine, *, keep_connection: bool = False) -> None:
        """``keep_connection``: on SQLite, keep one connection checked out for all the writes
        (see below); for an engine whose pool has a connection to spare for everything else.
        """
        self.engine = engine
        self.dialect = engine.dialect
        self._sqlite = self.dialect.name == "sqlite"
        #: one statement can be its own transaction (autocommit) on this driver
        self.single_statement = self.dialect.name == "postgresql" and self.dialect.driver in (
            "psycopg",
            "psycopg2",
        )
        self._listeners: tuple[Listener, ...] = ()
        self._listening = threading.Lock()
        # SQLite has one writer at a time, and a writer that finds the lock taken sleeps in the
        # busy handler (1, 2, 5, 10... ms) instead of waking when it is free: this process's
        # writers queue here instead, and only other processes meet the busy timeout.
        self._gate: AbstractContextManager[Any] = (
            threading.Lock() if self._sqlite else nullcontext()
        )
        # With one writer at a time, one connection serves them all: on SQLite the writer
        # keeps the connection it checked out (guarded by the gate) instead of a pool checkout
        # and check-in per commit. Not with a pool of one connection per thread (a SQLite
        # connection is then bound to its thread).
        self._hold = (
            keep_connection and self._sqlite and not isinstance(engine.pool, SingletonThreadPool)
        )
        self._held: Any = None
        #: the pool the kept connection came from (``engine.dispose()`` makes a new one)
        self._held_pool: Any = None
        #: a forked child's copy of the connection its parent held: never used, closed or
        #: returned here (the parent still uses it)
        self._inherited: list[Any] = []
        _WRITERS.add(self)

    def listen(self, listener: Listener) -> None:
        """Call ``listener(moment, sql)`` at each :data:`Moment` of the transactions here.

        A listener that raises at ``"execute"`` or ``"commit"`` fails the write (nothing is
        committed); one that raises at ``"committed"`` or ``"failed"`` is logged and ignored.
        """
        with self._listening:
            self._listeners = (*self._listeners, listener)

    def unlisten(self, listener: Listener) -> None:
        with self._listening:
            self._listeners = tuple(known for known in self._listeners if known is not listener)

    @contextmanager
    def transaction(self, *, single: bool = False) -> Iterator[Cursor]:
        """A write transaction, committed when the block ends and rolled back if it raises.

        ``single`` promises one statement: where the driver allows it, that statement runs as
        its own transaction, without the round trips of BEGIN and COMMIT.
        """
        with self._gate:
            handle = yield from self._transaction(single)
        if handle is not None:
            self._tell("committed", handle.last[0])

    def _transaction(self, single: bool) -> Generator[Cursor, None, Cursor | None]:
        """The transaction's body; returns its cursor if it committed something."""
        raw = self._checkout()
        dbapi: Any = raw.driver_connection
        # A connection already in autocommit (an engine made that way) cannot run the
        # multi-statement writes as transactions; it is used as it is, and left as it is.
        autocommit = single and self.single_statement and not dbapi.autocommit
        cursor = None
        handle = None
        ended = False  # the transaction committed or rolled back: no reset at check-in
        try:
            if autocommit:
                dbapi.autocommit = True
            cursor = dbapi.cursor()
            notify = self._notify if self._listeners else None
            handle = Cursor(cursor, self.dialect, notify, single=autocommit)
            if self._sqlite:
                cursor.execute("BEGIN IMMEDIATE")
            yield handle
            if not autocommit:
                handle.announced = True
                self._notify("commit", handle.last[0])
                dbapi.commit()
            ended = True
        except self.dialect.loaded_dbapi.Error as error:
            self._failed(handle)
            disconnected = self.dialect.is_disconnect(error, dbapi, cursor)
            if disconnected:  # nothing to roll back on: the pool replaces the connection
                raw.invalidate(error)
            else:
                ended = self._rollback(raw, dbapi, autocommit)
            raise self._error(error, handle, disconnected=disconnected) from error
        except BaseException:
            self._failed(handle)
            ended = self._rollback(raw, dbapi, autocommit)
            raise
        finally:
            self._return(raw, dbapi, cursor, autocommit=autocommit, ended=ended)
        # what committed (an empty autocommit block committed nothing)
        return handle if handle.used or not autocommit else None

    def close(self) -> None:
        """Give back the connection kept for the writes (on SQLite), if any; writes after this
        check a connection out and give it back each time."""
        with self._gate:
            self._hold = False
            self._let_go()

    def _forked(self) -> None:
        """In a forked child: forget the parent's connections and any lock its threads held."""
        if self._held is not None:
            self._inherited.append(self._held)
            self._held = None
        if self._hold:
            # the engine is the store's own: its pool's idle connections are the parent's too
            self.engine.dispose(close=False)
        if self._sqlite:
            self._gate = threading.Lock()

    def _let_go(self) -> None:
        held, self._held = self._held, None
        if held is None:
            return
        if self._held_pool is not self.engine.pool:
            held.detach()  # the engine was disposed: closed now, not kept by the old pool
        held.close()

    def _checkout(self) -> Any:
        held = self._held
        if held is not None:
            if held.is_valid and self._held_pool is self.engine.pool:
                return held
            self._let_go()  # invalidated, or the engine was disposed: take a fresh one
        try:
            raw = self.engine.raw_connection()
        except self.dialect.loaded_dbapi.Error as error:  # a connect error the pool let through
            raise self._error(error, None, disconnected=True) from error
        if self._hold:
            self._held, self._held_pool = raw, self.engine.pool
        return raw

    def _error(self, error: Exception, handle: Cursor | None, *, disconnected: bool) -> Exception:
        sql, params = handle.last if handle is not None else ("", None)
        return sa_exc.DBAPIError.instance(
            sql,
            params,
            error,
            self.dialect.loaded_dbapi.Error,
            hide_parameters=self.engine.hide_parameters,
            connection_invalidated=disconnected,
            dialect=self.dialect,
        )

    def _return(self, raw: Any, dbapi: Any, cursor: Any, *, autocommit: bool, ended: bool) -> None:
        """Give the connection back to the pool as the pool lent it."""
        try:
            if raw.is_valid:
                if cursor is not None:
                    cursor.close()
                if autocommit:
                    dbapi.autocommit = False
        except BaseException as error:
            raw.invalidate(error if isinstance(error, Exception) else None)
            raise
        finally:
            if not (ended and raw.is_valid):
                if raw is self._held:
                    self._let_go()  # not kept: the next write takes a fresh one
                else:
                    raw.close()
            elif raw is not self._held:  # a held connection stays out, idle, for the next write
                # As SQLAlchemy's Connection does: no reset (a ROLLBACK round trip on MySQL)
                # for a connection whose transaction just ended.
                raw._close_special(transaction_reset=True)

    def _rollback(self, raw: Any, dbapi: Any, autocommit: bool) -> bool:
        """Roll back what the block began; whether the connection is now idle and valid."""
        if not raw.is_valid:
            return False
        if autocommit:
            return True
        try:
            dbapi.rollback()
        except self.dialect.loaded_dbapi.Error as error:
            raw.invalidate(error)
            return False
        return True

    def _failed(self, handle: Cursor | None) -> None:
        if handle is not None and handle.announced:
            self._tell("failed", handle.last[0])

    def _notify(self, moment: Moment, sql: str) -> None:
        for listener in self._listeners:
            listener(moment, sql)

    def _tell(self, moment: Moment, sql: str) -> None:
        """Notify a moment after the fact: a listener's error changes nothing any more."""
        try:
            self._notify(moment, sql)
        except Exception:
            log.exception("a journal writer listener failed at %r", moment)


def _after_fork_in_child() -> None:
    for writer in list(_WRITERS):
        writer._forked()


_WRITERS: weakref.WeakSet[Writer] = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

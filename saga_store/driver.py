"""The journal's write transactions, run on the pool's own driver connections.

SQLAlchemy compiles the journal's statements (``saga_store.writes``) and pools the connections;
a journal commit then runs on the checked-out DBAPI connection itself: BEGIN, the statements,
COMMIT. SQLAlchemy's ``Connection`` spends tens of microseconds on each transaction and each
statement (execution contexts, result objects, event dispatch), which on SQLite is more than
the database's own work and on every backend a large part of a step's cost.

* SQLite: ``BEGIN IMMEDIATE`` (the write lock first, as the engine's own transactions take it).
* PostgreSQL: a transaction of one statement runs in autocommit, as its own implicit
  transaction: one round trip, committed and flushed before the reply, instead of three
  (BEGIN, the statement, COMMIT).
* MySQL/MariaDB: the driver's implicit transaction and ``commit()``.

What SQLAlchemy's ``Connection`` would do on an error is done here too: a driver error becomes
SQLAlchemy's ``DBAPIError`` (so ``translate_errors`` names it), the transaction is rolled back,
and a connection the database dropped is invalidated so the pool replaces it.

Engine events for cursors and transactions do not fire for these statements (the connection
pool's do). What happens here is observed with :meth:`Writer.listen` instead: tests count the
journal's commits with it, and the crash tests kill the process at each one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from sqlalchemy import Dialect, Engine
from sqlalchemy import exc as sa_exc

__all__ = ["Cursor", "Listener", "Moment", "Writer"]

#: ``"execute"`` before each statement (with its SQL), ``"commit"`` just before a transaction
#: commits and ``"committed"`` right after it did (with the SQL of its last statement)
Moment = Literal["execute", "commit", "committed"]
Listener = Callable[[Moment, str], None]


class Cursor:
    """The statements of one write transaction (driver SQL, driver parameters)."""

    __slots__ = ("_cursor", "_notify", "_single", "dialect", "last", "used")

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
                self._notify("commit", sql)


class Writer:
    """Write transactions on one engine's pooled driver connections."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self._sqlite = self.dialect.name == "sqlite"
        #: one statement can be its own transaction (autocommit) on this driver
        self.single_statement = self.dialect.name == "postgresql" and self.dialect.driver in (
            "psycopg",
            "psycopg2",
        )
        self._listeners: tuple[Listener, ...] = ()

    def listen(self, listener: Listener) -> None:
        """Call ``listener(moment, sql)`` at each :data:`Moment` of the transactions here."""
        self._listeners = (*self._listeners, listener)

    def unlisten(self, listener: Listener) -> None:
        self._listeners = tuple(known for known in self._listeners if known is not listener)

    @contextmanager
    def transaction(self, *, single: bool = False) -> Iterator[Cursor]:
        """A write transaction, committed when the block ends and rolled back if it raises.

        ``single`` promises one statement: where the driver allows it, that statement runs as
        its own transaction, in one round trip.
        """
        raw = self.engine.raw_connection()
        dbapi: Any = raw.driver_connection
        autocommit = single and self.single_statement
        cursor = None
        handle = None
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
                self._notify("commit", handle.last[0])
                dbapi.commit()
            if handle.used or not autocommit:  # an empty autocommit block committed nothing
                self._notify("committed", handle.last[0])
        except self.dialect.loaded_dbapi.Error as error:
            disconnected = self.dialect.is_disconnect(error, dbapi, cursor)
            if disconnected:  # nothing to roll back on: the pool replaces the connection
                raw.invalidate(error)
            else:
                self._rollback(raw, dbapi, autocommit)
            sql, params = handle.last if handle is not None else ("", None)
            raise sa_exc.DBAPIError.instance(
                sql,
                params,
                error,
                self.dialect.loaded_dbapi.Error,
                connection_invalidated=disconnected,
                dialect=self.dialect,
            ) from error
        except BaseException:
            self._rollback(raw, dbapi, autocommit)
            raise
        finally:
            self._return(raw, dbapi, cursor, autocommit)

    def _return(self, raw: Any, dbapi: Any, cursor: Any, autocommit: bool) -> None:
        """Give the connection back to the pool as the pool lent it."""
        try:
            if raw.is_valid:
                if cursor is not None:
                    cursor.close()
                if autocommit:
                    dbapi.autocommit = False
        except self.dialect.loaded_dbapi.Error as error:
            raw.invalidate(error)
        raw.close()

    def _rollback(self, raw: Any, dbapi: Any, autocommit: bool) -> None:
        if autocommit or not raw.is_valid:
            return
        try:
            dbapi.rollback()
        except self.dialect.loaded_dbapi.Error:
            raw.invalidate()

    def _notify(self, moment: Moment, sql: str) -> None:
        for listener in self._listeners:
            listener(moment, sql)

"""What a store does in its database, seen from outside: every statement and every commit.

A store writes through two doors: SQLAlchemy ``Connection``\\ s (claims, history, admin,
migrations) and the journal's own driver transactions (``saga_store.driver``, every step of a
running saga). :class:`Watch` listens at both, in the order things happen, so that the tests
count commits and statements and the crash tests kill the process at a commit, whichever door it
went through.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Literal

from sqlalchemy import Connection, event

from saga_store import SagaStore

__all__ = ["Commits", "Listener", "Watch", "WhatHappened"]

#: ``execute`` (before a statement, with its SQL) or ``commit`` (just before a commit); the
#: journal's transactions also say ``committed`` (just after one) or ``failed`` (a commit they
#: announced did not happen)
WhatHappened = Literal["execute", "commit", "committed", "failed"]
#: ``(what, sql, conn)``: ``conn`` is the SQLAlchemy Connection, or None for the journal's own
Listener = Callable[[WhatHappened, str, Connection | None], None]


class Watch:
    """Calls ``listener`` for each statement and commit of ``store`` while entered.

    ``statements=False`` leaves SQLAlchemy's statements unwatched (its per-statement event
    dispatch costs more than the journal's): for benchmarks that only count commits.
    """

    def __init__(self, store: SagaStore, listener: Listener, *, statements: bool = True) -> None:
        self.store = store
        self.listener = listener
        self.with_statements = statements

    def _commit(self, conn: Connection) -> None:
        self.listener("commit", "", conn)

    def _execute(self, conn: Connection, _cursor: Any, sql: str, *_: Any) -> None:
        self.listener("execute", sql, conn)

    def _journal(self, what: WhatHappened, sql: str) -> None:
        self.listener(what, sql, None)

    def start(self) -> None:
        event.listen(self.store.engine, "commit", self._commit)
        if self.with_statements:
            event.listen(self.store.engine, "before_cursor_execute", self._execute)
        self.store.journal.writer.listen(self._journal)

    def stop(self) -> None:
        event.remove(self.store.engine, "commit", self._commit)
        if self.with_statements:
            event.remove(self.store.engine, "before_cursor_execute", self._execute)
        self.store.journal.writer.unlisten(self._journal)

    def __enter__(self) -> Watch:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class Commits(Watch):
    """Counts the store's commits, through either door, while entered."""

    def __init__(self, store: SagaStore, *, statements: bool = True) -> None:
        super().__init__(store, self._seen, statements=statements)
        self.count = 0
        self._lock = threading.Lock()

    def _seen(self, what: WhatHappened, _sql: str, _conn: Connection | None) -> None:
        if what in ("commit", "failed"):
            with self._lock:
                self.count += 1 if what == "commit" else -1

    def __enter__(self) -> Commits:
        self.start()
        return self

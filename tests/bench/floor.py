"""The floor: single-row INSERT + COMMIT transactions through SQLAlchemy Core.

Same database, same engine (the store's own, made by ``saga_store.db.make_engine``: its pool,
pre-ping, isolation level and, on SQLite, WAL, ``BEGIN IMMEDIATE`` and the synchronous mode).
A journal cannot commit faster than this, so durable sagas are measured against it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, insert

from saga_store import SagaStore

from .server import server_commits
from .support import Counter, run_for

__all__ = ["create_floor_table", "measure_floor", "once_on_floor"]

_metadata = MetaData()
floor_rows = Table(
    "bench_floor",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("payload", String(100), nullable=False),
)
_INSERT = insert(floor_rows)
_PAYLOAD = {"payload": "x" * 40}


def _driver_insert(engine: Engine) -> tuple[str, Any]:
    """The floor's INSERT as driver SQL and parameters for the engine's dialect."""
    compiled = _INSERT.compile(dialect=engine.dialect, column_keys=list(_PAYLOAD))
    if compiled.positional:
        return compiled.string, tuple(_PAYLOAD[name] for name in compiled.positiontup or ())
    return compiled.string, dict(_PAYLOAD)


def create_floor_table(engine: Engine) -> None:
    _metadata.create_all(engine)


def once_on_floor(store: SagaStore, *, driver: bool = False) -> Callable[[], None]:
    """One floor transaction: a one-row INSERT and its COMMIT (see :func:`measure_floor`)."""
    engine = store.engine
    if not driver:

        def once() -> None:
            with engine.begin() as conn:
                conn.execute(_INSERT, _PAYLOAD)

        return once
    writer = store.journal.writer
    sql, params = _driver_insert(engine)

    def once_on_driver() -> None:
        with writer.transaction(single=True) as cursor:
            cursor.execute(sql, params)

    return once_on_driver


def measure_floor(store: SagaStore, seconds: float, *, driver: bool = False) -> dict[str, Any]:
    """Commit one-row transactions on the store's engine for ``seconds``; returns commits and
    commits/s, counted by the same counter as the sagas' commits.

    ``driver``: the same INSERT through the journal's own driver transactions (one statement:
    on PostgreSQL in autocommit, one round trip), the cheapest commit the journal could make.
    """
    engine = store.engine
    once = once_on_floor(store, driver=driver)

    before = server_commits(engine)
    with Counter(store) as counter:
        transactions, elapsed = run_for(seconds, once)
    after = server_commits(engine)
    if counter.commits != transactions:
        raise RuntimeError(f"{transactions} transactions but {counter.commits} commits counted")
    return {
        "commits": counter.commits,
        "seconds": elapsed,
        "commits_per_s": counter.commits / elapsed,
        "server_commits": None if before is None or after is None else after - before,
    }

"""The floor: single-row INSERT + COMMIT transactions through SQLAlchemy Core.

Same database, same engine (the store's own, made by ``saga_store.db.make_engine``: its pool,
pre-ping, isolation level and, on SQLite, WAL, ``BEGIN IMMEDIATE`` and the synchronous mode).
A journal cannot commit faster than this, so durable sagas are measured against it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, insert

from saga_store import SagaStore

from .server import server_commits
from .support import Counter, run_for

__all__ = ["create_floor_table", "measure_floor"]

_metadata = MetaData()
floor_rows = Table(
    "bench_floor",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("payload", String(100), nullable=False),
)
_INSERT = insert(floor_rows)
_PAYLOAD = {"payload": "x" * 40}


def create_floor_table(engine: Engine) -> None:
    _metadata.create_all(engine)


def measure_floor(store: SagaStore, seconds: float) -> dict[str, Any]:
    """Commit one-row transactions on the store's engine for ``seconds``; returns commits and
    commits/s, counted by the same counter as the sagas' commits.
    """
    engine = store.engine

    def once() -> None:
        with engine.begin() as conn:
            conn.execute(_INSERT, _PAYLOAD)

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

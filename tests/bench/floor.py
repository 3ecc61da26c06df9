"""The floor: single-row INSERT + COMMIT transactions through SQLAlchemy Core.

Same database, same engine (the store's own, made by ``saga_store.db.make_engine``: its pool,
pre-ping, isolation level and, on SQLite, WAL, ``BEGIN IMMEDIATE`` and the synchronous mode).
A journal cannot commit faster than this, so durable sagas are measured against it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, insert

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


def measure_floor(engine: Engine, seconds: float) -> dict[str, Any]:
    """Commit one-row transactions for ``seconds``; returns commits and commits/s.

    The commits are counted by the same listener as the sagas' (a listener makes SQLAlchemy
    dispatch events on every statement, so both sides pay for it alike).
    """

    def once() -> None:
        with engine.begin() as conn:
            conn.execute(_INSERT, _PAYLOAD)

    with Counter(engine) as counter:
        transactions, elapsed = run_for(seconds, once)
    if counter.commits != transactions:
        raise RuntimeError(f"{transactions} transactions but {counter.commits} commits counted")
    return {
        "commits": counter.commits,
        "seconds": elapsed,
        "commits_per_s": counter.commits / elapsed,
    }

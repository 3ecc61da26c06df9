"""SQLite's own work per commit: the pages a commit appends to the write-ahead log.

A commit costs SQLite about one WAL frame (a page) per page it changed, and checkpoints copy
them back later; the floor's one-row INSERT changes one page. Counted with automatic
checkpoints off, on a store of its own beside the benchmark's, so nothing timed is touched.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url

from saga_store import SagaStore

from .floor import once_on_floor
from .support import MODES, BenchDb, Counter, durable_saga, open_store, repeatedly

__all__ = ["wal_frames_per_commit"]

_SAGAS = 20


def wal_frames_per_commit(url: str, db: BenchDb) -> dict[str, float]:
    """WAL frames per commit of the floor and of each saga mode (SQLite only)."""
    store = open_store(url, db, heartbeat=False)

    @event.listens_for(store.engine, "connect")
    def _no_checkpoints(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")

    path = make_url(url).database or ""
    probe = sqlite3.connect(path, isolation_level=None)
    try:
        floor = once_on_floor(store)
        figures = {"floor": _frames(store, probe, floor, _SAGAS * 6)}
        for mode in MODES:
            figures[mode] = _frames(
                store, probe, repeatedly(partial(durable_saga, store), mode), _SAGAS
            )
        return figures
    finally:
        probe.close()
        store.close()


def _frames(
    store: SagaStore, probe: sqlite3.Connection, once: Callable[[], object], times: int
) -> float:
    probe.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with Counter(store) as counter:
        for _ in range(times):
            once()
    _busy, frames, _copied = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return float(frames) / counter.commits

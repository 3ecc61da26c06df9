"""What every benchmark section shares: the databases, the saga, the stores, and counters.

The saga is the issue's: five orchestrated (or choreographed) steps whose functions do nothing
but return, each with a compensation, so that what is measured is the engine and its journal.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection

from micro_saga import Operation, SagaAssembler
from saga_store import Registry, SagaStore
from saga_store.db import SqliteSync
from tests import dbs
from tests.watch import Commits, WhatHappened

__all__ = [
    "MODES",
    "REGISTRY",
    "STEPS",
    "BenchDb",
    "Counter",
    "bench_databases",
    "durable_saga",
    "fresh_database",
    "in_memory_saga",
    "open_store",
    "repeatedly",
    "run_for",
    "runner",
    "step",
    "undo",
]

#: steps per saga, as the issue asks
STEPS = 5

#: the benchmark's own registry, so that its functions never mix with the tests'
REGISTRY = Registry()


@REGISTRY.register(name="bench:step")
def step(value: int) -> int:
    return value


@REGISTRY.register(name="bench:undo")
def undo(value: int) -> None:
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchDb:
    """One database setting to measure: a backend and, for SQLite, its synchronous mode."""

    label: str
    backend: dbs.Backend
    sqlite_synchronous: SqliteSync = "FULL"


def bench_databases(backends: list[dbs.Backend]) -> list[BenchDb]:
    """The settings to run: SQLite twice (synchronous FULL, the default, and NORMAL)."""
    found: list[BenchDb] = []
    for backend in backends:
        if backend == "sqlite":
            found.append(BenchDb(label="sqlite-full", backend="sqlite"))
            found.append(
                BenchDb(label="sqlite-normal", backend="sqlite", sqlite_synchronous="NORMAL")
            )
        else:
            found.append(BenchDb(label=backend, backend=backend))
    return found


@contextmanager
def fresh_database(backend: dbs.Backend) -> Iterator[str]:
    """A throwaway database (SQLite: a file in a temporary folder), dropped afterwards."""
    with tempfile.TemporaryDirectory(prefix="saga-bench-") as folder:
        url = dbs.create_database(dbs.base_url(backend, Path(folder)))
        try:
            yield url
        finally:
            dbs.drop_database(url)


def open_store(
    url: str,
    db: BenchDb,
    *,
    heartbeat: bool = True,
    worker_id: str | None = None,
    upgrade: bool = False,
) -> SagaStore:
    store = SagaStore(
        url,
        registry=REGISTRY,
        sqlite_synchronous=db.sqlite_synchronous,
        heartbeat=heartbeat,
        worker_id=worker_id,
    )
    if upgrade:
        store.upgrade()
    return store


def _operations(assembler: SagaAssembler, steps: int = STEPS) -> SagaAssembler:
    for i in range(steps):
        assembler.operation(Operation(step, i).add_compensation(undo, i).named(f"step{i}"))
    return assembler


def durable_saga(
    store: SagaStore, saga_id: str | None = None, *, steps: int = STEPS
) -> SagaAssembler:
    return _operations(store.saga("bench", saga_id=saga_id), steps)


def in_memory_saga() -> SagaAssembler:
    return _operations(SagaAssembler.saga(name="bench"))


Mode = Literal["orchestrated", "choreographed"]
MODES: tuple[Mode, ...] = ("orchestrated", "choreographed")


def runner(assembler: SagaAssembler, mode: Mode) -> Callable[[], list[Any]]:
    if mode == "orchestrated":
        return assembler.orchestrator_execute
    return assembler.choreography_execute


def repeatedly(make: Callable[[], SagaAssembler], mode: Mode) -> Callable[[], list[Any]]:
    """A function that builds a new saga with ``make`` and runs it, each time it is called."""

    def once() -> list[Any]:
        return runner(make(), mode)()

    return once


class Counter(Commits):
    """Counts what a store does while attached: commits, and (``statements=True``) statements
    by kind.

    Commits are counted where they happen, through either door (SQLAlchemy's ``commit`` event,
    the journal's driver transactions): a commit budget is measured, never assumed.
    """

    def __init__(self, store: SagaStore, *, statements: bool = False) -> None:
        super().__init__(store, statements=statements)
        self.statements: dict[str, int] = {}

    @property
    def commits(self) -> int:
        return self.count

    def _seen(self, what: WhatHappened, sql: str, conn: Connection | None) -> None:
        super()._seen(what, sql, conn)
        if what == "execute" and self.with_statements:
            kind = classify(sql)
            self.statements[kind] = self.statements.get(kind, 0) + 1

    def __enter__(self) -> Counter:
        self.start()
        return self


def classify(statement: str) -> str:
    """A statement's kind for the counts: ``select``, ``claim``, ``insert``, ``update``..."""
    words = statement.lstrip().split(None, 1)
    verb = words[0].lower() if words else ""
    if verb == "update" and "saga_sagas" in statement and "parked_by" in statement:
        return "claim"  # a claim clears the parked fields; the journal's own writes do not
    return verb


def run_for(seconds: float, once: Callable[[], object]) -> tuple[int, float]:
    """Call ``once`` until ``seconds`` have passed; returns (calls, elapsed seconds)."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline:
        once()
        count += 1
        now = time.perf_counter()
    return count, now - start

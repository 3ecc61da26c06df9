"""Async execution on the store never blocks the event loop on the database.

The store's journal is slowed down on purpose (every statement sleeps 50 ms in a
``before_cursor_execute`` hook, standing for slow I/O) while a ticker coroutine counts loop
ticks every 5 ms: if any journal write ran on the loop, the ticker would stall for its length.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import pytest
import sqlalchemy as sa

from micro_saga import AsyncOperation, Operation, SagaAssembler
from saga_store import SagaStore, default_registry
from tests.watch import Watch, WhatHappened

#: how long each SQL statement of the store takes in these tests
STATEMENT_DELAY = 0.05
TICK = 0.005

_lock = threading.Lock()
_calls: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _fresh_counters() -> Iterator[None]:
    _calls.clear()
    yield
    _calls.clear()


def _hit(name: str) -> None:
    with _lock:
        _calls[name] += 1


async def pay(order: int) -> str:
    await asyncio.sleep(0)
    _hit("pay")
    return f"paid {order}"


async def repay(order: int) -> str:
    await asyncio.sleep(0)
    _hit("repay")
    return f"repaid {order}"


def pack(order: int) -> str:  # a plain function: the async runner calls it in a thread
    _hit("pack")
    return f"packed {order}"


async def post(order: int) -> str:
    await asyncio.sleep(0)
    _hit("post")
    with _lock:
        first = _calls["post"] == 1
    if first:
        raise ConnectionError("courier API timed out")
    return f"posted {order}"


for _func in (pay, repay, pack, post):
    default_registry.register(_func)


class SlowStatements(Watch):
    """Makes every statement of ``store`` take STATEMENT_DELAY, noting which thread ran it."""

    def __init__(self, store: SagaStore) -> None:
        super().__init__(store, self._slow)
        self.threads: list[int] = []
        self._lock = threading.Lock()

    def _slow(self, what: WhatHappened, _sql: str, _conn: sa.Connection | None) -> None:
        if what != "execute":
            return
        with self._lock:
            self.threads.append(threading.get_ident())
        time.sleep(STATEMENT_DELAY)  # slow I/O, not a wait for time to pass

    def __enter__(self) -> SlowStatements:
        self.start()
        return self


def _checkout(store: SagaStore, saga_id: str) -> SagaAssembler:
    saga = store.saga("checkout", retry_attempts=2, saga_id=saga_id)
    saga.operation(AsyncOperation(pay, 1).add_compensation(repay, 1))
    saga.operation(Operation(pack, 1))
    saga.operation(AsyncOperation(post, 1))
    return saga


async def _run_with_ticker(saga: SagaAssembler, mode: str) -> tuple[list[Any], list[float], int]:
    """Run the saga while counting ticks; returns results, tick times and the loop's thread."""
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            await asyncio.sleep(TICK)
            ticks.append(time.monotonic())

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        if mode == "orchestrated":
            results = await saga.orchestrator_execute_async()
        else:
            results = await saga.choreography_execute_async()
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
    return results, ticks, threading.get_ident()


@pytest.mark.parametrize("mode", ["orchestrated", "choreographed"])
def test_a_slow_database_does_not_block_the_event_loop(store: SagaStore, mode: str) -> None:
    saga = _checkout(store, f"slow-{mode}")

    with SlowStatements(store) as slow:
        started = time.monotonic()
        results, ticks, loop_thread = asyncio.run(_run_with_ticker(saga, mode))
        elapsed = time.monotonic() - started

    assert results == ["paid 1", "packed 1", "posted 1"]
    assert _calls == Counter(pay=1, pack=1, post=2)
    statements = len(slow.threads)
    assert statements >= 6, statements
    # No statement ran on the loop's thread...
    assert loop_thread not in slow.threads
    # ...so the ticker kept ticking through every one of them. A loop blocked by each 50 ms
    # statement would tick about once per statement; a free one about ten times.
    assert len(ticks) >= 3 * statements, (len(ticks), statements, elapsed)
    gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    assert max(gaps) < 10 * STATEMENT_DELAY, max(gaps)
    record = store.get(f"slow-{mode}")
    assert record.status == "succeeded"
    assert [(a.step, a.attempt, a.status) for a in sorted(record.attempts, key=_key)] == [
        (0, 1, "succeeded"),
        (1, 1, "succeeded"),
        (2, 1, "failed"),
        (2, 2, "succeeded"),
    ]


def _key(attempt: Any) -> tuple[int, int]:
    return attempt.step, attempt.attempt


def test_many_async_sagas_share_one_loop_and_one_store(store: SagaStore) -> None:
    async def main() -> list[list[Any]]:
        sagas = []
        for order in range(8):
            saga = store.saga("fan", saga_id=f"fan-{order}")
            saga.operation(AsyncOperation(pay, order).add_compensation(repay, order))
            saga.operation(Operation(pack, order))
            sagas.append(
                saga.orchestrator_execute_async()
                if order % 2
                else saga.choreography_execute_async()
            )
        return list(await asyncio.gather(*sagas))

    outcomes = asyncio.run(main())

    assert outcomes == [[f"paid {o}", f"packed {o}"] for o in range(8)]
    assert _calls == Counter(pay=8, pack=8)
    for order in range(8):
        record = store.get(f"fan-{order}")
        assert record.status == "succeeded"
        assert sorted((a.step, a.status) for a in record.attempts) == [
            (0, "succeeded"),
            (1, "succeeded"),
        ]

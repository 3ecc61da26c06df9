"""Cancelling an async saga never lets go of it while one of its steps still runs in a thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

from micro_saga import AsyncOperation, InMemoryJournal, Operation, SagaAssembler


class WatchingJournal(InMemoryJournal):
    """Notes whether the step thread was still running when the saga was released."""

    def __init__(self, step_done: threading.Event) -> None:
        super().__init__()
        self.step_done = step_done
        self.released_while_running: bool | None = None

    def release(self, saga_id: str) -> None:
        self.released_while_running = not self.step_done.is_set()
        super().release(saga_id)


async def nothing() -> None:
    return None


def test_a_cancelled_saga_is_released_only_after_its_thread_step_returns() -> None:
    entered, go_on, done = threading.Event(), threading.Event(), threading.Event()

    def slow_charge() -> str:
        entered.set()
        go_on.wait(10)
        done.set()
        return "paid"

    journal = WatchingJournal(done)
    saga = SagaAssembler.saga(journal=journal)
    saga.operation(Operation(slow_charge)).operation(AsyncOperation(nothing))

    async def main() -> None:
        task = asyncio.ensure_future(saga.orchestrator_execute_async())
        await asyncio.to_thread(entered.wait, 10)
        task.cancel()
        await asyncio.sleep(0)  # let the cancellation reach the saga
        go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert journal.released_while_running is False
    assert done.is_set()

"""Coroutine steps and the asyncio runner.

The behaviours shared with the sync runner (compensation order, reports, retries, context) run
under both runners and with coroutine steps through the ``flavour`` fixture in the other modules;
this module holds what only asyncio has.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import pytest

from micro_saga import (
    AsyncOperation,
    AttemptFinished,
    Event,
    InMemoryJournal,
    Operation,
    SagaAssembler,
    SagaDefinitionError,
    SagaException,
)
from micro_saga.plan import Mode
from tests.unit.helpers import HookJournal, Log, Runner, described, execute

modes = pytest.mark.parametrize("mode", ["orchestrated", "choreographed"])


def _meeting(names: Sequence[str]) -> Callable[[str], Coroutine[Any, Any, str]]:
    """A coroutine step that returns only once every one of ``names`` has started."""
    arrived: dict[str, asyncio.Event] = {}

    async def meet(name: str) -> str:
        for other in names:
            arrived.setdefault(other, asyncio.Event())
        arrived[name].set()
        # Run one after another, the first step would wait here until the timeout.
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in arrived.values())), timeout=5)
        return name

    return meet


def test_async_operation_is_an_operation_with_a_coroutine_function() -> None:
    async def act() -> int:
        return 1

    op = AsyncOperation(act)
    saga = SagaAssembler.saga().operation(op)

    assert isinstance(op, Operation)
    assert op.call.is_async
    assert saga.plan("orchestrated").is_async
    assert not SagaAssembler.saga().operation(Operation(print)).plan("orchestrated").is_async


@pytest.mark.parametrize("runner", ["sync", "async"])
def test_coroutine_steps_run_concurrently_when_choreographed(runner: Runner) -> None:
    names = ["a", "b", "c"]
    meet = _meeting(names)
    saga = SagaAssembler.saga()
    for name in names:
        saga.operation(AsyncOperation(meet, name))

    assert execute(saga, "choreographed", runner) == names


@pytest.mark.parametrize("runner", ["sync", "async"])
def test_a_coroutine_step_that_succeeds_after_another_failed_is_compensated(
    runner: Runner, log: Log
) -> None:
    fast_failed = asyncio.Event()

    def on_record(event: Event) -> None:
        if isinstance(event, AttemptFinished) and event.step == 0 and event.status == "failed":
            fast_failed.set()

    async def fast() -> str:
        raise ValueError("fast broke")

    async def slow() -> str:
        # Finishes only once the fast step's failure is in the journal.
        await asyncio.wait_for(fast_failed.wait(), timeout=5)
        log.add("slow done")
        return "slow"

    async def undo(name: str) -> str:
        log.add(f"undo {name}")
        return f"undo {name}"

    journal = HookJournal(on_record)
    saga = SagaAssembler.saga(journal=journal)
    saga.operation(AsyncOperation(fast).add_compensation(undo, "fast"))
    saga.operation(AsyncOperation(slow).add_compensation(undo, "slow"))

    with pytest.raises(SagaException) as caught:
        execute(saga, "choreographed", runner)

    events = described(journal)
    assert events.index(("AttemptFinished", 0, "action", 1, "failed")) < events.index(
        ("AttemptFinished", 1, "action", 1, "succeeded")
    )
    assert log.entries == ["slow done", "undo slow"]
    assert caught.value.operation_name == "fast"
    assert caught.value.compensation_success_result == ["undo slow"]


@modes
def test_sync_methods_run_coroutine_steps_when_no_loop_runs(mode: Mode, log: Log) -> None:
    async def act(name: str) -> str:
        await asyncio.sleep(0)
        log.add(name)
        return name.upper()

    saga = SagaAssembler.saga()
    saga.operation(AsyncOperation(act, "a")).operation(Operation(log.step("b", result="B")))

    assert execute(saga, mode, "sync") == ["A", "B"]
    assert sorted(log.entries) == ["a", "b"]


@modes
def test_sync_methods_refuse_coroutine_steps_inside_a_running_loop(mode: Mode, log: Log) -> None:
    async def act() -> None:
        log.add("act")

    saga = SagaAssembler.saga().operation(AsyncOperation(act))
    method = "orchestrator_execute" if mode == "orchestrated" else "choreography_execute"

    async def main() -> None:
        with pytest.raises(SagaDefinitionError, match=re.escape(f"await saga.{method}_async()")):
            execute(saga, mode, "sync")

    asyncio.run(main())
    assert log.entries == []


@modes
def test_the_async_runner_runs_plain_steps_off_the_event_loop(mode: Mode) -> None:
    def where() -> int:
        return threading.get_ident()

    saga = SagaAssembler.saga().operation(Operation(where)).operation(Operation(where))

    # asyncio.run drives the loop in this thread.
    threads = execute(saga, mode, "async")

    assert threading.get_ident() not in threads


class BlockingJournal(InMemoryJournal):
    """A journal that says it does blocking I/O, and notes the threads it was called in."""

    blocks = True

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def record(self, events: Sequence[Event], *, durable: bool) -> None:
        self.threads.add(threading.get_ident())
        super().record(events, durable=durable)


@modes
def test_a_blocking_journal_is_called_off_the_event_loop(mode: Mode) -> None:
    async def act() -> str:
        return "done"

    journal = BlockingJournal()
    saga = SagaAssembler.saga(journal=journal).operation(AsyncOperation(act))

    assert execute(saga, mode, "async") == ["done"]
    assert journal.threads
    assert threading.get_ident() not in journal.threads

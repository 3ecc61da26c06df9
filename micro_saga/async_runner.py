"""The asyncio runner: the sync runner's twin, with tasks for concurrency.

Sync functions run in worker threads, and a journal that blocks is called in a worker thread,
so the event loop never waits on a step or on the database.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from . import clock
from .context import CURRENT, StepKind
from .core import Batch, Execution
from .decide import BeginCompensation, Done, GaveUp, RunSteps, Wait
from .journal import Journal
from .plan import SagaPlan
from .runner import first_starts

__all__ = ["AsyncSleep", "run_async"]

AsyncSleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")


async def run_async(
    plan: SagaPlan,
    journal: Journal,
    *,
    sleep: AsyncSleep = asyncio.sleep,
    rand: Callable[[], float],
) -> list[Any]:
    """Run (or resume) a saga to its end inside an event loop."""
    ex = Execution(plan, journal, rand)
    threads: set[asyncio.Future[Any]] = set()
    prior = await _io(journal, journal.open, plan)
    try:
        await _apply(ex, ex.opening(prior))
        while True:
            action = ex.next_saga()
            if isinstance(action, RunSteps):
                await _run_steps(ex, action, sleep, threads)
                continue
            await _apply(ex, ex.transition(action))
            if not isinstance(action, BeginCompensation):
                return ex.outcome()
    finally:
        # Cancelling the saga cannot stop a step running in a thread: keep the saga (and its
        # lease) until that step returns, or another worker could run it a second time.
        running = [t for t in threads if not t.done()]
        if running:
            await asyncio.wait(running)
        await _io(journal, journal.release, plan.saga_id)


async def _io(journal: Journal, func: Callable[..., T], *args: Any) -> T:
    if journal.blocks:
        return await asyncio.to_thread(func, *args)
    return func(*args)


async def _apply(ex: Execution, batch: Batch) -> None:
    await _io(ex.journal, ex.apply, batch)


async def _run_steps(
    ex: Execution, action: RunSteps, sleep: AsyncSleep, threads: set[asyncio.Future[Any]]
) -> None:
    if len(action.steps) == 1:
        await _run_step(ex, action.steps[0], action.kind, sleep, None, threads)
        return
    starts = first_starts(ex, action)
    await _apply(
        ex, Batch(tuple(ex.started(i, action.kind, n) for i, n in starts.items()), durable=True)
    )
    outcomes = await asyncio.gather(
        *(_run_step(ex, i, action.kind, sleep, starts.get(i), threads) for i in action.steps),
        return_exceptions=True,
    )
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def _run_step(  # noqa: PLR0917  (the twin of runner._run_step, plus the threads)
    ex: Execution,
    step: int,
    kind: StepKind,
    sleep: AsyncSleep,
    number: int | None,
    threads: set[asyncio.Future[Any]],
) -> None:
    while True:
        if number is None:
            move = ex.next_step(step, kind)
            if isinstance(move, Done | GaveUp):
                return
            if isinstance(move, Wait):
                await sleep(max(0.0, (move.until - clock.utcnow()).total_seconds()))
                continue
            number = move.number
            await _apply(ex, Batch((ex.started(step, kind, number),), durable=True))
        call, bound, context = ex.prepare(step, kind, number)
        token = CURRENT.set(context)
        result: Any = None
        error: Exception | None = None
        try:
            if call.is_async:
                result = await bound()
            else:
                thread = asyncio.ensure_future(asyncio.to_thread(bound))
                threads.add(thread)
                result = await asyncio.shield(thread)
                if inspect.isawaitable(result):
                    result = await result
        except Exception as exc:
            error = exc
        finally:
            CURRENT.reset(token)
        await _io(ex.journal, ex.settle, step, kind, number, result, error)
        number = None

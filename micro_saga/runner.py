"""The synchronous runner: carries out the engine's decisions with threads for concurrency."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import wait
from typing import Any

from . import clock
from .context import CURRENT, StepKind
from .core import Batch, Execution
from .decide import BeginCompensation, Done, GaveUp, RunAttempt, RunSteps, Wait
from .journal import Journal
from .plan import SagaPlan
from .workers import workers

__all__ = ["Sleep", "run"]

Sleep = Callable[[float], None]


def run(
    plan: SagaPlan, journal: Journal, *, sleep: Sleep = time.sleep, rand: Callable[[], float]
) -> list[Any]:
    """Run (or resume) a saga to its end; return its results or raise SagaException."""
    ex = Execution(plan, journal, rand)
    prior = journal.open(plan)
    try:
        ex.apply(ex.opening(prior))
        while True:
            action = ex.next_saga()
            if isinstance(action, RunSteps):
                _run_steps(ex, action, sleep)
                continue
            ex.apply(ex.transition(action))
            if not isinstance(action, BeginCompensation):
                return ex.outcome()
    finally:
        journal.release(plan.saga_id)


def _run_steps(ex: Execution, action: RunSteps, sleep: Sleep) -> None:
    if len(action.steps) == 1:
        _run_step(ex, action.steps[0], action.kind, sleep, None)
        return
    starts = first_starts(ex, action)
    ex.apply(Batch(tuple(ex.started(i, action.kind, n) for i, n in starts.items()), durable=True))
    futures = []
    try:
        for i in action.steps:  # one by one: those submitted before a failed submit are waited for
            futures.append(workers.submit(_run_step, ex, i, action.kind, sleep, starts.get(i)))  # noqa: PERF401
    finally:
        # every step still in flight finishes (and is journaled) before compensating, or
        # before a thread that could not start is reported
        wait(futures)
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error


def first_starts(ex: Execution, action: RunSteps) -> dict[int, int]:
    """Attempt numbers of the steps that can start at once (their starts share one commit)."""
    starts: dict[int, int] = {}
    for index in action.steps:
        move = ex.next_step(index, action.kind)
        if isinstance(move, RunAttempt):
            starts[index] = move.number
    return starts


def _run_step(ex: Execution, step: int, kind: StepKind, sleep: Sleep, number: int | None) -> None:
    while True:
        if number is None:
            move = ex.next_step(step, kind)
            if isinstance(move, Done | GaveUp):
                return
            if isinstance(move, Wait):
                sleep(max(0.0, (move.until - clock.utcnow()).total_seconds()))
                continue
            number = move.number
            ex.apply(Batch((ex.started(step, kind, number),), durable=True))
        _, bound, context = ex.prepare(step, kind, number)
        token = CURRENT.set(context)
        result: Any = None
        error: Exception | None = None
        try:
            result = bound()
        except Exception as exc:
            error = exc
        finally:
            CURRENT.reset(token)
        ex.settle(step, kind, number, result, error)
        number = None

"""Shared pieces of the engine's unit tests: fake sleeps, step recorders, run flavours."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from freezegun.api import FrozenDateTimeFactory

from micro_saga import (
    AsyncOperation,
    AttemptFinished,
    AttemptStarted,
    Event,
    InMemoryJournal,
    Operation,
    SagaAssembler,
    SagaFinished,
    SagaStarted,
    StatusChanged,
)
from micro_saga.context import StepKind
from micro_saga.plan import Mode

#: the instant every frozen test starts at
START = datetime(2024, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """``START`` plus ``seconds``."""
    return START + timedelta(seconds=seconds)


class FakeSleep:
    """The sleep seams: record each delay and move the frozen clock by it instead of waiting."""

    def __init__(self, frozen: FrozenDateTimeFactory) -> None:
        self.frozen = frozen
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.frozen.tick(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self(seconds)


class Log:
    """A thread-safe list of what the steps did, in the order they did it."""

    def __init__(self) -> None:
        self.entries: list[str] = []
        self._lock = threading.Lock()

    def add(self, entry: str) -> None:
        with self._lock:
            self.entries.append(entry)

    def step(self, name: str, result: Any = None) -> Callable[..., Any]:
        """A step that logs ``name`` and returns ``result`` (``name`` when None)."""

        def run(*args: Any, **kwargs: Any) -> Any:
            self.add(name)
            return name if result is None else result

        run.__name__ = name
        return run

    def failing(
        self, name: str, times: int | None = None, result: Any = None
    ) -> Callable[..., Any]:
        """A step that logs ``name`` and raises ValueError(name) the first ``times`` calls
        (every call when None), then returns ``result`` (``name`` when None)."""
        calls = 0

        def run(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            self.add(name)
            if times is None or calls <= times:
                raise ValueError(f"{name} broke")
            return name if result is None else result

        run.__name__ = name
        return run

    def count(self, name: str) -> int:
        return self.entries.count(name)


class HookJournal(InMemoryJournal):
    """An in-memory journal that calls ``hook`` with each event once it is recorded."""

    def __init__(self, hook: Callable[[Event], None]) -> None:
        super().__init__()
        self.hook = hook

    def record(self, events: Sequence[Event], *, durable: bool) -> None:
        super().record(events, durable=durable)
        for event in events:
            self.hook(event)


Described = tuple[Any, ...]


def describe(event: Event) -> Described:
    """A short, comparable form of an event (times and plans left out)."""
    if isinstance(event, SagaStarted):
        return ("SagaStarted", event.plan.saga_id)
    if isinstance(event, AttemptStarted):
        return ("AttemptStarted", event.step, event.kind, event.number)
    if isinstance(event, AttemptFinished):
        return ("AttemptFinished", event.step, event.kind, event.number, event.status)
    if isinstance(event, StatusChanged):
        return ("StatusChanged", event.status)
    assert isinstance(event, SagaFinished)
    return ("SagaFinished", event.status)


def described(journal: InMemoryJournal) -> list[Described]:
    return [describe(event) for event in journal.events]


def started(
    saga_id: str, step: int, number: int = 1, kind: StepKind = "action", when: float = 0
) -> AttemptStarted:
    return AttemptStarted(saga_id=saga_id, step=step, kind=kind, number=number, at=at(when))


def finished(
    saga_id: str,
    step: int,
    number: int = 1,
    kind: StepKind = "action",
    *,
    status: Literal["succeeded", "failed", "interrupted"] = "succeeded",
    result: Any = None,
    when: float = 0,
    **extra: Any,
) -> AttemptFinished:
    return AttemptFinished(
        saga_id=saga_id,
        step=step,
        kind=kind,
        number=number,
        at=at(when),
        status=status,
        result=result,
        **extra,
    )


def as_coroutine(func: Callable[..., Any]) -> Callable[..., Coroutine[Any, Any, Any]]:
    """The coroutine-function twin of a sync step (same name, same behaviour)."""

    @functools.wraps(func)
    async def run(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return func(*args, **kwargs)

    return run


Runner = Literal["sync", "async"]


@dataclass(frozen=True)
class Flavour:
    """How a behaviour test runs: steps as plain or coroutine functions, driven by the sync
    methods (``orchestrator_execute``) or awaited (``orchestrator_execute_async``)."""

    coroutines: bool
    runner: Runner

    @property
    def id(self) -> str:
        return f"{'async' if self.coroutines else 'sync'}_steps-{self.runner}_runner"

    def op(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Operation:
        if self.coroutines:
            return AsyncOperation(as_coroutine(func), *args, **kwargs)
        return Operation(func, *args, **kwargs)

    def compensate(
        self, op: Operation, func: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Operation:
        wrapped = as_coroutine(func) if self.coroutines else func
        return op.add_compensation(wrapped, *args, **kwargs)

    def execute(self, saga: SagaAssembler, mode: Mode = "orchestrated") -> list[Any]:
        return execute(saga, mode, self.runner)


FLAVOURS = [
    Flavour(coroutines, runner) for coroutines in (False, True) for runner in ("sync", "async")
]


def execute(saga: SagaAssembler, mode: Mode, runner: Runner) -> list[Any]:
    """Run ``saga`` in ``mode`` through the sync method or the awaited async one."""
    if runner == "sync":
        if mode == "orchestrated":
            return saga.orchestrator_execute()
        return saga.choreography_execute()
    if mode == "orchestrated":
        return asyncio.run(saga.orchestrator_execute_async())
    return asyncio.run(saga.choreography_execute_async())

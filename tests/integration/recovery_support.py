"""What the recovery tests share: scripted steps, in-process crashes, dying stores, probes.

A saga is abandoned here without killing a process (the SIGKILL proofs live in tests/crash):
a step raises :class:`Crash`, a BaseException the engine does not catch, so the attempt stays
'started' exactly as a dead process leaves it. A store that never releases its sagas
(:func:`dying_process`) leaves them with a live lease, as after a SIGKILL; an ordinary store
releases them on the way out, which expires the lease at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import Engine, Row, select

from micro_saga import ACTION_RESULT, AsyncOperation, Operation, RetryPolicy, SagaAssembler
from micro_saga.plan import Mode
from saga_store import AttemptRecord, Registry, SagaRecord, SagaStore, default_registry
from saga_store.tables import sagas

#: the instant every frozen test starts at
START = datetime(2024, 1, 1, tzinfo=UTC)
LEASE = 30.0

Flavour = Literal["sync", "async"]
Behaviour = Literal["ok", "crash", "fail", "block"]

MODES: tuple[Mode, ...] = ("orchestrated", "choreographed")
FLAVOURS: tuple[Flavour, ...] = ("sync", "async")
#: every mode with every flavour, named: one database serves all four (each saga and step
#: label carries the name), which keeps the suite fast on servers
VARIANTS: tuple[tuple[str, Mode, Flavour], ...] = tuple(
    (f"{mode}-{flavour}", mode, flavour) for mode in MODES for flavour in FLAVOURS
)


def at(seconds: float) -> datetime:
    """``START`` plus ``seconds``."""
    return START + timedelta(seconds=seconds)


class Crash(BaseException):
    """The process dying mid-step: not an Exception, so the engine lets it through untouched
    and the attempt stays 'started' in the journal."""


class Boom(Exception):
    """An ordinary step failure: it counts against the step's retry attempts."""


@dataclass(frozen=True, slots=True)
class StepCall:
    """One call of a scripted function."""

    kind: str  # "act" or "undo"
    label: str
    thread: str
    #: id() of the event loop the call ran on, None outside a loop
    loop: int | None
    #: what an undo received as its action's result
    received: Any = None


class Script:
    """What each scripted step does on its next calls, and every call made (thread-safe).

    Behaviours are consumed one per call, then every further call is "ok". "block" waits for
    ``gate`` after setting ``entered``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plans: dict[tuple[str, str], list[Behaviour]] = {}
        self.calls: list[StepCall] = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def reset(self) -> None:
        with self._lock:
            self._plans.clear()
            self.calls.clear()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def on(self, kind: str, label: str, *behaviours: Behaviour) -> None:
        with self._lock:
            self._plans[kind, label] = list(behaviours)

    def perform(self, kind: str, label: str, received: Any = None) -> str:
        try:
            loop: int | None = id(asyncio.get_running_loop())
        except RuntimeError:
            loop = None
        with self._lock:
            self.calls.append(
                StepCall(kind, label, threading.current_thread().name, loop, received)
            )
            plan = self._plans.get((kind, label))
            behaviour: Behaviour = plan.pop(0) if plan else "ok"
        if behaviour == "crash":
            raise Crash(f"{kind} {label}: the process died")
        if behaviour == "fail":
            raise Boom(f"{kind} {label} failed")
        if behaviour == "block":
            self.entered.set()
            if not self.gate.wait(30):
                raise TimeoutError(f"{kind} {label}: nobody opened the gate")
        return f"{kind} {label}"

    def count(self, kind: str, label: str, *, thread: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for c in self.calls
                if c.kind == kind and c.label == label and thread in (None, c.thread)
            )

    def order(self, kind: str) -> list[str]:
        """Labels of the calls of ``kind``, in call order."""
        with self._lock:
            return [c.label for c in self.calls if c.kind == kind]

    def of(self, kind: str, label: str) -> list[StepCall]:
        with self._lock:
            return [c for c in self.calls if c.kind == kind and c.label == label]


SCRIPT = Script()


@contextmanager
def scripted() -> Iterator[Script]:
    """A fresh script; on the way out any blocked step is let go."""
    SCRIPT.reset()
    try:
        yield SCRIPT
    finally:
        SCRIPT.gate.set()


# -- the registered functions (module level: recovery finds them by name) --------------------


@default_registry.register
def act(label: str) -> str:
    return SCRIPT.perform("act", label)


@default_registry.register
def undo(label: str, received: Any) -> str:
    return SCRIPT.perform("undo", label, received)


@default_registry.register
async def act_async(label: str) -> str:
    await asyncio.sleep(0)
    return SCRIPT.perform("act", label)


@default_registry.register
async def undo_async(label: str, received: Any) -> str:
    await asyncio.sleep(0)
    return SCRIPT.perform("undo", label, received)


@default_registry.register(name="recovery-tests:legacy")
def legacy(label: str) -> str:
    """A function that a later deployment no longer registers (see the parking tests)."""
    return SCRIPT.perform("act", label)


def registry_without_legacy() -> Registry:
    """The registry of a deployment that lost ``legacy`` but still has the others."""
    registry = Registry()
    for func in (act, undo, act_async, undo_async):
        registry.register(func)
    return registry


# -- sagas ---------------------------------------------------------------------------------


def saga_of(
    store: SagaStore,
    labels: Sequence[str],
    *,
    saga_id: str,
    flavour: Flavour = "sync",
    retry: dict[str, RetryPolicy] | None = None,
    first: Callable[..., Any] | None = None,
    **options: Any,
) -> SagaAssembler:
    """A saga of one scripted step per label, each undone by a scripted compensation that
    receives the action's result. ``first`` replaces the first step's function."""
    saga = store.saga("recovery-test", saga_id=saga_id, **options)
    is_async = flavour == "async"
    action, compensation = (act_async, undo_async) if is_async else (act, undo)
    op_type = AsyncOperation if is_async else Operation
    for index, label in enumerate(labels):
        func = first if first is not None and index == 0 else action
        op = op_type(func, label).named(label).add_compensation(compensation, label, ACTION_RESULT)
        if retry and label in retry:
            op.with_retry(retry[label])
        saga.operation(op)
    return saga


def execute(saga: SagaAssembler, mode: Mode = "orchestrated", flavour: Flavour = "sync") -> Any:
    """Run the saga the way a caller of that flavour would."""
    if flavour == "async":
        if mode == "orchestrated":
            return asyncio.run(saga.orchestrator_execute_async())
        return asyncio.run(saga.choreography_execute_async())
    if mode == "orchestrated":
        return saga.orchestrator_execute()
    return saga.choreography_execute()


def crash(saga: SagaAssembler, mode: Mode = "orchestrated", flavour: Flavour = "sync") -> None:
    """Run a saga whose script makes it crash; the crash must come through."""
    with pytest.raises(Crash):
        execute(saga, mode, flavour)


class Background:
    """Runs something (a saga, a recovery pass) on a thread of its own, named ``name``, and
    keeps what it returned or raised."""

    def __init__(self, run: Callable[[], Any], name: str) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, args=(run,), name=name, daemon=True)
        self.thread.start()

    def _main(self, run: Callable[[], Any]) -> None:
        try:
            self.result = run()
        except BaseException as exc:
            self.error = exc

    def join(self) -> None:
        self.thread.join(10)
        assert not self.thread.is_alive(), f"{self.thread.name} did not finish"


def _never_release(saga_id: str) -> None:
    """A dead process releases nothing."""


@contextmanager
def dying_process(
    db_url: str,
    *,
    worker_id: str = "dead-worker",
    lease_seconds: float = LEASE,
    registry: Registry | None = None,
) -> Iterator[SagaStore]:
    """A store standing in for a process that is about to be killed: it never releases a
    saga, so whatever it leaves keeps its lease until ``lease_seconds`` pass."""
    with (
        SagaStore(
            db_url,
            worker_id=worker_id,
            lease_seconds=lease_seconds,
            heartbeat=False,
            registry=registry,
        ) as dead,
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setattr(dead.journal, "release", _never_release)
        yield dead


@contextmanager
def frozen_at_start() -> Iterator[FrozenDateTimeFactory]:
    """The clock frozen at START (asyncio keeps its real clock, so loops still run)."""
    with freeze_time(START, real_asyncio=True) as frozen:
        assert isinstance(frozen, FrozenDateTimeFactory)
        yield frozen


# -- rows written by hand (tests of the statements themselves) ------------------------------


def new_saga_row(saga_id: str, now: datetime) -> dict[str, Any]:
    """A running saga's row, as the journal's first write inserts it."""
    return {
        "id": saga_id,
        "name": None,
        "mode": "orchestrated",
        "status": "running",
        "on_crash": "resume",
        "plan": "{}",
        "created_at": now,
        "updated_at": now,
        "owner": "w",
        "lease_expires_at": now,
        "version": 1,
    }


def new_start_row(saga_id: str, step: int, now: datetime) -> dict[str, Any]:
    """A started attempt's row, as the journal writes it before calling the step."""
    return {
        "saga_id": saga_id,
        "step": step,
        "step_name": f"step{step}",
        "kind": "action",
        "attempt": 1,
        "status": "started",
        "worker": "w",
        "started_at": now,
    }


# -- probes --------------------------------------------------------------------------------


def saga_row(engine: Engine, saga_id: str) -> Row[Any]:
    """The raw saga row (with its version, which records do not show)."""
    with engine.connect() as conn:
        return conn.execute(select(sagas).where(sagas.c.id == saga_id)).one()


def attempts(record: SagaRecord, kind: str, step: int) -> list[AttemptRecord]:
    return [a for a in record.attempts if a.kind == kind and a.step == step]


def statuses(record: SagaRecord, kind: str, step: int) -> list[str]:
    """Statuses of one step's attempts of ``kind``, in attempt order."""
    return [a.status for a in sorted(attempts(record, kind, step), key=lambda a: a.attempt)]


def wait_for(predicate: Callable[[], bool], *, within: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds or ``within`` seconds pass (counted in polls, so a frozen
    clock cannot make it spin forever)."""
    pause = 0.01
    waiter = threading.Event()
    for _ in range(int(within / pause)):
        if predicate():
            return True
        waiter.wait(pause)
    return predicate()


async def wait_for_async(predicate: Callable[[], bool], *, within: float = 10.0) -> bool:
    """``wait_for`` inside an event loop (the predicate runs in a worker thread)."""
    pause = 0.01
    for _ in range(int(within / pause)):
        if await asyncio.to_thread(predicate):
            return True
        await asyncio.sleep(pause)
    return await asyncio.to_thread(predicate)

"""A saga id is never run twice, on every active backend.

Executing an id that already exists returns the recorded results of a finished saga, re-raises
its recorded failure, refuses a copy of one still running elsewhere (SagaAlreadyRunning), and
refuses a different plan under the same id (SagaDefinitionError).
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from micro_saga import (
    Operation,
    RecordedError,
    SagaAlreadyRunning,
    SagaAssembler,
    SagaDefinitionError,
    SagaException,
    clock,
)
from saga_store import SagaStore, default_registry
from saga_store.tables import attempts, sagas

_calls: Counter[str] = Counter()
_lock = threading.Lock()
#: set by `gated` when it is running; `gated` returns once GATE is set
ENTERED = threading.Event()
GATE = threading.Event()
#: seconds a gated step waits at most (a test that forgets to open the gate still ends)
GATE_TIMEOUT = 30.0


def _hit(name: str) -> None:
    with _lock:
        _calls[name] += 1


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    _calls.clear()
    ENTERED.clear()
    GATE.clear()
    yield
    GATE.set()  # never leave a step blocked
    _calls.clear()


def book(order_id: int) -> str:
    _hit("book")
    return f"booked {order_id}"


def unbook(order_id: int) -> str:
    _hit("unbook")
    return f"unbooked {order_id}"


def decline(order_id: int) -> str:
    _hit("decline")
    raise PermissionError(f"card declined for order {order_id}")


def gated(order_id: int) -> str:
    _hit("gated")
    ENTERED.set()
    if not GATE.wait(GATE_TIMEOUT):
        raise TimeoutError("the test never opened the gate")
    return f"passed {order_id}"


for _func in (book, unbook, decline, gated):
    default_registry.register(_func)

Run = Callable[[SagaAssembler], list[Any]]
RUNS: dict[str, Run] = {
    "orchestrator_execute": lambda saga: saga.orchestrator_execute(),
    "choreography_execute": lambda saga: saga.choreography_execute(),
    "orchestrator_execute_async": lambda saga: asyncio.run(saga.orchestrator_execute_async()),
    "choreography_execute_async": lambda saga: asyncio.run(saga.choreography_execute_async()),
}


def _booking(store: SagaStore, saga_id: str, *, fail: bool = False) -> SagaAssembler:
    saga = store.saga("booking", retry_attempts=2, saga_id=saga_id)
    saga.operation(Operation(book, 1).add_compensation(unbook, 1))
    saga.operation(Operation(book, 2).add_compensation(unbook, 2))
    if fail:
        saga.operation(Operation(decline, 3))
    return saga


def _attempt_count(store: SagaStore, saga_id: str) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(attempts.c.saga_id == saga_id)
            ).scalar_one()
        )


@contextmanager
def each(name: str) -> Iterator[None]:
    """One pass of a loop over the entry points: fresh state, and its name on a failure."""
    _calls.clear()
    ENTERED.clear()
    GATE.clear()
    try:
        yield
    except AssertionError as error:
        error.add_note(f"(while checking {name})")
        raise
    finally:
        GATE.set()


def test_a_finished_saga_returns_its_recorded_results_without_running_again(
    store: SagaStore,
) -> None:
    for name, run in RUNS.items():
        with each(name):
            _finished_returns_recorded_results(store, run, f"order-42-{name}")


def _finished_returns_recorded_results(store: SagaStore, run: Run, saga_id: str) -> None:
    first = run(_booking(store, saga_id))
    assert first == ["booked 1", "booked 2"]
    assert _calls == Counter(book=2)
    record = store.get(saga_id)
    rows = _attempt_count(store, saga_id)

    again = run(_booking(store, saga_id))

    assert again == first
    assert _calls == Counter(book=2)  # nothing ran again
    assert _attempt_count(store, saga_id) == rows
    assert store.get(saga_id) == record  # not even a timestamp moved


def test_a_recorded_failure_is_raised_again_from_the_journal(store: SagaStore) -> None:
    for name, run in RUNS.items():
        with each(name):
            _recorded_failure_raised_again(store, run, f"order-43-{name}")


def _recorded_failure_raised_again(store: SagaStore, run: Run, saga_id: str) -> None:
    with pytest.raises(SagaException) as first:
        run(_booking(store, saga_id, fail=True))
    assert isinstance(first.value.operation_error, PermissionError)
    assert _calls == Counter(book=2, decline=2, unbook=2)
    record = store.get(saga_id)

    with pytest.raises(SagaException) as again:
        run(_booking(store, saga_id, fail=True))

    error = again.value.operation_error
    assert isinstance(error, RecordedError)  # the live exception is gone; its record is not
    assert error.error_type == "PermissionError"
    assert error.message == "card declined for order 3"
    assert error.traceback is not None
    assert "PermissionError: card declined for order 3" in error.traceback
    assert str(again.value) == "card declined for order 3"
    assert again.value.operation_name == "decline"
    assert again.value.status == "compensated"
    assert again.value.saga_id == saga_id
    assert sorted(again.value.compensation_success_result or []) == ["unbooked 1", "unbooked 2"]
    assert again.value.compensation_errors is None
    assert _calls == Counter(book=2, decline=2, unbook=2)  # nothing ran again
    assert store.get(saga_id) == record


@contextmanager
def _running_elsewhere(other: SagaStore, saga_id: str, run: Run) -> Iterator[Future[list[Any]]]:
    """The gated saga, run by ``other`` in a thread and blocked inside its step."""
    saga = other.saga("gated", saga_id=saga_id)
    saga.operation(Operation(gated, 7).add_compensation(unbook, 7))
    with ThreadPoolExecutor(1) as pool:
        try:
            future = pool.submit(run, saga)
            assert ENTERED.wait(GATE_TIMEOUT), "the other worker never reached its step"
            yield future
        finally:
            GATE.set()  # before the pool waits for the thread


def _gated_copy(store: SagaStore, saga_id: str) -> SagaAssembler:
    copy = store.saga("gated", saga_id=saga_id)
    return copy.operation(Operation(gated, 7).add_compensation(unbook, 7))


def test_a_saga_running_in_another_worker_is_refused_not_run_twice(
    store: SagaStore, db_url: str
) -> None:
    with SagaStore(db_url, worker_id="other", heartbeat=False) as other:
        for name, run in RUNS.items():
            with each(name):
                _running_elsewhere_is_refused(store, other, run, f"order-44-{name}")


def _running_elsewhere_is_refused(
    store: SagaStore, other: SagaStore, run: Run, saga_id: str
) -> None:
    with _running_elsewhere(other, saga_id, run) as future:
        row = store.get(saga_id)
        assert (row.status, row.owner) == ("running", "other")

        with pytest.raises(SagaAlreadyRunning) as caught:
            run(_gated_copy(store, saga_id))

        assert f"'{saga_id}'" in str(caught.value)
        assert "'other'" in str(caught.value)
        assert _calls == Counter(gated=1)
        GATE.set()
        assert future.result(timeout=GATE_TIMEOUT) == ["passed 7"]

    assert _calls == Counter(gated=1)
    record = store.get(saga_id)
    assert record.status == "succeeded"
    assert [(a.attempt, a.status, a.worker) for a in record.attempts] == [(1, "succeeded", "other")]


def test_a_saga_leased_by_another_worker_in_sql_is_refused(store: SagaStore) -> None:
    with pytest.raises(SagaException):
        _booking(store, "order-45", fail=True).orchestrator_execute()
    calls = Counter(_calls)
    # Make it look like another worker holds it mid-compensation, its lease still valid.
    with store.engine.begin() as conn:
        conn.execute(
            sa.update(sagas)
            .where(sagas.c.id == "order-45")
            .values(
                status="compensating",
                finished_at=None,
                owner="other",
                lease_expires_at=clock.utcnow() + timedelta(minutes=5),
            )
        )

    with pytest.raises(SagaAlreadyRunning, match="'other'"):
        _booking(store, "order-45", fail=True).orchestrator_execute()

    assert _calls == calls
    assert store.get("order-45").owner == "other"


def test_the_same_id_in_two_threads_of_one_store_runs_once(store: SagaStore) -> None:
    run = RUNS["orchestrator_execute"]
    with _running_elsewhere(store, "order-46", run) as future:
        with pytest.raises(SagaAlreadyRunning, match="'order-46'"):
            run(_gated_copy(store, "order-46"))
        GATE.set()
        assert future.result(timeout=GATE_TIMEOUT) == ["passed 7"]
    assert _calls == Counter(gated=1)


CHANGES: dict[str, Callable[[SagaAssembler], object]] = {
    "one more step": lambda saga: saga.operation(Operation(book, 3)),
    "other argument": lambda saga: saga.operations.__setitem__(0, Operation(book, 99)),
    "other function": lambda saga: saga.operations.__setitem__(0, Operation(unbook, 1)),
}


def test_the_same_id_with_a_different_plan_is_refused(store: SagaStore) -> None:
    _booking(store, "order-47").orchestrator_execute()
    record = store.get("order-47")
    for name, change in CHANGES.items():
        with each(name):
            different = _booking(store, "order-47")
            change(different)

            with pytest.raises(
                SagaDefinitionError, match="'order-47' already exists with a different plan"
            ):
                different.orchestrator_execute()

            assert _calls == Counter()
            assert store.get("order-47") == record


def test_the_same_id_in_the_other_mode_is_refused(store: SagaStore) -> None:
    _booking(store, "order-48").orchestrator_execute()
    with pytest.raises(SagaDefinitionError, match="different plan"):
        _booking(store, "order-48").choreography_execute()
    assert _calls == Counter(book=2)

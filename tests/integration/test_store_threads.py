"""Thread safety of the store, on every active backend (SQLite too: WAL and a busy timeout).

A choreographed saga journals from as many threads as it has steps, and many sagas run at once
from a pool of threads on one store; the journal ends up with exactly the expected rows.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from micro_saga import Operation, SagaAssembler, SagaException
from saga_store import SagaStore, default_registry
from saga_store.tables import attempts, sagas

#: seconds a barrier waits for its party before the step fails (a broken test still ends)
MEET_TIMEOUT = 30.0
WIDTH = 8

_lock = threading.Lock()
_calls: Counter[str] = Counter()
#: thread ids that ran each kind of step
_threads: dict[str, set[int]] = {}
_barriers: dict[str, threading.Barrier] = {}


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    _calls.clear()
    _threads.clear()
    _barriers.clear()
    yield
    for barrier in _barriers.values():
        barrier.abort()  # release any step still waiting


def _note(kind: str) -> None:
    with _lock:
        _calls[kind] += 1
        _threads.setdefault(kind, set()).add(threading.get_ident())


def _meet(name: str) -> None:
    """Wait until the whole party is in this function at the same time."""
    _barriers[name].wait(MEET_TIMEOUT)


def together(index: int) -> int:
    _note("together")
    _meet("actions")
    return index * 100


def together_then_fail(index: int) -> int:
    _note("together_then_fail")
    _meet("actions")
    raise RuntimeError(f"step {index} gave up")


def undo_together(index: int) -> str:
    _note("undo_together")
    _meet("compensations")
    return f"undid {index}"


def add(order: int, step: int) -> int:
    _note("add")
    return order * 10 + step


def remove(order: int, step: int) -> str:
    _note("remove")
    return f"removed {order}.{step}"


def refuse(order: int) -> int:
    _note("refuse")
    raise LookupError(f"order {order} refused")


for _func in (together, together_then_fail, undo_together, add, remove, refuse):
    default_registry.register(_func)


def _rows(store: SagaStore, saga_id: str | None = None) -> list[tuple[Any, ...]]:
    query = sa.select(
        attempts.c.saga_id, attempts.c.kind, attempts.c.step, attempts.c.attempt, attempts.c.status
    )
    if saga_id is not None:
        query = query.where(attempts.c.saga_id == saga_id)
    with store.engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(query).all())


def test_a_choreographed_saga_journals_from_eight_threads(store: SagaStore) -> None:
    _barriers["actions"] = threading.Barrier(WIDTH)
    saga = store.saga("fan-out", saga_id="wide-1")
    for index in range(WIDTH):
        saga.operation(Operation(together, index).add_compensation(undo_together, index))

    results = saga.choreography_execute()

    assert results == [i * 100 for i in range(WIDTH)]
    assert len(_threads["together"]) == WIDTH  # all eight were in flight at once
    assert _rows(store) == [("wide-1", "action", i, 1, "succeeded") for i in range(WIDTH)]
    record = store.get("wide-1")
    assert record.status == "succeeded"
    assert record.results == results
    assert [a.result for a in sorted(record.attempts, key=lambda a: a.step)] == results
    assert all(a.finished_at is not None for a in record.attempts)


def test_a_choreographed_saga_compensates_from_seven_threads(store: SagaStore) -> None:
    _barriers["actions"] = threading.Barrier(WIDTH)
    _barriers["compensations"] = threading.Barrier(WIDTH - 1)
    saga = store.saga("fan-out", saga_id="wide-2")
    for index in range(WIDTH - 1):
        saga.operation(Operation(together, index).add_compensation(undo_together, index))
    saga.operation(Operation(together_then_fail, WIDTH - 1))

    with pytest.raises(SagaException) as caught:
        saga.choreography_execute()

    assert caught.value.status == "compensated"
    assert sorted(caught.value.compensation_success_result or []) == [
        f"undid {i}" for i in range(WIDTH - 1)
    ]
    assert len(_threads["together"] | _threads["together_then_fail"]) == WIDTH
    assert len(_threads["undo_together"]) == WIDTH - 1
    assert _rows(store) == sorted(
        [("wide-2", "action", i, 1, "succeeded") for i in range(WIDTH - 1)]
        + [("wide-2", "action", WIDTH - 1, 1, "failed")]
        + [("wide-2", "compensation", i, 1, "succeeded") for i in range(WIDTH - 1)]
    )
    record = store.get("wide-2")
    assert record.status == "compensated"
    assert record.error_type == "RuntimeError"
    assert record.error_message == f"step {WIDTH - 1} gave up"


SAGAS = 16
STEPS = 3


def _order(store: SagaStore, order: int) -> SagaAssembler:
    """Order n: three steps, choreographed when n is odd; every fourth one is refused."""
    saga = store.saga("order", saga_id=f"order-{order:02d}")
    for step in range(STEPS - 1):
        saga.operation(Operation(add, order, step).add_compensation(remove, order, step))
    if order % 4 == 3:
        saga.operation(Operation(refuse, order))
    else:
        saga.operation(Operation(add, order, STEPS - 1).add_compensation(remove, order, STEPS - 1))
    return saga


def _execute(store: SagaStore, order: int) -> Any:
    saga = _order(store, order)
    try:
        return saga.choreography_execute() if order % 2 else saga.orchestrator_execute()
    except SagaException as error:
        return error


def test_sixteen_sagas_from_eight_threads_on_one_store(store: SagaStore) -> None:
    with ThreadPoolExecutor(WIDTH) as pool:
        outcomes = list(pool.map(lambda order: _execute(store, order), range(SAGAS)))

    refused = [o for o in range(SAGAS) if o % 4 == 3]
    for order, outcome in enumerate(outcomes):
        if order in refused:
            assert isinstance(outcome, SagaException), (order, outcome)
            assert outcome.status == "compensated"
            assert str(outcome) == f"order {order} refused"
        else:
            assert outcome == [order * 10 + s for s in range(STEPS)]
    expected_rows = []
    for order in range(SAGAS):
        saga_id = f"order-{order:02d}"
        if order in refused:
            expected_rows += [(saga_id, "action", s, 1, "succeeded") for s in range(STEPS - 1)]
            expected_rows += [(saga_id, "action", STEPS - 1, 1, "failed")]
            expected_rows += [
                (saga_id, "compensation", s, 1, "succeeded") for s in range(STEPS - 1)
            ]
        else:
            expected_rows += [(saga_id, "action", s, 1, "succeeded") for s in range(STEPS)]
    assert _rows(store) == sorted(expected_rows)
    fine = SAGAS - len(refused)
    assert _calls == Counter(
        add=fine * STEPS + len(refused) * (STEPS - 1),
        refuse=len(refused),
        remove=len(refused) * (STEPS - 1),
    )
    with store.engine.connect() as conn:
        statuses = dict(
            conn.execute(sa.select(sagas.c.id, sagas.c.status).order_by(sagas.c.id)).all()
        )
    assert statuses == {
        f"order-{o:02d}": "compensated" if o in refused else "succeeded" for o in range(SAGAS)
    }
    assert store.stats().by_status == {"succeeded": fine, "compensated": len(refused)}
    assert store.journal.open_sagas() == []  # every saga let go of its lease

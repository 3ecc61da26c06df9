"""The durable journal through the public entry points of issue 3, on every active backend.

What each test proves, by reading the database rather than trusting the engine:

* the issue's snippet works as written (register, ``store.saga``, ``Operation``,
  ``add_compensation``, the four ``*_execute*`` methods, ``store.get``);
* every attempt and compensation attempt is committed as *started* before its function is
  called (a separate connection sees the row from inside the step), and as *finished* with its
  result or its error type, message and traceback afterwards;
* the plan is journaled (committed) before the first step runs;
* the write budget: n + 1 commits for an orchestrated saga of n steps that succeeds first time,
  counted on the engine itself.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from freezegun import freeze_time
from sqlalchemy.pool import NullPool

from micro_saga import (
    Operation,
    SagaAssembler,
    SagaDefinitionError,
    SagaException,
    current_step,
)
from saga_store import SagaStore, default_registry
from saga_store.records import AttemptRecord
from saga_store.tables import attempts, sagas
from tests.plan_formats import as_format_1
from tests.watch import Commits

Executor = Callable[[SagaAssembler], list[Any]]

EXECUTORS: dict[str, Executor] = {
    "orchestrator_execute": lambda saga: saga.orchestrator_execute(),
    "choreography_execute": lambda saga: saga.choreography_execute(),
    "orchestrator_execute_async": lambda saga: asyncio.run(saga.orchestrator_execute_async()),
    "choreography_execute_async": lambda saga: asyncio.run(saga.choreography_execute_async()),
}

# -- steps (module level: durable sagas only call registered module-level functions) ----------

_calls: Counter[str] = Counter()
_calls_lock = threading.Lock()
#: what the probing steps saw through their own connection, in call order
_seen: list[dict[str, Any]] = []


def _hit(name: str) -> None:
    with _calls_lock:
        _calls[name] += 1


@pytest.fixture(autouse=True)
def _fresh_counters() -> Iterator[None]:
    _calls.clear()
    _seen.clear()
    yield
    _calls.clear()
    _seen.clear()


def charge(order_id: int, amount: float) -> dict[str, Any]:
    _hit("charge")
    return {"order": order_id, "charged": amount}


def refund(order_id: int) -> str:
    _hit("refund")
    return f"refunded {order_id}"


def reserve(order_id: int, sku: str) -> str:
    _hit("reserve")
    return f"{sku} reserved for {order_id}"


def release(order_id: int, sku: str) -> str:
    _hit("release")
    return f"{sku} released for {order_id}"


def ship(order_id: int) -> str:
    _hit("ship")
    raise ValueError(f"no courier for order {order_id}")


def step_n(index: int) -> int:
    _hit("step_n")
    return index * 10


def _own_row(url: str) -> dict[str, Any]:
    """The journal rows of the running step, read through a new connection of our own."""
    ctx = current_step()
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(attempts.c.status, attempts.c.finished_at, attempts.c.worker).where(
                    attempts.c.saga_id == ctx.saga_id,
                    attempts.c.step == ctx.step,
                    attempts.c.kind == ctx.kind,
                    attempts.c.attempt == ctx.attempt,
                )
            ).one_or_none()
            earlier = conn.execute(
                sa.select(attempts.c.attempt, attempts.c.status)
                .where(
                    attempts.c.saga_id == ctx.saga_id,
                    attempts.c.step == ctx.step,
                    attempts.c.kind == ctx.kind,
                    attempts.c.attempt < ctx.attempt,
                )
                .order_by(attempts.c.attempt)
            ).all()
            plan = conn.execute(
                sa.select(sagas.c.plan, sagas.c.status).where(sagas.c.id == ctx.saga_id)
            ).one_or_none()
    finally:
        engine.dispose()
    seen = {
        "kind": ctx.kind,
        "step": ctx.step,
        "attempt": ctx.attempt,
        "status": None if row is None else row.status,
        "finished_at": None if row is None else row.finished_at,
        "worker": None if row is None else row.worker,
        "earlier": [(r.attempt, r.status) for r in earlier],
        "plan": None if plan is None else plan.plan,
        "saga_status": None if plan is None else plan.status,
    }
    with _calls_lock:
        _seen.append(seen)
    return seen


def probed_charge(url: str, order_id: int) -> str:
    _own_row(url)
    _hit("probed_charge")
    return f"charged {order_id}"


def probed_refund(url: str, order_id: int) -> str:
    _own_row(url)
    _hit("probed_refund")
    return f"refunded {order_id}"


def probed_ship(url: str, order_id: int) -> str:
    _own_row(url)
    _hit("probed_ship")
    raise ValueError(f"no courier for order {order_id}")


for _func in (reserve, release, ship, step_n, probed_charge, probed_refund, probed_ship):
    default_registry.register(_func)

#: refund is registered by the first test, through the store, under an explicit name
REFUND_NAME = "store_journal.payments.refund"


def _register_snippet_functions(store: SagaStore) -> None:
    # As in the issue: @store.register and @store.register(name=...). Registering the same
    # function again under the same name is allowed, so every test may do it.
    assert store.register(charge) is charge
    assert store.register(name=REFUND_NAME)(refund) is refund


def _assert_utc(moment: datetime | None) -> datetime:
    assert moment is not None
    assert moment.tzinfo is not None
    assert moment.utcoffset() == timedelta(0)
    return moment


def _in_window(moment: datetime | None, before: datetime, after: datetime) -> None:
    value = _assert_utc(moment)
    assert before <= value <= after, (before, value, after)


@contextmanager
def each(name: str) -> Iterator[None]:
    """One pass of a loop over the entry points: fresh counters, and its name on a failure."""
    _calls.clear()
    _seen.clear()
    try:
        yield
    except AssertionError as error:
        error.add_note(f"(while checking {name})")
        raise


def _snippet_id(order: int, execute: str) -> str:
    # The issue's own id for the first entry point; one id per entry point after it.
    return f"order-{order}" if execute == "orchestrator_execute" else f"order-{order}-{execute}"


def _saga_row(store: SagaStore, saga_id: str) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sagas).where(sagas.c.id == saga_id)).one()


# -- the issue's snippet --------------------------------------------------------------------


def test_issue_snippet_succeeds_and_is_recorded(store: SagaStore) -> None:
    _register_snippet_functions(store)
    for name, execute in EXECUTORS.items():
        with each(name):
            _snippet_succeeds(store, execute, _snippet_id(42, name))


def _snippet_succeeds(store: SagaStore, execute: Executor, saga_id: str) -> None:
    before = datetime.now(UTC)
    saga = store.saga("checkout", retry_attempts=3, saga_id=saga_id)
    saga.operation(Operation(charge, 42, 9.99).add_compensation(refund, 42))
    saga.operation(Operation(reserve, 42, sku="book").add_compensation(release, 42, sku="book"))

    results = execute(saga)
    after = datetime.now(UTC)

    assert results == [{"order": 42, "charged": 9.99}, "book reserved for 42"]
    assert _calls == Counter(charge=1, reserve=1)
    record = store.get(saga_id)
    assert record.id == saga_id
    assert record.name == "checkout"
    assert record.status == "succeeded"
    assert record.results == results
    assert record.error_type is None
    assert record.error_message is None
    assert record.owner is None  # the lease is given up with the final write
    assert record.lease_expires_at is None
    for moment in (record.created_at, record.updated_at, record.finished_at):
        _in_window(moment, before, after)
    assert [(a.step, a.step_name, a.kind, a.attempt, a.status) for a in record.attempts] == [
        (0, "charge", "action", 1, "succeeded"),
        (1, "reserve", "action", 1, "succeeded"),
    ]
    assert [a.result for a in record.attempts] == results
    for attempt in record.attempts:
        assert attempt.worker == "test-worker"
        _in_window(attempt.started_at, before, after)
        _in_window(attempt.finished_at, before, after)
        assert attempt.started_at <= _assert_utc(attempt.finished_at)
        assert attempt.error_type is attempt.error_message is attempt.error_traceback is None


def test_issue_snippet_failure_retries_compensates_and_is_recorded(store: SagaStore) -> None:
    _register_snippet_functions(store)
    for name, execute in EXECUTORS.items():
        with each(name):
            _snippet_fails(store, execute, _snippet_id(43, name))


def _snippet_fails(store: SagaStore, execute: Executor, saga_id: str) -> None:
    before = datetime.now(UTC)
    saga = store.saga("checkout", retry_attempts=3, saga_id=saga_id)
    saga.operation(Operation(charge, 43, 5.0).add_compensation(refund, 43))
    saga.operation(Operation(ship, 43))

    with pytest.raises(SagaException) as caught:
        execute(saga)
    after = datetime.now(UTC)

    error = caught.value
    assert isinstance(error.operation_error, ValueError)
    assert str(error) == "no courier for order 43"
    assert error.operation_name == "ship"
    assert error.compensation_success_result == ["refunded 43"]
    assert error.compensation_errors is None
    assert error.status == "compensated"
    assert _calls == Counter(charge=1, ship=3, refund=1)

    record = store.get(saga_id)
    assert record.status == "compensated"
    assert record.results is None
    assert record.error_type == "ValueError"
    assert record.error_message == "no courier for order 43"
    _in_window(record.finished_at, before, after)
    rows = [(a.step, a.kind, a.attempt, a.status) for a in record.attempts]
    assert sorted(rows) == sorted(
        [
            (0, "action", 1, "succeeded"),
            (1, "action", 1, "failed"),
            (1, "action", 2, "failed"),
            (1, "action", 3, "failed"),
            (0, "compensation", 1, "succeeded"),
        ]
    )
    # Compensation comes after every action attempt, in any mode.
    assert rows[-1] == (0, "compensation", 1, "succeeded")
    for attempt in record.attempts:
        _in_window(attempt.started_at, before, after)
        _in_window(attempt.finished_at, before, after)
        if attempt.status == "failed":
            _assert_failure(attempt, "ValueError", "no courier for order 43", "ship")
    compensation = record.attempts[-1]
    assert compensation.result == "refunded 43"
    assert compensation.step_name == "charge"


def _assert_failure(attempt: AttemptRecord, error_type: str, message: str, where: str) -> None:
    assert attempt.error_type == error_type
    assert attempt.error_message == message
    assert attempt.result is None
    traceback = attempt.error_traceback
    assert traceback is not None
    assert traceback.startswith("Traceback (most recent call last):")
    assert f"in {where}" in traceback
    assert traceback.rstrip().endswith(f"{error_type}: {message}")


# -- started is committed before the call, finished after ------------------------------------


def test_each_attempt_is_committed_as_started_before_its_call(
    store: SagaStore, db_url: str
) -> None:
    for name, execute in EXECUTORS.items():
        with each(name):
            _started_before_call(store, db_url, execute, f"probe-{name}")


def _started_before_call(store: SagaStore, db_url: str, execute: Executor, saga_id: str) -> None:
    saga = store.saga("probed", retry_attempts=2, saga_id=saga_id)
    saga.operation(Operation(probed_charge, db_url, 7).add_compensation(probed_refund, db_url, 7))
    saga.operation(Operation(probed_ship, db_url, 7))

    with pytest.raises(SagaException):
        execute(saga)

    # Every call saw its own attempt through another connection: committed, not finished.
    assert sorted((s["kind"], s["step"], s["attempt"]) for s in _seen) == [
        ("action", 0, 1),
        ("action", 1, 1),
        ("action", 1, 2),
        ("compensation", 0, 1),
    ]
    for seen in _seen:
        assert seen["status"] == "started", seen
        assert seen["finished_at"] is None, seen
        assert seen["worker"] == "test-worker", seen
        assert seen["plan"] is not None, seen
    # The second attempt's start committed the first one's failure with it.
    second = next(s for s in _seen if s["step"] == 1 and s["attempt"] == 2)
    assert second["earlier"] == [(1, "failed")]
    compensation = next(s for s in _seen if s["kind"] == "compensation")
    assert compensation["saga_status"] == "compensating"
    assert _calls == Counter(probed_charge=1, probed_ship=2, probed_refund=1)

    # ...and each finished with its outcome.
    record = store.get(saga_id)
    assert record.status == "compensated"
    by_key = {(a.kind, a.step, a.attempt): a for a in record.attempts}
    assert set(by_key) == {
        ("action", 0, 1),
        ("action", 1, 1),
        ("action", 1, 2),
        ("compensation", 0, 1),
    }
    assert by_key["action", 0, 1].status == "succeeded"
    assert by_key["action", 0, 1].result == "charged 7"
    assert by_key["compensation", 0, 1].status == "succeeded"
    assert by_key["compensation", 0, 1].result == "refunded 7"
    for number in (1, 2):
        failed = by_key["action", 1, number]
        assert failed.status == "failed"
        _assert_failure(failed, "ValueError", "no courier for order 7", "probed_ship")
    for attempt in record.attempts:
        assert attempt.finished_at is not None
        assert attempt.started_at <= attempt.finished_at


# -- the plan --------------------------------------------------------------------------------


def test_plan_is_journaled_before_the_first_step_runs(store: SagaStore, db_url: str) -> None:
    _register_snippet_functions(store)
    saga = store.saga("planned", saga_id="plan-1", on_crash="compensate", max_interruptions=5)
    saga.operation(
        Operation(probed_charge, db_url, 11)
        .add_compensation(refund, 11)
        .with_retry(attempts=4, backoff="exponential", delay=1.5, max_delay=10.0)
        .with_compensation_retry(attempts=6, never_retry_on=(KeyError,))
    )
    saga.operation(Operation(reserve, 11, sku="pen").named("reserve pen"))

    assert saga.orchestrator_execute() == ["charged 11", "pen reserved for 11"]

    # Seen from inside the first step, through another connection: the plan is committed.
    assert len(_seen) == 1
    text = _seen[0]["plan"]
    assert isinstance(text, str)
    plan = json.loads(text)
    assert plan["saga_id"] == "plan-1"
    assert plan["name"] == "planned"
    assert plan["mode"] == "orchestrated"
    assert plan["on_crash"] == "compensate"
    assert plan["max_interruptions"] == 5
    first, second = plan["steps"]
    assert first["name"] == "probed_charge"
    assert first["action"]["fn"] == f"{__name__}:probed_charge"
    assert first["action"]["args"] == [db_url, 11]
    assert first["action"]["kwargs"] == {}
    assert first["compensation"]["fn"] == REFUND_NAME
    assert first["compensation"]["args"] == [11]
    # each distinct policy once, the steps pointing at theirs
    assert plan["format"] == 2
    policies = plan["policies"]
    assert len(policies) == 3
    retry, compensation_retry = policies[first["retry"]], policies[first["compensation_retry"]]
    assert retry["attempts"] == 4
    assert retry["backoff"] == "exponential"
    assert retry["delay"] == 1.5
    assert retry["max_delay"] == 10.0
    assert compensation_retry["attempts"] == 6
    assert compensation_retry["never_retry_on"] == ["KeyError"]
    assert second["name"] == "reserve pen"
    assert second["action"] == {"fn": f"{__name__}:reserve", "args": [11], "kwargs": {"sku": "pen"}}
    assert second["compensation"] is None
    assert second["retry"] == second["compensation_retry"]  # both the saga-wide default
    assert policies[second["retry"]]["attempts"] == 1
    # The row keeps the same plan, and its mode and policy columns agree with it.
    row = _saga_row(store, "plan-1")
    assert json.loads(row.plan) == plan
    assert (row.mode, row.on_crash, row.name) == ("orchestrated", "compensate", "planned")


def test_a_saga_journaled_with_a_format_1_plan_is_still_the_same_saga(store: SagaStore) -> None:
    _register_snippet_functions(store)

    def define() -> SagaAssembler:
        saga = store.saga("older", saga_id="plan-old")
        saga.operation(Operation(step_n, 1).add_compensation(refund, 1).with_retry(attempts=2))
        return saga.operation(Operation(step_n, 2))

    assert define().orchestrator_execute() == [10, 20]
    old = as_format_1(_saga_row(store, "plan-old").plan)  # as a version before format 2 wrote it
    with store.engine.begin() as conn:
        conn.execute(sa.update(sagas).where(sagas.c.id == "plan-old").values(plan=old))

    with Commits(store) as commits:  # the same operation: its recorded results, nothing rerun
        assert define().orchestrator_execute() == [10, 20]
    assert commits.count == 0
    assert _saga_row(store, "plan-old").plan == old

    changed = store.saga("older", saga_id="plan-old").operation(Operation(step_n, 3))
    with pytest.raises(SagaDefinitionError, match="different plan"):
        changed.orchestrator_execute()


def test_choreographed_plan_records_its_mode(store: SagaStore) -> None:
    saga = store.saga("fan-out", saga_id="plan-2")
    saga.operation(Operation(step_n, 1)).operation(Operation(step_n, 2))
    assert saga.choreography_execute() == [10, 20]
    row = _saga_row(store, "plan-2")
    assert row.mode == "choreographed"
    assert json.loads(row.plan)["mode"] == "choreographed"


# -- the write budget ------------------------------------------------------------------------


def _numbered_saga(store: SagaStore, steps: int, saga_id: str) -> SagaAssembler:
    saga = store.saga("budget", saga_id=saga_id)
    for index in range(steps):
        saga.operation(Operation(step_n, index).add_compensation(refund, index))
    return saga


def test_orchestrated_saga_of_n_steps_costs_n_plus_one_commits(store: SagaStore) -> None:
    _register_snippet_functions(store)
    for steps in (1, 3, 5):
        for runner in ("sync", "async"):
            with each(f"{steps} steps, {runner}"):
                saga = _numbered_saga(store, steps, f"budget-{steps}-{runner}")
                journal_before = store.journal.commits

                with Commits(store) as commits:
                    if runner == "sync":
                        results = saga.orchestrator_execute()
                    else:
                        results = asyncio.run(saga.orchestrator_execute_async())

                assert results == [10 * i for i in range(steps)]
                assert commits.count == steps + 1
                assert store.journal.commits - journal_before == steps + 1
                record = store.get(f"budget-{steps}-{runner}")
                assert record.status == "succeeded"
                assert len(record.attempts) == steps


def test_choreographed_saga_of_n_steps_costs_at_most_2n_plus_2_commits(
    store: SagaStore,
) -> None:
    _register_snippet_functions(store)
    for steps in (1, 3, 5):
        with each(f"{steps} steps"):
            saga = _numbered_saga(store, steps, f"budget-c-{steps}")

            with Commits(store) as commits:
                results = saga.choreography_execute()

            assert results == [10 * i for i in range(steps)]
            assert steps + 1 <= commits.count <= 2 * steps + 2, commits.count
            # Measured: n + 2 (the starts share one commit, each finish commits, then the end).
            assert commits.count == steps + 2
            assert store.get(f"budget-c-{steps}").status == "succeeded"


def test_reading_history_commits_nothing(store: SagaStore) -> None:
    _register_snippet_functions(store)
    _numbered_saga(store, 2, "quiet").orchestrator_execute()
    with Commits(store) as commits:
        store.get("quiet")
        store.list()
        store.stats()
    assert commits.count == 0


def test_a_store_on_an_engine_you_made(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        with SagaStore(engine, worker_id="mine", heartbeat=False) as store:
            assert store.engine is engine
            store.upgrade()
            _register_snippet_functions(store)
            saga = store.saga("checkout", retry_attempts=3, saga_id="order-engine")
            saga.operation(Operation(charge, 1, 2.5).add_compensation(refund, 1))
            assert saga.orchestrator_execute() == [{"order": 1, "charged": 2.5}]
        # The store leaves an engine it was given open for its owner.
        with engine.connect() as conn:
            status = conn.execute(
                sa.select(sagas.c.status).where(sagas.c.id == "order-engine")
            ).scalar_one()
        assert status == "succeeded"
    finally:
        engine.dispose()


def test_timestamps_come_from_the_clock_seam_in_utc(store: SagaStore) -> None:
    _register_snippet_functions(store)
    start = datetime(2024, 1, 1, 12, tzinfo=UTC)
    saga = store.saga("checkout", retry_attempts=3, saga_id="order-frozen")
    saga.operation(Operation(charge, 3, 1.0).add_compensation(refund, 3))
    with freeze_time(start, real_asyncio=True):
        saga.orchestrator_execute()
    record = store.get("order-frozen")
    assert record.created_at == record.finished_at == start
    assert record.created_at.tzinfo is not None
    (attempt,) = record.attempts
    assert attempt.started_at == attempt.finished_at == start
    assert attempt.started_at.utcoffset() == timedelta(0)

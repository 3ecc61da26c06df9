"""Choreographed sagas: every step at once; on failure, wait for all, undo every one that completed.

Thread-coordinated tests use plain steps (in threads under both runners); the coroutine twins of
the concurrency tests are in test_async.py.
"""

from __future__ import annotations

import threading

import pytest

from micro_saga import AttemptFinished, Event, Operation, SagaAssembler, SagaException
from tests.unit.helpers import Flavour, HookJournal, Log, Runner, described, execute

runners = pytest.mark.parametrize("runner", ["sync", "async"])


@runners
def test_all_steps_start_concurrently(runner: Runner) -> None:
    # Run one after another, the first step would wait at the barrier until it breaks.
    barrier = threading.Barrier(3, timeout=5)

    def meet(name: str) -> str:
        barrier.wait()
        return name

    saga = SagaAssembler.saga()
    for name in ("a", "b", "c"):
        saga.operation(Operation(meet, name))

    assert execute(saga, "choreographed", runner) == ["a", "b", "c"]


@runners
def test_compensations_run_concurrently(runner: Runner, log: Log) -> None:
    barrier = threading.Barrier(2, timeout=5)

    def undo(name: str) -> str:
        barrier.wait()
        return f"undo {name}"

    saga = SagaAssembler.saga()
    for name in ("a", "b"):
        saga.operation(Operation(log.step(name)).add_compensation(undo, name))
    saga.operation(Operation(log.failing("c")))

    with pytest.raises(SagaException) as caught:
        execute(saga, "choreographed", runner)

    assert sorted(caught.value.compensation_success_result or []) == ["undo a", "undo b"]
    assert caught.value.status == "compensated"


@runners
def test_a_step_that_succeeds_after_another_failed_is_compensated(runner: Runner, log: Log) -> None:
    fast_failed = threading.Event()

    def on_record(event: Event) -> None:
        if isinstance(event, AttemptFinished) and event.step == 0 and event.status == "failed":
            fast_failed.set()

    def slow() -> str:
        # Finishes only once the fast step's failure is in the journal.
        if not fast_failed.wait(timeout=5):
            raise TimeoutError("the fast step never failed")
        log.add("slow done")
        return "slow"

    journal = HookJournal(on_record)
    saga = SagaAssembler.saga(journal=journal)
    saga.operation(Operation(log.failing("fast")).add_compensation(log.step("undo fast")))
    saga.operation(Operation(slow).add_compensation(log.step("undo slow")))
    saga.operation(Operation(log.step("quick")).add_compensation(log.step("undo quick")))

    with pytest.raises(SagaException) as caught:
        execute(saga, "choreographed", runner)

    events = described(journal)
    fast_failure = events.index(("AttemptFinished", 0, "action", 1, "failed"))
    slow_success = events.index(("AttemptFinished", 1, "action", 1, "succeeded"))
    assert fast_failure < slow_success
    # Nothing is undone before the slow step finished; the failed step is never undone.
    assert sorted(log.entries[-2:]) == ["undo quick", "undo slow"]
    assert log.entries.index("slow done") < log.entries.index("undo slow")
    assert "undo fast" not in log.entries
    e = caught.value
    assert e.operation_name == "fast"
    assert str(e) == "fast broke"
    assert sorted(e.compensation_success_result or []) == ["undo quick", "undo slow"]
    assert e.status == "compensated"


def test_results_are_in_operation_order(flavour: Flavour, log: Log) -> None:
    saga = SagaAssembler.saga()
    for name in ("a", "b", "c"):
        saga.operation(flavour.op(log.step(name, result=name.upper())))

    assert flavour.execute(saga, "choreographed") == ["A", "B", "C"]
    assert sorted(log.entries) == ["a", "b", "c"]


def test_failed_steps_are_not_compensated(flavour: Flavour, log: Log) -> None:
    saga = SagaAssembler.saga()
    for name in ("a", "b", "c", "d"):
        func = log.failing(name) if name in "bd" else log.step(name)
        saga.operation(flavour.compensate(flavour.op(func).named(name), log.step(f"undo {name}")))

    with pytest.raises(SagaException) as caught:
        flavour.execute(saga, "choreographed")

    assert sorted(e for e in log.entries if e.startswith("undo")) == ["undo a", "undo c"]
    e = caught.value
    assert e.operation_name in {"b", "d"}
    assert str(e) == f"{e.operation_name} broke"
    assert sorted(e.compensation_success_result or []) == ["undo a", "undo c"]


def test_a_step_still_retrying_is_awaited_and_compensated(flavour: Flavour, log: Log) -> None:
    saga = SagaAssembler.saga()
    op_a = flavour.op(log.failing("a")).named("a")
    op_b = flavour.op(log.failing("b", times=2)).named("b").with_retry(attempts=3)
    saga.operation(flavour.compensate(op_a, log.step("undo a")))
    saga.operation(flavour.compensate(op_b, log.step("undo b")))

    with pytest.raises(SagaException) as caught:
        flavour.execute(saga, "choreographed")

    assert log.count("b") == 3
    assert log.entries[-1] == "undo b"
    assert "undo a" not in log.entries
    assert caught.value.operation_name == "a"
    assert caught.value.compensation_success_result == ["undo b"]


def test_a_compensation_that_gives_up_is_reported(flavour: Flavour, log: Log) -> None:
    saga = SagaAssembler.saga()
    saga.operation(flavour.compensate(flavour.op(log.step("a")), log.failing("undo a")))
    saga.operation(flavour.compensate(flavour.op(log.step("b")), log.step("undo b")))
    saga.operation(flavour.op(log.failing("c")))

    with pytest.raises(SagaException) as caught:
        flavour.execute(saga, "choreographed")

    assert caught.value.compensation_success_result == ["undo b"]
    assert caught.value.compensation_errors == ["undo a broke"]
    assert caught.value.status == "failed"

"""Orchestrated sagas: one step after another; on failure, undo the completed ones backwards.

Every test runs with plain and coroutine steps, through the sync and the async runner.
"""

from __future__ import annotations

import pytest

from micro_saga import RetryPolicy, SagaAssembler, SagaException
from tests.unit.helpers import Flavour, Log


def _saga(flavour: Flavour, log: Log, steps: str, failing: str) -> SagaAssembler:
    """One operation per letter of ``steps``, each undone by "undo <letter>"; ``failing`` fail."""
    saga = SagaAssembler.saga()
    for name in steps:
        func = log.failing(name) if name in failing else log.step(name)
        op = flavour.compensate(flavour.op(func), log.step(f"undo {name}"))
        saga.operation(op.named(name))
    return saga


def test_success_runs_every_step_in_order(flavour: Flavour, log: Log) -> None:
    saga = _saga(flavour, log, "abc", failing="")

    assert flavour.execute(saga) == ["a", "b", "c"]
    assert log.entries == ["a", "b", "c"]


def test_failure_compensates_completed_steps_in_reverse_order(flavour: Flavour, log: Log) -> None:
    saga = _saga(flavour, log, "abcde", failing="d")

    with pytest.raises(SagaException) as caught:
        flavour.execute(saga)

    # "d" failed: it is not compensated, and "e" after it never runs.
    assert log.entries == ["a", "b", "c", "d", "undo c", "undo b", "undo a"]
    e = caught.value
    assert isinstance(e.operation_error, ValueError)
    assert str(e) == "d broke"
    assert e.operation_name == "d"
    assert e.compensation_success_result == ["undo c", "undo b", "undo a"]
    assert e.compensation_errors is None
    assert e.status == "compensated"


def test_first_step_failing_leaves_nothing_to_compensate(flavour: Flavour, log: Log) -> None:
    saga = _saga(flavour, log, "ab", failing="a")

    with pytest.raises(SagaException) as caught:
        flavour.execute(saga)

    assert log.entries == ["a"]
    assert caught.value.compensation_success_result is None
    assert caught.value.compensation_errors is None
    assert caught.value.status == "compensated"


def test_steps_without_compensation_are_skipped(flavour: Flavour, log: Log) -> None:
    saga = SagaAssembler.saga()
    saga.operation(flavour.compensate(flavour.op(log.step("a")), log.step("undo a", "A undone")))
    saga.operation(flavour.op(log.step("b")))
    saga.operation(flavour.op(log.failing("c")))

    with pytest.raises(SagaException) as caught:
        flavour.execute(saga)

    assert log.entries == ["a", "b", "c", "undo a"]
    assert caught.value.compensation_success_result == ["A undone"]


def test_a_compensation_that_gives_up_is_reported_and_the_others_still_run(
    flavour: Flavour, log: Log
) -> None:
    saga = SagaAssembler.saga(retry_attempts=2)
    for name in "ab":
        op = flavour.op(log.step(name)).named(name)
        undo = log.failing(f"undo {name}") if name == "b" else log.step(f"undo {name}")
        saga.operation(flavour.compensate(op, undo))
    saga.operation(flavour.op(log.failing("c")).named("c"))

    with pytest.raises(SagaException) as caught:
        flavour.execute(saga)

    # Compensations retry by the saga's policy (2 attempts) too.
    assert log.entries == ["a", "b", "c", "c", "undo b", "undo b", "undo a"]
    e = caught.value
    assert e.operation_name == "c"
    assert e.compensation_success_result == ["undo a"]
    assert e.compensation_errors == ["undo b broke"]
    assert e.status == "failed"


def test_a_compensation_that_recovers_on_retry_counts_as_compensated(
    flavour: Flavour, log: Log
) -> None:
    op = flavour.op(log.step("a"))
    flavour.compensate(op, log.failing("undo a", times=1, result="A undone"))
    op.with_compensation_retry(attempts=2)
    saga = SagaAssembler.saga().operation(op).operation(flavour.op(log.failing("b")))

    with pytest.raises(SagaException) as caught:
        flavour.execute(saga)

    assert log.entries == ["a", "b", "undo a", "undo a"]
    assert caught.value.compensation_success_result == ["A undone"]
    assert caught.value.compensation_errors is None
    assert caught.value.status == "compensated"


def test_saga_wide_compensation_retry_applies_to_every_compensation(
    flavour: Flavour, log: Log
) -> None:
    saga = SagaAssembler.saga(compensation_retry=RetryPolicy(attempts=3))
    for name in "ab":
        op = flavour.op(log.step(name))
        saga.operation(flavour.compensate(op, log.failing(f"undo {name}", times=2)))
    saga.operation(flavour.op(log.failing("c")))

    with pytest.raises(SagaException) as caught:
        flavour.execute(saga)

    # The action kept the default of one attempt; each compensation got three.
    assert log.count("c") == 1
    assert log.count("undo b") == 3
    assert log.count("undo a") == 3
    assert caught.value.compensation_success_result == ["undo b", "undo a"]
    assert caught.value.status == "compensated"


def test_a_compensation_error_is_never_swallowed_even_without_retries(
    flavour: Flavour, log: Log
) -> None:
    op = flavour.compensate(flavour.op(log.step("a")), log.failing("undo a"))
    saga = SagaAssembler.saga().operation(op).operation(flavour.op(log.failing("b")))

    with pytest.raises(SagaException) as caught:
        flavour.execute(saga)

    assert caught.value.compensation_success_result is None
    assert caught.value.compensation_errors == ["undo a broke"]
    assert caught.value.status == "failed"

"""What a running step knows about itself, names, and a compensation's view of its action."""

from __future__ import annotations

from typing import Any

import pytest

from micro_saga import (
    ACTION_RESULT,
    Operation,
    SagaAssembler,
    SagaException,
    StepContext,
    StepContextError,
    current_step,
    idempotency_key,
)
from tests.unit.helpers import Flavour, Log


def test_named_shows_in_the_operation_name(flavour: Flavour, log: Log) -> None:
    saga = SagaAssembler.saga().operation(flavour.op(log.failing("act")).named("charge card"))

    with pytest.raises(SagaException) as caught:
        flavour.execute(saga)

    assert caught.value.operation_name == "charge card"


def test_an_operation_is_named_after_its_function_by_default() -> None:
    def reserve_stock() -> None:
        raise ValueError("none left")

    with pytest.raises(SagaException) as caught:
        SagaAssembler.saga().operation(Operation(reserve_stock)).orchestrator_execute()

    assert caught.value.operation_name == "reserve_stock"


def test_current_step_describes_the_running_step(flavour: Flavour) -> None:
    seen: list[StepContext] = []

    def act() -> None:
        seen.append(current_step())

    def flaky() -> None:
        seen.append(current_step())
        if len(seen) == 2:
            raise ValueError("once")

    saga = SagaAssembler.saga(name="order", saga_id="order-1")
    saga.operation(flavour.op(act).named("reserve"))
    saga.operation(flavour.op(flaky).named("charge").with_retry(attempts=2))
    flavour.execute(saga)

    assert seen == [
        StepContext(
            saga_id="order-1",
            saga_name="order",
            step=0,
            step_name="reserve",
            kind="action",
            attempt=1,
        ),
        StepContext(
            saga_id="order-1",
            saga_name="order",
            step=1,
            step_name="charge",
            kind="action",
            attempt=1,
        ),
        StepContext(
            saga_id="order-1",
            saga_name="order",
            step=1,
            step_name="charge",
            kind="action",
            attempt=2,
        ),
    ]


def test_idempotency_keys_are_stable_across_attempts_and_distinct_between_steps(
    flavour: Flavour,
) -> None:
    keys: list[tuple[int, str, int, str]] = []

    def record(fail_first: bool) -> None:
        step = current_step()
        keys.append((step.step, step.kind, step.attempt, idempotency_key()))
        assert step.idempotency_key == idempotency_key()
        if fail_first and step.attempt == 1:
            raise ValueError("first attempt fails")

    saga = SagaAssembler.saga(retry_attempts=2, saga_id="s-9")
    saga.operation(flavour.compensate(flavour.op(record, True), record, True))
    saga.operation(flavour.compensate(flavour.op(record, False), record, False))
    saga.operation(flavour.op(record, True).with_retry(attempts=1))

    with pytest.raises(SagaException):
        flavour.execute(saga)

    assert keys == [
        (0, "action", 1, "s-9:0"),
        (0, "action", 2, "s-9:0"),
        (1, "action", 1, "s-9:1"),
        (2, "action", 1, "s-9:2"),
        (1, "compensation", 1, "s-9:1:compensation"),
        (0, "compensation", 1, "s-9:0:compensation"),
        (0, "compensation", 2, "s-9:0:compensation"),
    ]


def test_each_saga_gets_its_own_id_unless_one_is_given() -> None:
    ids: list[str] = []

    def act() -> None:
        ids.append(current_step().saga_id)

    saga = SagaAssembler.saga().operation(Operation(act))
    saga.orchestrator_execute()
    saga.orchestrator_execute()

    assert len(set(ids)) == 2
    assert all(len(saga_id) == 32 for saga_id in ids)


def test_current_step_outside_a_step_raises() -> None:
    with pytest.raises(StepContextError, match="outside a saga step"):
        current_step()
    with pytest.raises(StepContextError):
        idempotency_key()
    assert issubclass(StepContextError, LookupError)


def test_the_step_context_is_gone_once_the_step_returns(flavour: Flavour) -> None:
    flavour.execute(SagaAssembler.saga().operation(flavour.op(current_step)))

    with pytest.raises(StepContextError):
        current_step()


@pytest.mark.parametrize("where", ["positional", "keyword"])
def test_a_compensation_receives_its_actions_result(flavour: Flavour, where: str) -> None:
    received: list[Any] = []

    def undo(*args: Any, **kwargs: Any) -> None:
        received.append((args, kwargs))

    def fail() -> None:
        raise ValueError("fail")

    op = flavour.op(lambda: {"order": 17})
    if where == "positional":
        flavour.compensate(op, undo, "before", ACTION_RESULT, "after")
    else:
        flavour.compensate(op, undo, "before", created=ACTION_RESULT, other="x")
    saga = SagaAssembler.saga().operation(op).operation(flavour.op(fail))

    with pytest.raises(SagaException):
        flavour.execute(saga)

    if where == "positional":
        assert received == [(("before", {"order": 17}, "after"), {})]
    else:
        assert received == [(("before",), {"created": {"order": 17}, "other": "x"})]


def test_action_result_placeholder_reads_as_its_name() -> None:
    assert repr(ACTION_RESULT) == "ACTION_RESULT"
    assert type(ACTION_RESULT)() is ACTION_RESULT

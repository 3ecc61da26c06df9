"""Retry policies: the pure delay math, which errors retry, and the backoff the runners request."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from micro_saga import (
    AttemptFinished,
    InMemoryJournal,
    Operation,
    RetryPolicy,
    SagaAssembler,
    SagaDefinitionError,
    SagaException,
)
from micro_saga import core as engine_core
from micro_saga.plan import Mode
from micro_saga.retry import LONGEST_DELAY
from tests.unit.helpers import FakeSleep, Flavour, Log, at, execute

# -- delay_for: pure math -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (RetryPolicy(attempts=5, delay=2), [2, 2, 2, 2]),
        (RetryPolicy(attempts=5, backoff="exponential", delay=1), [1, 2, 4, 8]),
        (
            RetryPolicy(attempts=5, backoff="exponential", delay=0.5, multiplier=3),
            [0.5, 1.5, 4.5, 13.5],
        ),
        (RetryPolicy(attempts=5, backoff="exponential", delay=1, max_delay=5), [1, 2, 4, 5]),
        (RetryPolicy(attempts=5, delay=10, max_delay=3), [3, 3, 3, 3]),
        (RetryPolicy(attempts=5), [0, 0, 0, 0]),
    ],
)
def test_delay_for_without_jitter(policy: RetryPolicy, expected: list[float]) -> None:
    assert [policy.delay_for(failures) for failures in (1, 2, 3, 4)] == expected


def test_delay_for_adds_jitter_scaled_by_rand_after_the_cap() -> None:
    policy = RetryPolicy(backoff="exponential", delay=1, max_delay=3, jitter=2)

    assert policy.delay_for(1, rand=0.0) == 1
    assert policy.delay_for(1, rand=0.25) == 1.5
    assert policy.delay_for(2, rand=0.5) == 3
    assert policy.delay_for(5, rand=0.75) == 4.5


def test_delay_for_zero_failures_is_the_base_delay() -> None:
    assert RetryPolicy(backoff="exponential", delay=4).delay_for(0) == 4


def test_retry_after_gives_up_when_attempts_are_spent() -> None:
    policy = RetryPolicy(attempts=3, delay=1)

    assert policy.retry_after(1, ValueError()) == 1
    assert policy.retry_after(2, ValueError()) == 1
    assert policy.retry_after(3, ValueError()) is None


# -- which errors retry -------------------------------------------------------------------


class TransientError(ConnectionError):
    pass


class FatalError(TransientError):
    pass


@pytest.mark.parametrize(
    ("policy", "error", "retries"),
    [
        (RetryPolicy(), ValueError(), True),
        (RetryPolicy(), KeyboardInterrupt(), False),
        (RetryPolicy(retry_on=(KeyError,)), ValueError(), False),
        (RetryPolicy(retry_on=(LookupError,)), KeyError(), True),
        (RetryPolicy(retry_on=("LookupError",)), KeyError(), True),
        (RetryPolicy(retry_on=(f"{__name__}.TransientError",)), FatalError(), True),
        (RetryPolicy(never_retry_on=(FatalError,)), FatalError(), False),
        (RetryPolicy(never_retry_on=(FatalError,)), TransientError(), True),
        (RetryPolicy(never_retry_on=(f"{__name__}.FatalError",)), FatalError(), False),
        (
            RetryPolicy(retry_on=(TransientError,), never_retry_on=(FatalError,)),
            FatalError(),
            False,
        ),
    ],
)
def test_which_errors_retry(policy: RetryPolicy, error: BaseException, retries: bool) -> None:
    assert policy.retries(error) is retries
    with_attempts_left = dataclasses.replace(policy, attempts=2)
    assert (with_attempts_left.retry_after(1, error) is not None) is retries


def test_a_never_retry_error_gives_up_at_once(flavour: Flavour, log: Log) -> None:
    def act() -> None:
        log.add("act")
        raise FatalError("fatal")

    op = flavour.op(act).with_retry(attempts=5, never_retry_on=(FatalError,))
    saga = SagaAssembler.saga().operation(op)

    with pytest.raises(SagaException) as caught:
        flavour.execute(saga)

    assert log.entries == ["act"]
    assert isinstance(caught.value.operation_error, FatalError)


def test_an_error_outside_retry_on_gives_up_at_once(flavour: Flavour, log: Log) -> None:
    op = flavour.op(log.failing("act")).with_retry(attempts=5, retry_on=(TransientError,))

    with pytest.raises(SagaException, match="act broke"):
        flavour.execute(SagaAssembler.saga().operation(op))

    assert log.entries == ["act"]


# -- per-operation policies override the saga's -------------------------------------------


@pytest.mark.parametrize("mode", ["orchestrated", "choreographed"])
def test_with_retry_overrides_the_saga_policy(mode: Mode, log: Log) -> None:
    saga = SagaAssembler.saga(retry_attempts=4)
    saga.operation(Operation(log.failing("saga-wide", times=3)))
    saga.operation(Operation(log.failing("policy", times=2)).with_retry(RetryPolicy(attempts=3)))
    saga.operation(Operation(log.failing("own", times=3)).with_retry(attempts=2))

    with pytest.raises(SagaException):
        execute(saga, mode, "sync")

    assert log.count("own") == 2
    assert log.count("saga-wide") == 4
    assert log.count("policy") == 3


def test_with_compensation_retry_applies_to_the_compensation_only(log: Log) -> None:
    op = Operation(log.step("a")).add_compensation(log.failing("undo a", times=3))
    op.with_compensation_retry(attempts=4)
    saga = SagaAssembler.saga(retry_attempts=2).operation(op)
    saga.operation(Operation(log.failing("b")))

    with pytest.raises(SagaException) as caught:
        saga.orchestrator_execute()

    assert log.count("b") == 2
    assert log.count("undo a") == 4
    assert caught.value.status == "compensated"


# -- the backoff the runners ask the sleep seam for ---------------------------------------


def test_backoff_delays_are_requested_in_order(
    flavour: Flavour, log: Log, fake_sleep: FakeSleep
) -> None:
    journal = InMemoryJournal()
    op = flavour.op(log.failing("act", times=4, result="ok")).with_retry(
        attempts=5, backoff="exponential", delay=1, max_delay=3
    )
    saga = SagaAssembler.saga(
        journal=journal, sleep=fake_sleep, async_sleep=fake_sleep.async_sleep
    ).operation(op)

    assert flavour.execute(saga) == ["ok"]

    assert fake_sleep.delays == [1, 2, 3, 3]
    failures = [
        e for e in journal.events if isinstance(e, AttemptFinished) and e.status == "failed"
    ]
    # Each failure records when its retry is due; the clock moved only by the sleeps.
    assert [(e.at, e.retry_at) for e in failures] == [
        (at(0), at(1)),
        (at(1), at(3)),
        (at(3), at(6)),
        (at(6), at(9)),
    ]


def test_compensation_backoff_uses_the_compensation_policy(
    flavour: Flavour, log: Log, fake_sleep: FakeSleep
) -> None:
    op = flavour.op(log.step("a")).with_compensation_retry(attempts=3, delay=7)
    flavour.compensate(op, log.failing("undo a", times=2))
    saga = SagaAssembler.saga(
        retry=RetryPolicy(attempts=2, delay=1), sleep=fake_sleep, async_sleep=fake_sleep.async_sleep
    )
    saga.operation(op).operation(flavour.op(log.failing("b")))

    with pytest.raises(SagaException):
        flavour.execute(saga)

    assert fake_sleep.delays == [1, 7, 7]


def test_jitter_comes_from_the_random_draw(
    monkeypatch: pytest.MonkeyPatch, log: Log, fake_sleep: FakeSleep
) -> None:
    monkeypatch.setattr(engine_core, "default_rand", lambda: 0.5)
    op = Operation(log.failing("act", times=2)).with_retry(attempts=3, delay=1, jitter=0.5)

    SagaAssembler.saga(sleep=fake_sleep).operation(op).orchestrator_execute()

    assert fake_sleep.delays == [1.25, 1.25]


def test_no_delay_means_no_sleep(log: Log, fake_sleep: FakeSleep) -> None:
    op = Operation(log.failing("act", times=2)).with_retry(attempts=3)

    SagaAssembler.saga(sleep=fake_sleep).operation(op).orchestrator_execute()

    assert log.count("act") == 3
    assert fake_sleep.delays == []


# -- invalid definitions are refused with a message that names the problem -----------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"attempts": 0}, "attempts must be at least 1"),
        ({"attempts": "3"}, "attempts must be an int"),
        ({"attempts": True}, "attempts must be an int"),
        ({"attempts": 2.0}, "attempts must be an int"),
        ({"backoff": "linear"}, "backoff must be 'fixed' or 'exponential'"),
        ({"delay": -1}, "delay must be a finite number"),
        ({"delay": math.inf}, "delay must be a finite number"),
        ({"delay": "1"}, "delay must be a finite number"),
        ({"jitter": -0.5}, "jitter must be a finite number"),
        ({"jitter": math.nan}, "jitter must be a finite number"),
        ({"max_delay": -1}, "max_delay must be None or a number"),
        ({"multiplier": 0.5}, "multiplier must be >= 1"),
        ({"multiplier": math.inf}, "multiplier must be >= 1"),
        ({"retry_on": [ValueError]}, "retry_on must be a tuple of exception classes"),
        ({"retry_on": (int,)}, "retry_on must be a tuple of exception classes"),
        ({"never_retry_on": ("x", 3)}, "never_retry_on must be a tuple of exception classes"),
    ],
)
def test_an_invalid_policy_is_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(SagaDefinitionError, match=message) as caught:
        RetryPolicy(**options)

    assert isinstance(caught.value, ValueError)
    with pytest.raises(SagaDefinitionError, match=message):
        Operation(print).with_retry(**options)


def test_with_retry_takes_a_policy_or_options_not_both() -> None:
    with pytest.raises(SagaDefinitionError, match="either a RetryPolicy or its options"):
        Operation(print).with_retry(RetryPolicy(), attempts=2)


def test_with_retry_names_an_unknown_option() -> None:
    with pytest.raises(SagaDefinitionError, match=r"unknown retry option.*retries"):
        Operation(print).with_compensation_retry(retries=2)


def test_with_retry_refuses_what_is_not_a_policy() -> None:
    with pytest.raises(SagaDefinitionError, match="expected a RetryPolicy"):
        Operation(print).with_retry(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry_attempts": -1}, "retry_attempts must be >= 1"),
        ({"retry_attempts": "3"}, "retry_attempts must be an int"),
        ({"retry_attempts": 2, "retry": RetryPolicy()}, "either retry_attempts or retry="),
        ({"saga_id": ""}, "saga_id must be a non-empty str"),
        ({"on_crash": "explode"}, "on_crash must be 'resume' or 'compensate'"),
        ({"max_interruptions": -1}, "max_interruptions must be an int >= 0"),
        ({"max_interruptions": 1.5}, "max_interruptions must be an int >= 0"),
        ({"max_interruptions": True}, "max_interruptions must be an int >= 0"),
    ],
)
def test_an_invalid_saga_is_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(SagaDefinitionError, match=message):
        SagaAssembler.saga(**options)


def test_invalid_operations_are_refused() -> None:
    with pytest.raises(SagaDefinitionError, match="expected a callable"):
        Operation(42)  # type: ignore[arg-type]
    with pytest.raises(SagaDefinitionError, match="operation name must be a non-empty str"):
        Operation(print).named(" ")
    with pytest.raises(SagaDefinitionError, match="expected an Operation"):
        SagaAssembler.saga().operation(print)  # type: ignore[arg-type]


def test_an_exponential_policy_that_retries_for_ever_stays_capped() -> None:
    capped = RetryPolicy(attempts=10**6, backoff="exponential", delay=1, max_delay=60)
    assert capped.delay_for(5_000) == 60.0
    uncapped = RetryPolicy(attempts=10**6, backoff="exponential", delay=1)
    assert uncapped.delay_for(5_000) == LONGEST_DELAY

"""Plans to journal text and back: format 2 stores each distinct retry policy once, and the
plans earlier versions wrote (format 1, two full policies per step) still read."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from micro_saga import Operation, SagaAssembler
from micro_saga.plan import SagaPlan
from micro_saga.retry import RetryPolicy, error_name
from saga_store import Registry, SerializationError
from saga_store.codec import PLAN_FORMAT, decode_plan, encode_plan
from saga_store.serialize import JsonSerializer
from tests.plan_formats import as_format_1

registry = Registry()
serializer = JsonSerializer()


@registry.register(name="codec-tests:act")
def act(value: int, *, note: str = "") -> str:
    return f"{value}{note}"


@registry.register(name="codec-tests:undo")
def undo(value: int) -> None:
    return None


def plan_of(*operations: Operation) -> SagaPlan:
    saga = SagaAssembler.saga(name="codec", saga_id="codec-1", retry_attempts=2)
    for operation in operations:
        saga.operation(operation)
    return saga.plan("orchestrated")


def named(policy: RetryPolicy) -> RetryPolicy:
    """The policy as it reads back: its errors by name (the journal stores names)."""
    return replace(
        policy,
        retry_on=tuple(_name(s) for s in policy.retry_on),
        never_retry_on=tuple(_name(s) for s in policy.never_retry_on),
    )


def _name(spec: Any) -> str:
    return spec if isinstance(spec, str) else error_name(spec)


def mixed_plan() -> SagaPlan:
    return plan_of(
        Operation(act, 1).add_compensation(undo, 1),
        Operation(act, 2, note="!")
        .add_compensation(undo, 2)
        .with_retry(attempts=4, backoff="exponential", delay=1.5, max_delay=10.0)
        .with_compensation_retry(attempts=6, never_retry_on=(KeyError,)),
        Operation(act, 3),
    )


def test_a_plan_reads_back_as_it_was_written() -> None:
    plan = mixed_plan()
    again = decode_plan(encode_plan(plan, registry, serializer), registry, serializer)
    assert (again.saga_id, again.name, again.mode) == ("codec-1", "codec", "orchestrated")
    assert (again.on_crash, again.max_interruptions) == (plan.on_crash, plan.max_interruptions)
    for old, new in zip(plan.steps, again.steps, strict=True):
        assert (new.index, new.name) == (old.index, old.name)
        assert (new.retry, new.compensation_retry) == (
            named(old.retry),
            named(old.compensation_retry),
        )
        assert new.action.func is old.action.func
        assert (new.action.args, new.action.kwargs) == (old.action.args, old.action.kwargs)
    assert again.steps[1].retry.attempts == 4
    assert again.steps[1].compensation_retry.never_retry_on == ("KeyError",)


def test_each_distinct_policy_is_written_once() -> None:
    data = json.loads(encode_plan(mixed_plan(), registry, serializer))
    assert data["format"] == PLAN_FORMAT == 2
    # the saga-wide default (2 attempts), and the second step's two
    assert [p["attempts"] for p in data["policies"]] == [2, 4, 6]
    assert [(s["retry"], s["compensation_retry"]) for s in data["steps"]] == [
        (0, 0),
        (1, 2),
        (0, 0),
    ]

    same = plan_of(*(Operation(act, n).add_compensation(undo, n) for n in range(5)))
    assert len(json.loads(encode_plan(same, registry, serializer))["policies"]) == 1


def test_a_plan_an_earlier_version_wrote_still_reads() -> None:
    plan = mixed_plan()
    old_text = as_format_1(encode_plan(plan, registry, serializer))
    assert '"policies"' not in old_text
    again = decode_plan(old_text, registry, serializer)
    assert [(s.retry, s.compensation_retry) for s in again.steps] == [
        (named(s.retry), named(s.compensation_retry)) for s in plan.steps
    ]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d["steps"][0].update(retry=7), "malformed"),
        (lambda d: d["steps"][0].update(retry=-1), "malformed"),
        (lambda d: d["steps"][0].update(retry="0"), "malformed"),
        (lambda d: d["steps"][0].update(retry=True), "malformed"),
        (lambda d: d.pop("policies"), "malformed"),
        (lambda d: d.update(format=9), "unknown plan format 9"),
    ],
    ids=["out of range", "negative", "not an int", "a bool", "no policies", "unknown format"],
)
def test_a_garbled_policy_reference_is_a_serialization_error(change: Any, words: str) -> None:
    data = json.loads(encode_plan(mixed_plan(), registry, serializer))
    change(data)
    with pytest.raises(SerializationError, match=words):
        decode_plan(json.dumps(data), registry, serializer)

"""Plans to journal text and back, through the registry and the serializer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from micro_saga.errors import SagaDefinitionError
from micro_saga.operation import Call
from micro_saga.plan import SagaPlan, StepPlan
from micro_saga.retry import ErrorSpec, RetryPolicy, error_name

from .errors import SerializationError
from .registry import Registry
from .serialize import Serializer
from .tables import NAME_LENGTH

__all__ = ["PLAN_FORMAT", "decode_plan", "encode_plan"]

#: 2: each distinct retry policy is written once, in ``policies``; a step's ``retry`` and
#: ``compensation_retry`` are positions in it (1: each step carried its two policies in full)
PLAN_FORMAT = 2
_READABLE_FORMATS = (1, 2)


def encode_plan(plan: SagaPlan, registry: Registry, serializer: Serializer) -> str:
    """The plan as journal text; refuses unregistered functions and unstorable arguments."""
    _check_lengths(plan)
    # A saga's steps mostly share one or two policies: stored once each, not twice per step.
    positions: dict[RetryPolicy, int] = {}

    def position(policy: RetryPolicy) -> int:
        return positions.setdefault(policy, len(positions))

    steps = [
        {
            "name": step.name,
            "action": _encode_call(step.action, step, "action", registry, serializer),
            "compensation": None
            if step.compensation is None
            else _encode_call(step.compensation, step, "compensation", registry, serializer),
            "retry": position(step.retry),
            "compensation_retry": position(step.compensation_retry),
        }
        for step in plan.steps
    ]
    data = {
        "format": PLAN_FORMAT,
        "saga_id": plan.saga_id,
        "name": plan.name,
        "mode": plan.mode,
        "on_crash": plan.on_crash,
        "max_interruptions": plan.max_interruptions,
        "policies": [_encode_policy(policy) for policy in positions],
        "steps": steps,
    }
    try:
        return serializer.dumps(data)
    except SerializationError:
        # One dumps for the whole plan is the fast path; only when it fails is each argument
        # tried on its own, to say which one cannot be stored.
        _check_arguments(plan, serializer)
        raise


def _check_lengths(plan: SagaPlan) -> None:
    named = [("saga_id", plan.saga_id), ("saga name", plan.name)]
    named += [(f"name of step {s.index}", s.name) for s in plan.steps]
    for what, value in named:
        if value is not None and len(value) > NAME_LENGTH:
            raise SagaDefinitionError(
                f"the {what} is {len(value)} characters long ({value[:40]!r}...): "
                f"the journal keeps at most {NAME_LENGTH}; shorten it"
            )


def decode_plan(text: str, registry: Registry, serializer: Serializer) -> SagaPlan:
    """Rebuild a plan from journal text; raises UnregisteredFunction or SerializationError."""
    data = serializer.loads(text)
    try:
        if data.get("format") not in _READABLE_FORMATS:
            raise SerializationError(f"unknown plan format {data.get('format')!r}")
        policy = _policy_reader(data)
        steps = tuple(
            StepPlan(
                index=i,
                name=s["name"],
                action=_decode_call(s["action"], registry),
                compensation=None
                if s["compensation"] is None
                else _decode_call(s["compensation"], registry),
                retry=policy(s["retry"]),
                compensation_retry=policy(s["compensation_retry"]),
            )
            for i, s in enumerate(data["steps"])
        )
        return SagaPlan(
            saga_id=data["saga_id"],
            name=data["name"],
            mode=data["mode"],
            steps=steps,
            on_crash=data["on_crash"],
            max_interruptions=data["max_interruptions"],
        )
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise SerializationError(f"the journaled plan is malformed: {exc!r}") from None


def _encode_call(
    call: Call, step: StepPlan, kind: str, registry: Registry, serializer: Serializer
) -> dict[str, Any]:
    return {"fn": registry.name_of(call.func), "args": list(call.args), "kwargs": call.kwargs}


def _check_arguments(plan: SagaPlan, serializer: Serializer) -> None:
    """Raise SerializationError naming the first argument the serializer refuses."""
    for step in plan.steps:
        for kind, call in (("action", step.action), ("compensation", step.compensation)):
            if call is None:
                continue
            for position, value in [*enumerate(call.args, 1), *call.kwargs.items()]:
                try:
                    serializer.dumps(value)
                except SerializationError as exc:
                    where = (
                        f"argument {position}"
                        if isinstance(position, int)
                        else f"argument {position}="
                    )
                    raise SerializationError(
                        f"{where} of the {kind} of step {step.index} ({step.name!r}): {exc}"
                    ) from None


def _decode_call(data: dict[str, Any], registry: Registry) -> Call:
    return Call(registry.resolve(data["fn"]), tuple(data["args"]), dict(data["kwargs"]))


def _encode_policy(policy: RetryPolicy) -> dict[str, Any]:
    return {
        "attempts": policy.attempts,
        "backoff": policy.backoff,
        "delay": policy.delay,
        "multiplier": policy.multiplier,
        "max_delay": policy.max_delay,
        "jitter": policy.jitter,
        "retry_on": [_spec_name(s) for s in policy.retry_on],
        "never_retry_on": [_spec_name(s) for s in policy.never_retry_on],
    }


def _policy_reader(data: dict[str, Any]) -> Callable[[Any], RetryPolicy]:
    """How a step's policy is read: in full (format 1) or by position in ``policies``."""
    if data["format"] == 1:
        return _decode_policy
    policies = [_decode_policy(policy) for policy in data["policies"]]

    def at(position: Any) -> RetryPolicy:
        if isinstance(position, bool) or not isinstance(position, int):
            raise TypeError(f"a policy position must be an int, got {position!r}")
        if not 0 <= position < len(policies):
            raise IndexError(f"policy position {position} of {len(policies)}")
        return policies[position]

    return at


def _decode_policy(data: dict[str, Any]) -> RetryPolicy:
    return RetryPolicy(
        attempts=data["attempts"],
        backoff=data["backoff"],
        delay=data["delay"],
        multiplier=data["multiplier"],
        max_delay=data["max_delay"],
        jitter=data["jitter"],
        retry_on=tuple(data["retry_on"]),
        never_retry_on=tuple(data["never_retry_on"]),
    )


def _spec_name(spec: ErrorSpec) -> str:
    return spec if isinstance(spec, str) else error_name(spec)

"""Pure decisions: given a plan and what the journal says happened, what comes next?

No I/O here. The sync and async runners carry out these answers, and recovery is the same
runners started from a journal's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from .context import StepKind
from .errors import (
    RecordedError,
    ResultNotStored,
    SagaCrashedError,
    SagaException,
    StepInterruptedError,
)
from .plan import SagaPlan, StepPlan
from .retry import error_name
from .state import (
    Attempt,
    AttemptFinished,
    ErrorInfo,
    Event,
    SagaState,
    SagaStatus,
    StatusChanged,
)

__all__ = [
    "BeginCompensation",
    "Done",
    "Finish",
    "GaveUp",
    "RunAttempt",
    "RunSteps",
    "Wait",
    "compensation_targets",
    "failure_report",
    "on_open",
    "results",
    "saga_action",
    "step_action",
]


@dataclass(frozen=True, slots=True)
class RunAttempt:
    number: int


@dataclass(frozen=True, slots=True)
class Wait:
    until: datetime


@dataclass(frozen=True, slots=True)
class Done:
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class GaveUp:
    reason: Literal["failed", "interrupted"]


StepAction = RunAttempt | Wait | Done | GaveUp


@dataclass(frozen=True, slots=True)
class RunSteps:
    kind: StepKind
    steps: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BeginCompensation:
    pass


@dataclass(frozen=True, slots=True)
class Finish:
    status: SagaStatus


SagaAction = RunSteps | BeginCompensation | Finish


def step_action(attempts: Sequence[Attempt], max_interruptions: int, now: datetime) -> StepAction:
    """Next move for one step's action or compensation, from its attempts so far."""
    if not attempts:
        return RunAttempt(1)
    last = attempts[-1]
    if last.status == "succeeded":
        return Done(last)
    if last.status == "started":
        raise RuntimeError("an attempt in flight must be marked interrupted before deciding")
    interruptions = sum(1 for a in attempts if a.status == "interrupted")
    if interruptions > max_interruptions:
        return GaveUp("interrupted")
    if last.status == "failed":
        if last.retry_at is None:
            return GaveUp("failed")
        if last.retry_at > now:
            return Wait(last.retry_at)
    return RunAttempt(len(attempts) + 1)


def saga_action(plan: SagaPlan, state: SagaState, now: datetime) -> SagaAction:
    """Next move for the whole saga."""
    if state.status == "running":
        return _forward(plan, state, now)
    if state.status == "compensating":
        return _backward(plan, state, now)
    return Finish(state.status)


def _forward(plan: SagaPlan, state: SagaState, now: datetime) -> SagaAction:
    pending: list[int] = []
    for step in plan.steps:
        move = step_action(state.of(step.index, "action"), plan.max_interruptions, now)
        if isinstance(move, GaveUp):
            return BeginCompensation()
        if not isinstance(move, Done):
            if plan.mode == "orchestrated":
                return RunSteps("action", (step.index,))
            pending.append(step.index)
    return RunSteps("action", tuple(pending)) if pending else Finish("succeeded")


def _backward(plan: SagaPlan, state: SagaState, now: datetime) -> SagaAction:
    pending: list[int] = []
    gave_up = False
    for index in compensation_targets(plan, state):
        move = step_action(state.of(index, "compensation"), plan.max_interruptions, now)
        if isinstance(move, GaveUp):
            gave_up = True
        elif not isinstance(move, Done):
            if plan.mode == "orchestrated":
                return RunSteps("compensation", (index,))
            pending.append(index)
    if pending:
        return RunSteps("compensation", tuple(pending))
    return Finish("failed" if gave_up else "compensated")


def compensation_targets(plan: SagaPlan, state: SagaState) -> list[int]:
    """Steps to undo, last first: those that succeeded or were in flight when a process died.

    A step whose every attempt raised did nothing to undo; a step never started neither.
    """
    return [
        step.index
        for step in reversed(plan.steps)
        if step.compensation is not None
        and any(_had_effect(a) for a in state.of(step.index, "action"))
    ]


_RESULT_NOT_STORED = error_name(ResultNotStored)


def _had_effect(attempt: Attempt) -> bool:
    if attempt.status in ("succeeded", "interrupted"):
        return True
    return attempt.error is not None and attempt.error.type == _RESULT_NOT_STORED


def on_open(plan: SagaPlan, prior: SagaState, now: datetime) -> list[Event]:
    """Events that resuming a saga starts with: in-flight attempts were interrupted, and
    a saga whose policy is to roll back after a crash starts compensating."""
    if prior.is_final:
        return []
    events: list[Event] = [
        AttemptFinished(
            saga_id=prior.saga_id,
            step=a.step,
            kind=a.kind,
            number=a.number,
            at=now,
            status="interrupted",
        )
        for a in prior.attempts
        if a.status == "started"
    ]
    if (
        prior.status == "running"
        and plan.on_crash == "compensate"
        and not _all_succeeded(plan, prior)  # all done: nothing to undo, just finish
    ):
        events.append(StatusChanged(saga_id=prior.saga_id, status="compensating", at=now))
    return events


def _all_succeeded(plan: SagaPlan, state: SagaState) -> bool:
    return all(
        any(a.status == "succeeded" for a in state.of(step.index, "action")) for step in plan.steps
    )


def results(plan: SagaPlan, state: SagaState) -> list[Any]:
    """Each action's result, in operation order (the saga succeeded)."""
    return [state.of(step.index, "action")[-1].result for step in plan.steps]


def failure_report(plan: SagaPlan, state: SagaState, now: datetime) -> SagaException:
    """The exception a rolled-back saga raises, built from its journal alone."""
    error: BaseException = SagaCrashedError(
        "SagaCrashed",
        "the saga's process died and its on_crash policy is 'compensate': rolled back",
    )
    name: str | None = None
    for step in plan.steps:
        attempts = state.of(step.index, "action")
        if attempts and attempts[-1].status != "started":
            move = step_action(attempts, plan.max_interruptions, now)
            if isinstance(move, GaveUp):
                error, name = _give_up_error(step, attempts, move), step.name
                break
    done: list[Any] = []
    errors: list[str] = []
    for index in compensation_targets(plan, state):
        attempts = state.of(index, "compensation")
        if not attempts or attempts[-1].status == "started":
            continue
        move = step_action(attempts, plan.max_interruptions, now)
        if isinstance(move, Done):
            done.append(move.attempt.result)
        elif isinstance(move, GaveUp):
            errors.append(str(_give_up_error(plan.steps[index], attempts, move)))
    return SagaException(
        error,
        name,
        done or None,
        errors or None,
        saga_id=state.saga_id,
        status=state.status,
    )


def _give_up_error(step: StepPlan, attempts: Sequence[Attempt], move: GaveUp) -> BaseException:
    if move.reason == "interrupted":
        n = sum(1 for a in attempts if a.status == "interrupted")
        return StepInterruptedError(
            "StepInterrupted",
            f"step {step.name!r} ({attempts[-1].kind}) was interrupted {n} times by a crash "
            "and gave up; raise max_interruptions if the step is just slow to finish",
        )
    return _live_or_recorded(attempts[-1].error)


def _live_or_recorded(info: ErrorInfo | None) -> BaseException:
    if info is None:
        return RecordedError("Unknown", "the journal has no error for this failure")
    if info.exception is not None:
        return info.exception
    return RecordedError(info.type, info.message, info.traceback)

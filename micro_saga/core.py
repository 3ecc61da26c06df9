"""What the sync and async runners share: the saga state, and the events each step produces.

A runner asks :meth:`Execution.next_saga` / :meth:`Execution.next_step` what to do, calls the
function, and records the :class:`Batch` that :meth:`Execution.started`,
:meth:`Execution.succeeded` or :meth:`Execution.failed` hands back. Only the calling and the
recording differ between the twins.
"""

from __future__ import annotations

import functools
import random
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from . import clock
from .context import StepContext, StepKind
from .decide import (
    BeginCompensation,
    Finish,
    SagaAction,
    StepAction,
    failure_report,
    on_open,
    results,
    saga_action,
    step_action,
)
from .errors import RecordedError, ResultNotStored, SagaDefinitionError
from .journal import Journal
from .operation import Call
from .plan import SagaPlan
from .retry import error_name
from .state import (
    AttemptFinished,
    AttemptStarted,
    ErrorInfo,
    Event,
    SagaFinished,
    SagaStarted,
    SagaState,
    StatusChanged,
)

__all__ = ["Batch", "Execution"]


@dataclass(frozen=True, slots=True)
class Batch:
    """Events to record together; ``durable`` asks the journal to commit before returning."""

    events: tuple[Event, ...]
    durable: bool


class Execution:
    """One run of one saga in this process (a first run or a resume)."""

    def __init__(self, plan: SagaPlan, journal: Journal, rand: Callable[[], float]) -> None:
        self.plan = plan
        self.journal = journal
        self.rand = rand
        self.lock = threading.Lock()
        self._writing = threading.Lock()
        self.state: SagaState | None = None

    # -- opening and closing -------------------------------------------------------------

    def opening(self, prior: SagaState | None) -> Batch:
        """Start a new saga or resume ``prior``; held back until the first step starts."""
        now = clock.utcnow()
        if prior is None:
            started = SagaStarted(plan=self.plan, at=now)
            self.state = SagaState.new(started)
            return Batch((started,), durable=False)
        self.state = prior
        return Batch(tuple(on_open(self.plan, prior, now)), durable=False)

    def apply(self, batch: Batch) -> None:
        """Record a batch and fold it into the state (journal first: it may refuse)."""
        if not batch.events:
            return
        # Writes are serialized (journal order is fold order), but the state lock is only held
        # for the fold: readers (the async runner, on the event loop) never wait on the I/O.
        with self._writing:
            self.journal.record(batch.events, durable=batch.durable)
            with self.lock:
                for event in batch.events:
                    self._state.apply(event)

    def next_saga(self) -> SagaAction:
        return saga_action(self.plan, self._state, clock.utcnow())

    def transition(self, action: BeginCompensation | Finish) -> Batch:
        now = clock.utcnow()
        saga_id = self.plan.saga_id
        if isinstance(action, BeginCompensation):
            return Batch((StatusChanged(saga_id=saga_id, status="compensating", at=now),), False)
        if self._state.is_final:
            return Batch((), durable=False)
        if action.status == "succeeded":
            done = SagaFinished(
                saga_id=saga_id,
                status=action.status,
                at=now,
                results=results(self.plan, self._state),
            )
        else:
            error = failure_report(self.plan, self._state, now).operation_error
            done = SagaFinished(
                saga_id=saga_id,
                status=action.status,
                at=now,
                error=_error_info(error, with_exception=False),
            )
        return Batch((done,), durable=True)

    def outcome(self) -> list[Any]:
        """The results of a succeeded saga, or raise its SagaException."""
        if self._state.status == "succeeded":
            return results(self.plan, self._state)
        raise failure_report(self.plan, self._state, clock.utcnow())

    # -- steps --------------------------------------------------------------------------

    def next_step(self, step: int, kind: StepKind) -> StepAction:
        with self.lock:
            attempts = list(self._state.of(step, kind))
        return step_action(attempts, self.plan.max_interruptions, clock.utcnow())

    def started(self, step: int, kind: StepKind, number: int) -> AttemptStarted:
        return AttemptStarted(
            saga_id=self.plan.saga_id, step=step, kind=kind, number=number, at=clock.utcnow()
        )

    def context(self, step: int, kind: StepKind, number: int) -> StepContext:
        return StepContext(
            saga_id=self.plan.saga_id,
            saga_name=self.plan.name,
            step=step,
            step_name=self.plan.steps[step].name,
            kind=kind,
            attempt=number,
        )

    def prepare(
        self, step: int, kind: StepKind, number: int
    ) -> tuple[Call, functools.partial[Any], StepContext]:
        """What an attempt calls: the call, bound to its arguments, and the step's context."""
        call = self.plan.steps[step].call(kind)
        if call is None:  # decide.py only compensates steps that have a compensation
            raise RuntimeError(f"step {step} has no {kind}")
        bound = call.bind(self.action_result(step) if kind == "compensation" else None)
        return call, bound, self.context(step, kind, number)

    def action_result(self, step: int) -> Any:
        """What the step's action returned (for a compensation that asks for it)."""
        with self.lock:
            done = [a for a in self._state.of(step, "action") if a.status == "succeeded"]
        return done[-1].result if done else None

    def settle(
        self, step: int, kind: StepKind, number: int, result: Any, error: Exception | None
    ) -> None:
        """Record how an attempt ended.

        A result the journal refuses to store (it raises SagaDefinitionError) ends the step:
        the attempt fails with ResultNotStored, which is never retried (the action did run) and
        whose step is compensated on rollback."""
        if error is None:
            try:
                self.apply(self.succeeded(step, kind, number, result))
                return
            except SagaDefinitionError as refused:
                error = ResultNotStored(
                    f"step {step} ({kind}) returned what the journal refuses: {refused}"
                )
        self.apply(self.failed(step, kind, number, error))

    def succeeded(self, step: int, kind: StepKind, number: int, result: Any) -> Batch:
        event = AttemptFinished(
            saga_id=self.plan.saga_id,
            step=step,
            kind=kind,
            number=number,
            at=clock.utcnow(),
            status="succeeded",
            result=result,
        )
        # Orchestrated: the next step's start commits this too (n + 1 commits per saga).
        return Batch((event,), durable=self.plan.mode == "choreographed")

    def failed(self, step: int, kind: StepKind, number: int, exc: Exception) -> Batch:
        now = clock.utcnow()
        with self.lock:
            failures = 1 + sum(1 for a in self._state.of(step, kind) if a.status == "failed")
        policy = self.plan.steps[step].policy(kind)
        delay = (
            None
            if isinstance(exc, ResultNotStored)
            else policy.retry_after(failures, exc, self.rand())
        )
        event = AttemptFinished(
            saga_id=self.plan.saga_id,
            step=step,
            kind=kind,
            number=number,
            at=now,
            status="failed",
            error=_error_info(exc, with_exception=True),
            retry_at=None if delay is None else now + timedelta(seconds=delay),
        )
        # A backoff under way must survive a crash, so its end time is committed first.
        durable = self.plan.mode == "choreographed" or bool(delay)
        return Batch((event,), durable=durable)

    @property
    def _state(self) -> SagaState:
        if self.state is None:
            raise RuntimeError("the execution was not opened")
        return self.state


def _error_info(exc: BaseException, *, with_exception: bool) -> ErrorInfo:
    if isinstance(exc, RecordedError):
        return ErrorInfo(type=exc.error_type, message=exc.message, traceback=exc.traceback)
    return ErrorInfo(
        type=error_name(type(exc)),
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
        exception=exc if with_exception else None,
    )


def default_rand() -> float:
    return random.random()

"""Journal records and the saga state they fold into.

Events are what the engine reports; :class:`SagaState` is what a journal answers when asked
what already happened. The fold (:meth:`SagaState.apply`) is the same for every journal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from .context import StepKind
from .plan import SagaPlan

__all__ = [
    "FINAL_STATUSES",
    "Attempt",
    "AttemptFinished",
    "AttemptStarted",
    "AttemptStatus",
    "ErrorInfo",
    "Event",
    "SagaFinished",
    "SagaStarted",
    "SagaState",
    "SagaStatus",
    "StatusChanged",
]

SagaStatus = Literal["running", "compensating", "succeeded", "compensated", "failed"]
AttemptStatus = Literal["started", "succeeded", "failed", "interrupted"]
FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "compensated", "failed"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorInfo:
    """An error as the journal keeps it; ``exception`` is only there in the live process."""

    type: str
    message: str
    traceback: str | None = None
    exception: BaseException | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One attempt of a step's action or compensation."""

    step: int
    kind: StepKind
    number: int
    status: AttemptStatus
    started_at: datetime
    finished_at: datetime | None = None
    result: Any = None
    error: ErrorInfo | None = None
    #: after a failure: when the next attempt may start; None means the step gave up
    retry_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaStarted:
    plan: SagaPlan
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptStarted:
    saga_id: str
    step: int
    kind: StepKind
    number: int
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptFinished:
    saga_id: str
    step: int
    kind: StepKind
    number: int
    at: datetime
    status: Literal["succeeded", "failed", "interrupted"]
    result: Any = None
    error: ErrorInfo | None = None
    retry_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusChanged:
    saga_id: str
    status: SagaStatus
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaFinished:
    saga_id: str
    status: SagaStatus
    at: datetime
    #: the actions' results, in operation order, when the saga succeeded
    results: list[Any] | None = None
    #: the error that made the saga roll back, when it did
    error: ErrorInfo | None = None


Event = SagaStarted | AttemptStarted | AttemptFinished | StatusChanged | SagaFinished


@dataclass(slots=True, kw_only=True)
class SagaState:
    """What happened to one saga so far, in journal order."""

    saga_id: str
    name: str | None
    status: SagaStatus
    created_at: datetime
    finished_at: datetime | None = None
    attempts: list[Attempt]
    _by_step: dict[tuple[int, StepKind], list[Attempt]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for attempt in self.attempts:
            self._by_step.setdefault((attempt.step, attempt.kind), []).append(attempt)

    @classmethod
    def new(cls, event: SagaStarted) -> SagaState:
        return cls(
            saga_id=event.plan.saga_id,
            name=event.plan.name,
            status="running",
            created_at=event.at,
            attempts=[],
        )

    def of(self, step: int, kind: StepKind) -> list[Attempt]:
        """Attempts of one step's action or compensation, in order (empty if none)."""
        return self._by_step.get((step, kind), [])

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def apply(self, event: Event) -> None:
        """Fold one event into the state."""
        if isinstance(event, AttemptStarted):
            attempt = Attempt(
                step=event.step,
                kind=event.kind,
                number=event.number,
                status="started",
                started_at=event.at,
            )
            self.attempts.append(attempt)
            self._by_step.setdefault((event.step, event.kind), []).append(attempt)
        elif isinstance(event, AttemptFinished):
            self._finish(event)
        elif isinstance(event, StatusChanged):
            self.status = event.status
        elif isinstance(event, SagaFinished):
            self.status = event.status
            self.finished_at = event.at

    def _finish(self, event: AttemptFinished) -> None:
        series = self._by_step[(event.step, event.kind)]
        old = series[event.number - 1]
        # built, not dataclasses.replace(): that costs more than the rest of the fold
        new = Attempt(
            step=old.step,
            kind=old.kind,
            number=old.number,
            started_at=old.started_at,
            status=event.status,
            finished_at=event.at,
            result=event.result,
            error=event.error,
            retry_at=event.retry_at,
        )
        series[event.number - 1] = new
        for i in range(len(self.attempts) - 1, -1, -1):
            if self.attempts[i] is old:
                self.attempts[i] = new
                break

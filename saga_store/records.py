"""Typed, frozen records of saga history, built from rows at the store boundary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from micro_saga.state import Attempt, ErrorInfo, SagaState

from .errors import SerializationError
from .serialize import Serializer

__all__ = ["AttemptRecord", "EventRecord", "SagaRecord", "Stats", "Undecodable", "decode_state"]


@dataclass(frozen=True, slots=True)
class Undecodable:
    """Journal text the serializer cannot read back: history still shows it, as it is."""

    text: str
    error: str


def _shown(text: str | None, serializer: Serializer) -> Any:
    if text is None:
        return None
    try:
        return serializer.loads(text)
    except SerializationError as exc:
        return Undecodable(text, str(exc))


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord:
    """One attempt of a step's action or compensation."""

    step: int
    step_name: str
    kind: str
    attempt: int
    status: str
    worker: str | None
    started_at: datetime
    finished_at: datetime | None
    result: Any
    error_type: str | None
    error_message: str | None
    error_traceback: str | None
    retry_at: datetime | None

    @property
    def duration(self) -> timedelta | None:
        return None if self.finished_at is None else self.finished_at - self.started_at

    @classmethod
    def from_row(cls, row: Any, serializer: Serializer) -> AttemptRecord:
        return cls(
            step=row.step,
            step_name=row.step_name,
            kind=row.kind,
            attempt=row.attempt,
            status=row.status,
            worker=row.worker,
            started_at=row.started_at,
            finished_at=row.finished_at,
            result=_shown(row.result, serializer),
            error_type=row.error_type,
            error_message=row.error_message,
            error_traceback=row.error_traceback,
            retry_at=row.retry_at,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRecord:
    """Something that happened to a saga outside its steps: parked, retried, resolved..."""

    at: datetime
    kind: str
    worker: str | None
    detail: str | None

    @classmethod
    def from_row(cls, row: Any) -> EventRecord:
        return cls(at=row.at, kind=row.kind, worker=row.worker, detail=row.detail)


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaRecord:
    """A saga as the journal has it; ``attempts`` and ``events`` are filled by ``get``."""

    id: str
    name: str | None
    mode: str
    status: str
    on_crash: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    results: list[Any] | None
    error_type: str | None
    error_message: str | None
    owner: str | None
    lease_expires_at: datetime | None
    wake_at: datetime | None
    parked_at: datetime | None
    parked_error: str | None
    resolved_at: datetime | None
    resolution_note: str | None
    attempts: tuple[AttemptRecord, ...] = ()
    events: tuple[EventRecord, ...] = ()

    @property
    def parked(self) -> bool:
        return self.parked_at is not None

    @property
    def duration(self) -> timedelta | None:
        return None if self.finished_at is None else self.finished_at - self.created_at

    @classmethod
    def from_row(
        cls,
        row: Any,
        serializer: Serializer,
        attempts: Sequence[AttemptRecord] = (),
        events: Sequence[EventRecord] = (),
    ) -> SagaRecord:
        return cls(
            id=row.id,
            name=row.name,
            mode=row.mode,
            status=row.status,
            on_crash=row.on_crash,
            created_at=row.created_at,
            updated_at=row.updated_at,
            finished_at=row.finished_at,
            results=_shown(row.results, serializer),
            error_type=row.error_type,
            error_message=row.error_message,
            owner=row.owner,
            lease_expires_at=row.lease_expires_at,
            wake_at=row.wake_at,
            parked_at=row.parked_at,
            parked_error=row.parked_error,
            resolved_at=row.resolved_at,
            resolution_note=row.resolution_note,
            attempts=tuple(attempts),
            events=tuple(events),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """Counts for a dashboard or an alert."""

    by_status: dict[str, int]
    by_name: dict[str, dict[str, int]]
    oldest_running: SagaRecord | None
    parked: tuple[str, ...]
    #: failed sagas nobody has resolved yet: these need a person
    unresolved_failed: int

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


def decode_state(saga_row: Any, attempt_rows: Sequence[Any], serializer: Serializer) -> SagaState:
    """The engine's view of a saga, from its rows (results decoded, errors without objects)."""
    return SagaState(
        saga_id=saga_row.id,
        name=saga_row.name,
        status=saga_row.status,
        created_at=saga_row.created_at,
        finished_at=saga_row.finished_at,
        attempts=[
            Attempt(
                step=r.step,
                kind=r.kind,
                number=r.attempt,
                status=r.status,
                started_at=r.started_at,
                finished_at=r.finished_at,
                result=None if r.result is None else serializer.loads(r.result),
                error=None
                if r.error_type is None
                else ErrorInfo(
                    type=r.error_type,
                    message=r.error_message or "",
                    traceback=r.error_traceback,
                ),
                retry_at=r.retry_at,
            )
            for r in attempt_rows
        ],
    )

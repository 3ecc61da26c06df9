"""Reading saga history: one saga with its attempts, filtered pages, and counts."""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, distinct, func, or_, select

from micro_saga.checks import is_whole
from micro_saga.errors import SagaDefinitionError

from .db import translate_errors
from .errors import SagaNotFound, StoreError
from .records import AttemptRecord, EventRecord, SagaRecord, Stats
from .serialize import Serializer
from .tables import attempts, events, sagas

__all__ = ["Progress", "SagaPage", "get", "list_page", "progress", "stats"]

_ACTIVE = ("running", "compensating")
MAX_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class SagaPage:
    """A page of sagas, newest first; pass ``next_cursor`` to get the next page."""

    items: tuple[SagaRecord, ...]
    next_cursor: str | None

    def __iter__(self) -> Iterator[SagaRecord]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def get(engine: Engine, serializer: Serializer, saga_id: str) -> SagaRecord:
    with translate_errors(engine.url), engine.connect() as conn:
        row = conn.execute(select(sagas).where(sagas.c.id == saga_id)).one_or_none()
        if row is None:
            raise SagaNotFound(f"no saga with id {saga_id!r}")
        attempt_rows = conn.execute(
            select(attempts).where(attempts.c.saga_id == saga_id).order_by(attempts.c.id)
        ).all()
        event_rows = conn.execute(
            select(events).where(events.c.saga_id == saga_id).order_by(events.c.id)
        ).all()
    return SagaRecord.from_row(
        row,
        serializer,
        [AttemptRecord.from_row(r, serializer) for r in attempt_rows],
        [EventRecord.from_row(r) for r in event_rows],
    )


def list_page(
    engine: Engine,
    serializer: Serializer,
    *,
    status: str | Sequence[str] | None = None,
    name: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    parked: bool | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> SagaPage:
    if not is_whole(limit) or not 1 <= limit <= MAX_LIMIT:
        raise SagaDefinitionError(f"limit must be an int from 1 to {MAX_LIMIT}, got {limit!r}")
    for label, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise SagaDefinitionError(
                f"{label} must be timezone-aware (e.g. datetime.now(UTC)), got naive"
            )
    query = select(sagas)
    conditions: list[Any] = []
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        conditions.append(sagas.c.status.in_(statuses))
    if name is not None:
        conditions.append(sagas.c.name == name)
    if since is not None:
        conditions.append(sagas.c.created_at >= since)
    if until is not None:
        conditions.append(sagas.c.created_at < until)
    if parked is not None:
        conditions.append(sagas.c.parked_at.is_not(None) if parked else sagas.c.parked_at.is_(None))
    if cursor is not None:
        at, last_id = _decode_cursor(cursor)
        conditions.append(
            or_(sagas.c.created_at < at, and_(sagas.c.created_at == at, sagas.c.id < last_id))
        )
    query = query.where(*conditions).order_by(sagas.c.created_at.desc(), sagas.c.id.desc())
    with translate_errors(engine.url), engine.connect() as conn:
        rows = conn.execute(query.limit(limit + 1)).all()
    items = tuple(SagaRecord.from_row(r, serializer) for r in rows[:limit])
    more = len(rows) > limit
    return SagaPage(items, _encode_cursor(items[-1]) if more and items else None)


def stats(engine: Engine, serializer: Serializer) -> Stats:
    with translate_errors(engine.url), engine.connect() as conn:
        counts = conn.execute(
            select(sagas.c.name, sagas.c.status, func.count()).group_by(
                sagas.c.name, sagas.c.status
            )
        ).all()
        oldest = conn.execute(
            select(sagas)
            .where(sagas.c.status.in_(_ACTIVE))
            .order_by(sagas.c.created_at, sagas.c.id)
            .limit(1)
        ).one_or_none()
        parked = conn.execute(
            select(sagas.c.id).where(sagas.c.parked_at.is_not(None)).order_by(sagas.c.parked_at)
        ).scalars()
        parked_ids = tuple(parked)
        unresolved = conn.execute(
            select(func.count()).where(sagas.c.status == "failed", sagas.c.resolved_at.is_(None))
        ).scalar_one()
    by_status: dict[str, int] = {}
    by_name: dict[str, dict[str, int]] = {}
    for saga_name, saga_status, count in counts:
        by_status[saga_status] = by_status.get(saga_status, 0) + count
        per = by_name.setdefault(saga_name or "", {})
        per[saga_status] = per.get(saga_status, 0) + count
    return Stats(
        by_status=by_status,
        by_name=by_name,
        oldest_running=None if oldest is None else SagaRecord.from_row(oldest, serializer),
        parked=parked_ids,
        unresolved_failed=int(unresolved),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """How far a saga got, for a listing: ``done`` of ``steps`` actions succeeded."""

    #: steps in the saga's plan (None when the plan cannot be decoded)
    steps: int | None
    done: int
    #: attempts of actions and compensations, interrupted ones included
    attempts: int


def progress(
    engine: Engine, serializer: Serializer, saga_ids: Sequence[str]
) -> dict[str, Progress]:
    """Progress of each saga in ``saga_ids`` (two queries, whatever the number of sagas)."""
    if not saga_ids:
        return {}
    a = attempts.c
    with translate_errors(engine.url), engine.connect() as conn:
        plans = conn.execute(select(sagas.c.id, sagas.c.plan).where(sagas.c.id.in_(saga_ids)))
        plan_rows = plans.all()
        counts = conn.execute(
            select(a.saga_id, a.kind, a.status, func.count(), func.count(distinct(a.step)))
            .where(a.saga_id.in_(saga_ids))
            .group_by(a.saga_id, a.kind, a.status)
        ).all()
    total: dict[str, int] = {}
    done: dict[str, int] = {}
    for saga_id, kind, status, count, steps in counts:
        total[saga_id] = total.get(saga_id, 0) + count
        if kind == "action" and status == "succeeded":
            done[saga_id] = steps
    return {
        row.id: Progress(
            steps=_plan_steps(row.plan, serializer),
            done=done.get(row.id, 0),
            attempts=total.get(row.id, 0),
        )
        for row in plan_rows
    }


def _plan_steps(text: str, serializer: Serializer) -> int | None:
    try:
        return len(serializer.loads(text)["steps"])
    except Exception:  # a plan that cannot be decoded is parked; the listing still shows it
        return None


def _encode_cursor(record: SagaRecord) -> str:
    raw = f"{record.created_at.isoformat()}|{record.id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, _, saga_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(at), saga_id
    except (ValueError, UnicodeDecodeError):
        raise StoreError(f"invalid cursor {cursor!r}: pass a next_cursor from a page") from None

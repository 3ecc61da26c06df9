"""What a person does to a saga by hand: re-drive it, or mark it handled."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update

from micro_saga import clock
from micro_saga.checks import is_text
from micro_saga.errors import SagaDefinitionError

from .db import translate_errors
from .errors import InvalidTransition, SagaNotFound
from .tables import attempts, events, sagas

__all__ = ["prepare_retry", "resolve"]


def prepare_retry(engine: Engine, saga_id: str, worker: str) -> str:
    """Make a failed or parked saga recoverable again; returns what was done.

    A failed saga goes back to compensating, each compensation that gave up gets one more
    attempt (due now), and its lease is released so recovery takes it at once. A parked saga
    is unparked.
    """
    now = clock.utcnow()
    with translate_errors(engine.url), engine.begin() as conn:
        row = _row(conn, saga_id)
        values: dict[str, Any] = {"version": row.version + 1, "updated_at": now}
        if row.status == "failed":
            values.update(
                status="compensating",
                finished_at=None,
                owner=None,
                lease_expires_at=None,
                resolved_at=None,
                resolution_note=None,
            )
            conn.execute(
                update(attempts)
                .where(
                    attempts.c.saga_id == saga_id,
                    attempts.c.kind == "compensation",
                    attempts.c.status == "failed",
                    attempts.c.retry_at.is_(None),
                )
                .values(retry_at=now)
            )
            _redrive_interrupted(conn, saga_id, now)
            detail = "failed compensations re-driven"
        elif row.parked_at is not None:
            values.update(parked_at=None, parked_by=None, parked_error=None)
            detail = f"unparked (was: {row.parked_error})"
        else:
            raise InvalidTransition(
                f"saga {saga_id!r} is {row.status} and not parked: only a failed or parked "
                "saga can be retried"
            )
        _cas(conn, saga_id, row.version, values)
        _note(conn, saga_id, "retried", worker, detail)
    return detail


def resolve(engine: Engine, saga_id: str, note: str, worker: str) -> None:
    """Mark a failed (or parked) saga as handled by a person; the note stays in its history."""
    if not is_text(note):
        raise SagaDefinitionError("a resolution needs a note saying what was done (--note TEXT)")
    now = clock.utcnow()
    with translate_errors(engine.url), engine.begin() as conn:
        row = _row(conn, saga_id)
        if row.status != "failed" and row.parked_at is None:
            raise InvalidTransition(
                f"saga {saga_id!r} is {row.status}: only a failed or parked saga can be "
                "resolved by hand"
            )
        values: dict[str, Any] = {
            "version": row.version + 1,
            "updated_at": now,
            "resolved_at": now,
            "resolution_note": note,
        }
        if row.status != "failed":
            # a parked saga handled by hand must not be picked up again by recovery
            values.update(status="failed", finished_at=now, owner=None, lease_expires_at=None)
        # handled: no longer listed as parked (the 'parked' event keeps what the error was)
        values.update(parked_at=None, parked_by=None)
        _cas(conn, saga_id, row.version, values)
        _note(conn, saga_id, "resolved", worker, note)


def _redrive_interrupted(conn: Connection, saga_id: str, now: datetime) -> None:
    """A compensation that gave up because its process kept dying gets one more attempt too:
    its last interrupted attempt is recorded as a failure due now, which takes it back under
    its interruption budget."""
    last: dict[int, Any] = {}
    for row in conn.execute(
        select(attempts.c.id, attempts.c.step, attempts.c.status)
        .where(attempts.c.saga_id == saga_id, attempts.c.kind == "compensation")
        .order_by(attempts.c.step, attempts.c.attempt)
    ):
        last[row.step] = row
    for row in last.values():
        if row.status == "interrupted":
            conn.execute(
                update(attempts)
                .where(attempts.c.id == row.id)
                .values(
                    status="failed",
                    error_type="StepInterrupted",
                    error_message="interrupted by a crash; re-driven by a person",
                    retry_at=now,
                )
            )


def _row(conn: Connection, saga_id: str) -> Any:
    row = conn.execute(select(sagas).where(sagas.c.id == saga_id)).one_or_none()
    if row is None:
        raise SagaNotFound(f"no saga with id {saga_id!r}")
    return row


def _cas(conn: Connection, saga_id: str, version: int, values: dict[str, Any]) -> None:
    done = conn.execute(
        update(sagas).where(sagas.c.id == saga_id, sagas.c.version == version).values(values)
    )
    if done.rowcount != 1:
        raise InvalidTransition(f"saga {saga_id!r} changed meanwhile; try again")


def _note(conn: Connection, saga_id: str, kind: str, worker: str, detail: str) -> None:
    conn.execute(
        insert(events).values(
            saga_id=saga_id, at=clock.utcnow(), kind=kind, worker=worker, detail=detail
        )
    )

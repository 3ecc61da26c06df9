"""Claiming abandoned sagas for recovery, many in one transaction.

Each saga is claimed by compare-and-set on the version its row had when recovery listed it, so
two workers never both win one, and whatever changed it since (a write, a claim, a release)
makes the claim miss. The rows are locked first, in id order, with ``FOR UPDATE SKIP LOCKED``
where the database has it: workers that start together skip the rows another is claiming at
that moment instead of queuing behind it, and spread out over the backlog. (SQLite needs no row
locks: the store's write transactions take the database's write lock first.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import BindParameter, Dialect, Engine, Select, bindparam, select, update

from micro_saga import clock

from .db import translate_errors
from .tables import attempts, sagas

__all__ = ["Claimed", "claim"]

_IDS: BindParameter[str] = bindparam("b_ids", expanding=True)
_LOCKED = (
    select(
        sagas.c.id,
        sagas.c.version,
        sagas.c.name,
        sagas.c.status,
        sagas.c.created_at,
        sagas.c.finished_at,
    )
    .where(sagas.c.id.in_(_IDS))
    .order_by(sagas.c.id)
)
_LOCK_SKIPPING = _LOCKED.with_for_update(skip_locked=True)
_LOCK_WAITING = _LOCKED.with_for_update()
_CLAIM = (
    update(sagas)
    .where(sagas.c.id.in_(_IDS))
    .values(
        owner=bindparam("owner"),
        lease_expires_at=bindparam("lease_expires_at"),
        updated_at=bindparam("updated_at"),
        version=sagas.c.version + 1,
        parked_at=None,
        parked_by=None,
        parked_error=None,
    )
)
_ATTEMPTS = (
    select(attempts).where(attempts.c.saga_id.in_(_IDS)).order_by(attempts.c.saga_id, attempts.c.id)
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Claimed:
    """A saga this worker now holds: its row (read under lock), lease version and attempts."""

    row: Any
    version: int
    attempts: Sequence[Any]


def claim(
    engine: Engine, listed: Mapping[str, int], *, worker_id: str, lease: timedelta
) -> dict[str, Claimed]:
    """Claim the sagas ``listed`` (id -> version when listed) whose version has not moved.

    One transaction whatever their number; returns those won, by id.
    """
    if not listed:
        return {}
    now = clock.utcnow()
    ids = sorted(listed)
    with translate_errors(engine.url), engine.begin() as conn:
        locked = conn.execute(_lock_statement(conn.dialect), {"b_ids": ids}).all()
        won = [row for row in locked if row.version == listed[row.id]]
        if not won:
            return {}
        won_ids = [row.id for row in won]
        conn.execute(
            _CLAIM,
            {
                "b_ids": won_ids,
                "owner": worker_id,
                "lease_expires_at": now + lease,
                "updated_at": now,
            },
        )
        by_saga: dict[str, list[Any]] = {saga_id: [] for saga_id in won_ids}
        for attempt in conn.execute(_ATTEMPTS, {"b_ids": won_ids}):
            by_saga[attempt.saga_id].append(attempt)
    return {
        row.id: Claimed(row=row, version=row.version + 1, attempts=by_saga[row.id]) for row in won
    }


def _lock_statement(dialect: Dialect) -> Select[Any]:
    return _LOCK_SKIPPING if _skips_locked(dialect) else _LOCK_WAITING


def _skips_locked(dialect: Dialect) -> bool:
    """Whether the server has ``SKIP LOCKED`` (PostgreSQL 9.5, MySQL 8.0.1, MariaDB 10.6)."""
    if dialect.name == "postgresql":
        return True
    if dialect.name in ("mysql", "mariadb"):
        version = dialect.server_version_info or ()
        minimum = (10, 6) if getattr(dialect, "is_mariadb", False) else (8, 0, 1)
        return tuple(version) >= minimum
    return False

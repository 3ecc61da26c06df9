"""The SQL journal: micro_saga's Journal protocol on SQLAlchemy Core, with leases and fencing.

Every write of a running saga is a compare-and-set on ``saga_sagas.version``: the version this
process last wrote. A worker whose saga was claimed by another (its lease expired) finds the
version moved, gets LeaseLostError, and touches that saga no more.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select
from sqlalchemy import exc as sa_exc

from micro_saga import clock
from micro_saga.errors import LeaseLostError, SagaAlreadyRunning, SagaDefinitionError
from micro_saga.plan import SagaPlan
from micro_saga.state import (
    FINAL_STATUSES,
    AttemptFinished,
    AttemptStarted,
    Event,
    SagaFinished,
    SagaStarted,
    SagaState,
    StatusChanged,
)

from . import writes
from .codec import encode_plan
from .db import translate_errors
from .driver import Writer
from .leases import Heartbeat, renewal_due
from .records import decode_state
from .registry import Registry
from .serialize import Serializer
from .tables import attempts, sagas

__all__ = ["SqlJournal"]

log = logging.getLogger("saga_store")

# Built once: SQLAlchemy then reuses their cache keys and compiled forms (the writes are in
# saga_store.writes).
_SELECT_SAGA = select(sagas).where(sagas.c.id == bindparam("b_id"))
_SELECT_ATTEMPTS = (
    select(attempts).where(attempts.c.saga_id == bindparam("b_saga")).order_by(attempts.c.id)
)


@dataclass(slots=True, kw_only=True)
class _Open:
    """A saga this process is executing: what it last wrote and what waits to be written."""

    plan: SagaPlan
    version: int
    #: when the lease this process last wrote runs out (None: not known, renew at once)
    lease_until: datetime | None = None
    new_row: dict[str, Any] | None = None
    inserts: list[dict[str, Any]] = field(default_factory=list)
    finishes: list[dict[str, Any]] = field(default_factory=list)
    saga_changes: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    lost: bool = False
    final: bool = False

    @property
    def dirty(self) -> bool:
        return bool(self.new_row or self.inserts or self.finishes or self.saga_changes)


class SqlJournal:
    """Journals sagas in SQL; one per SagaStore, shared by all its threads."""

    blocks = True

    def __init__(
        self,
        engine: Engine,
        *,
        registry: Registry,
        serializer: Serializer,
        worker_id: str,
        lease_seconds: float,
        heartbeat: bool = True,
        keep_connection: bool = False,
    ) -> None:
        self.engine = engine
        #: the write transactions of running sagas (observe their commits with ``listen``)
        self.writer = Writer(engine, keep_connection=keep_connection)
        self.registry = registry
        self.serializer = serializer
        self.worker_id = worker_id
        self.lease = timedelta(seconds=lease_seconds)
        self._open: dict[str, _Open | None] = {}
        #: sagas recovery claimed for this worker, waiting for their ``open``
        self._adopted: dict[str, tuple[_Open, SagaState]] = {}
        self._lock = threading.Lock()
        self.heartbeat = Heartbeat(self.renew_leases, lease_seconds / 3) if heartbeat else None
        #: commits made by this journal (the write budget is counted in tests and benchmarks)
        self.commits = 0

    # -- the Journal protocol ------------------------------------------------------------

    def open(self, plan: SagaPlan) -> SagaState | None:
        with self._lock:
            adopted = None if plan.saga_id in self._open else self._adopted.pop(plan.saga_id, None)
            if adopted is not None:
                adopted[0].plan = plan
                self._open[plan.saga_id] = adopted[0]
        if adopted is not None:
            if self.heartbeat is not None:
                self.heartbeat.ensure_running()
            return adopted[1]
        text = encode_plan(plan, self.registry, self.serializer)  # refuse before any I/O
        with self._lock:
            if plan.saga_id in self._open:
                raise SagaAlreadyRunning(
                    f"saga {plan.saga_id!r} is already being executed in this process"
                )
            self._open[plan.saga_id] = None
        try:
            entry, state = self._claim(plan, text)
        except BaseException:
            with self._lock:
                self._open.pop(plan.saga_id, None)
            raise
        with self._lock:
            self._open[plan.saga_id] = entry
        if entry is not None and self.heartbeat is not None:
            self.heartbeat.ensure_running()
        return state

    def record(self, events: Sequence[Event], *, durable: bool) -> None:
        saga_id = _saga_id(events[0])
        entry = self._entry(saga_id)
        rows = [self._rows(event) for event in events]  # serialize first: may refuse
        with entry.lock:
            if entry.lost:
                raise _lost(saga_id, self.worker_id)
            for row in rows:
                row(entry)
            if durable:
                self._flush(entry)

    def release(self, saga_id: str) -> None:
        with self._lock:
            entry = self._open.pop(saga_id, None)
        if entry is None:
            return
        with entry.lock:
            if entry.lost or entry.final:
                return
            try:
                if entry.dirty:
                    self._flush(entry)
                # Let recovery take the saga at once instead of waiting for the lease.
                self._fenced_update(entry, renew=False, lease_expires_at=clock.utcnow())
            except (LeaseLostError, SagaAlreadyRunning):
                return
            except Exception:
                log.warning("could not release saga %s; its lease will expire", saga_id)

    # -- sagas claimed by recovery (saga_store.claims) ------------------------------------

    def adopt(self, plan: SagaPlan, version: int, state: SagaState) -> None:
        """Hold a saga claimed for this worker at lease ``version``: the next ``open(plan)``
        takes it over as ``state``, without reading it again.

        Its lease is not renewed until it is opened: if this worker is held up, another may
        claim it once the lease expires, and this worker's first write is then refused (before
        any step runs, since a step's start is committed before the step is called)."""
        with self._lock:
            self._adopted[plan.saga_id] = (_Open(plan=plan, version=version), state)

    def unadopt(self, saga_id: str) -> None:
        """Give back an adopted saga that will not be opened after all (no-op once opened)."""
        with self._lock:
            adopted = self._adopted.pop(saga_id, None)
        if adopted is not None:
            self.give_back(adopted[0].plan, adopted[0].version)

    def give_back(self, plan: SagaPlan, version: int) -> None:
        """End the lease held at ``version`` now, so that any worker may take the saga."""
        entry = _Open(plan=plan, version=version)
        with entry.lock:
            try:
                self._fenced_update(entry, renew=False, lease_expires_at=clock.utcnow())
            except Exception:
                log.warning("could not give back saga %s; its lease will expire", plan.saga_id)

    # -- leases --------------------------------------------------------------------------

    def open_sagas(self) -> list[str]:
        """Sagas this process runs, or holds for recovery to run."""
        with self._lock:
            running = [k for k, v in self._open.items() if v is not None and not v.final]
            return [*running, *self._adopted]

    def renew_leases(self) -> list[str]:
        """Extend the lease of every saga this process runs; returns those found lost."""
        with self._lock:
            entries = [e for e in self._open.values() if e is not None]
        lost: list[str] = []
        for entry in entries:
            if not entry.lock.acquire(blocking=False):
                # A write is under way. If it does not extend the lease (less than a tenth
                # has passed), the next tick does: the lease runs out first only if that one
                # write takes more than about half a lease.
                continue
            try:
                if entry.lost or entry.final or entry.new_row is not None:
                    continue
                # what is pending goes along (it would be dropped otherwise: a renewal clears it)
                self._fenced_update(entry, renew=True, **entry.saga_changes)
            except LeaseLostError:
                lost.append(entry.plan.saga_id)
            except Exception:
                log.warning("lease renewal failed for saga %s", entry.plan.saga_id, exc_info=True)
            finally:
                entry.lock.release()
        return lost

    # -- internals -----------------------------------------------------------------------

    def _claim(self, plan: SagaPlan, text: str) -> tuple[_Open | None, SagaState | None]:
        now = clock.utcnow()
        if plan.fresh:  # a generated id: nothing to look up (its first write inserts the row)
            return self._new(plan, text, now), None
        with translate_errors(self.engine.url), self.engine.connect() as conn:
            row = conn.execute(_SELECT_SAGA, {"b_id": plan.saga_id}).one_or_none()
            if row is None:
                conn.rollback()
                return self._new(plan, text, now), None
            if not _same_calls(row.plan, text, self.serializer, self.registry):
                raise SagaDefinitionError(
                    f"saga id {plan.saga_id!r} already exists with a different plan: "
                    "a saga id names one business operation; pick a new id for a new one"
                )
            state = decode_state(row, _attempt_rows(conn, plan.saga_id), self.serializer)
            if state.is_final:
                return None, state
            expired = row.lease_expires_at is None or row.lease_expires_at <= now
            if row.owner != self.worker_id and not expired:
                raise SagaAlreadyRunning(
                    f"saga {plan.saga_id!r} is being run by worker {row.owner!r} "
                    f"(lease until {row.lease_expires_at.isoformat()})"
                )
            claimed = writes.fenced_update(
                writes.OnConnection(conn),
                plan.saga_id,
                row.version,
                {
                    "owner": self.worker_id,
                    "lease_expires_at": now + self.lease,
                    "version": row.version + 1,
                    "updated_at": now,
                    "parked_at": None,
                    "parked_by": None,
                    "parked_error": None,
                },
            )
            if not claimed:
                raise SagaAlreadyRunning(f"saga {plan.saga_id!r} was claimed by another worker")
            conn.commit()
            self.commits += 1
        return _Open(plan=plan, version=row.version + 1, lease_until=now + self.lease), state

    def _new(self, plan: SagaPlan, text: str, now: datetime) -> _Open:
        return _Open(
            plan=plan,
            version=1,
            new_row={
                "id": plan.saga_id,
                "name": plan.name,
                "mode": plan.mode,
                "status": "running",
                "on_crash": plan.on_crash,
                "plan": text,
                "created_at": now,
                "updated_at": now,
                "owner": self.worker_id,
                "lease_expires_at": now + self.lease,
                "version": 1,
            },
        )

    def _entry(self, saga_id: str) -> _Open:
        with self._lock:
            entry = self._open.get(saga_id)
        if entry is None:
            raise RuntimeError(f"saga {saga_id!r} was not opened by this journal")
        return entry

    def _rows(self, event: Event) -> Any:
        """A function that adds the event's rows to an entry (serialization done here)."""
        dumps = self.serializer.dumps
        if isinstance(event, SagaStarted):
            return lambda entry: None
        if isinstance(event, AttemptStarted):
            values = {
                "saga_id": event.saga_id,
                "step": event.step,
                "kind": event.kind,
                "attempt": event.number,
                "status": "started",
                "worker": self.worker_id,
                "started_at": event.at,
            }

            def started(entry: _Open) -> None:
                values["step_name"] = entry.plan.steps[event.step].name
                entry.inserts.append(values)
                entry.saga_changes["wake_at"] = None

            return started
        if isinstance(event, AttemptFinished):
            error = event.error
            row = {
                "b_saga": event.saga_id,
                "b_kind": event.kind,
                "b_step": event.step,
                "b_attempt": event.number,
                "status": event.status,
                "finished_at": event.at,
                "result": dumps(event.result) if event.status == "succeeded" else None,
                "error_type": error.type if error else None,
                "error_message": error.message if error else None,
                "error_traceback": error.traceback if error else None,
                "retry_at": event.retry_at,
            }

            def finished(entry: _Open) -> None:
                entry.finishes.append(row)
                if event.retry_at is not None:
                    entry.saga_changes["wake_at"] = event.retry_at

            return finished
        if isinstance(event, StatusChanged):
            return lambda entry: entry.saga_changes.update(status=event.status)
        if isinstance(event, SagaFinished):
            changes = {
                "status": event.status,
                "finished_at": event.at,
                "results": None if event.results is None else dumps(event.results),
                "error_type": event.error.type if event.error else None,
                "error_message": event.error.message if event.error else None,
                "owner": None,
                "lease_expires_at": None,
                "wake_at": None,
            }
            return lambda entry: entry.saga_changes.update(changes)
        raise TypeError(f"unknown event {event!r}")

    def _flush(self, entry: _Open) -> None:
        """Commit everything pending for the saga in one fenced transaction."""
        if self._inserts_first(entry):
            return
        final = entry.saga_changes.get("status") in FINAL_STATUSES
        self._fenced_update(entry, renew=False, **entry.saga_changes)
        entry.final = final

    def _inserts_first(self, entry: _Open) -> bool:
        if entry.new_row is None:
            return False
        now = clock.utcnow()
        row = {**entry.new_row, **entry.saga_changes, "updated_at": now}
        single = writes.one_statement(
            self.writer.dialect, entry.finishes, entry.inserts, new_saga=True
        )
        try:
            with translate_errors(self.engine.url), self.writer.transaction(single=single) as conn:
                writes.insert_saga(conn, row, entry.finishes, entry.inserts)
        except Exception as error:
            if isinstance(error.__cause__, sa_exc.IntegrityError):
                raise SagaAlreadyRunning(
                    f"saga {entry.plan.saga_id!r} was started by another process at the same time"
                ) from None
            raise
        self.commits += 1
        entry.final = row["status"] in FINAL_STATUSES
        entry.lease_until = row["lease_expires_at"]
        entry.new_row = None
        entry.saga_changes = {}
        entry.finishes = []
        entry.inserts = []
        return True

    def _fenced_update(self, entry: _Open, *, renew: bool, **changes: Any) -> None:
        """Commit what is pending for the saga, fenced by its version; the lease is extended
        when ``renew`` or when it is due (see ``leases.renewal_due``)."""
        now = clock.utcnow()
        values: dict[str, Any] = {"version": entry.version + 1, "updated_at": now}
        if renew or renewal_due(now, entry.lease_until, self.lease):
            values["lease_expires_at"] = now + self.lease
        values.update(changes)
        saga_id = entry.plan.saga_id
        single = writes.one_statement(self.writer.dialect, entry.finishes, entry.inserts)
        with translate_errors(self.engine.url), self.writer.transaction(single=single) as conn:
            won = writes.fenced_update(
                conn, saga_id, entry.version, values, finishes=entry.finishes, starts=entry.inserts
            )
            if not won:
                entry.lost = True
                raise _lost(saga_id, self.worker_id)
        self.commits += 1
        entry.version += 1
        if "lease_expires_at" in values:
            entry.lease_until = values["lease_expires_at"]
        entry.saga_changes = {}
        entry.finishes = []
        entry.inserts = []


def _saga_id(event: Event) -> str:
    return event.plan.saga_id if isinstance(event, SagaStarted) else event.saga_id


def _lost(saga_id: str, worker_id: str) -> LeaseLostError:
    return LeaseLostError(
        f"worker {worker_id!r} lost its lease on saga {saga_id!r}: another worker recovered "
        "it (this process was paused past the lease); it will not touch that saga again"
    )


def _attempt_rows(conn: Connection, saga_id: str) -> Sequence[Any]:
    return conn.execute(_SELECT_ATTEMPTS, {"b_saga": saga_id}).all()


def _same_calls(stored: str, text: str, serializer: Serializer, registry: Registry) -> bool:
    """Same mode and the same functions with the same arguments (policies may change, and so
    may a function's registered name: an old name kept for a renamed function is the same)."""
    if stored == text:
        return True
    try:
        a, b = serializer.loads(stored), serializer.loads(text)
    except SagaDefinitionError:
        return False

    def same_function(old: str, new: str) -> bool:
        return old == new or (old in registry and registry.resolve(old) is registry.resolve(new))

    def same_call(old: Any, new: Any) -> bool:
        if old is None or new is None:
            return old is new
        return bool(
            same_function(old["fn"], new["fn"])
            and old["args"] == new["args"]
            and old["kwargs"] == new["kwargs"]
        )

    return (
        a["mode"] == b["mode"]
        and len(a["steps"]) == len(b["steps"])
        and all(
            same_call(x["action"], y["action"]) and same_call(x["compensation"], y["compensation"])
            for x, y in zip(a["steps"], b["steps"], strict=True)
        )
    )

"""Recovery: find abandoned sagas, claim them, and finish them with the same engine.

A saga is abandoned when it is running or compensating and its lease expired (or it is this
worker id's own, after a restart). A pass lists them a page at a time and claims them a chunk at
a time, each saga by compare-and-set on its version (``saga_store.claims``: one transaction per
chunk), so two recovery workers never run the same saga; the journal then adopts each claimed
saga and runs it. A saga that cannot be rebuilt is parked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, insert, or_, select, update

from micro_saga import clock
from micro_saga.async_runner import run_async
from micro_saga.checks import loop_running
from micro_saga.core import default_rand
from micro_saga.errors import (
    JournalError,
    LeaseLostError,
    SagaAlreadyRunning,
    SagaDefinitionError,
    SagaException,
)
from micro_saga.plan import SagaPlan
from micro_saga.runner import run
from micro_saga.state import Event, SagaState

from . import claims
from .codec import decode_plan
from .db import translate_errors
from .errors import DatabaseUnavailable
from .journal import SqlJournal
from .records import decode_state
from .tables import events, sagas

__all__ = ["Recoverer", "RecoveryReport"]

log = logging.getLogger("saga_store")

_BATCH = 500
#: most sagas claimed in one transaction. A pass claims 1, then 2, 4, ... up to this: one saga
#: that blocks early holds back few others, and those only until their leases expire (held,
#: not yet opened, sagas are not renewed: another worker may take them, and this one's first
#: write to them is then refused)
_CLAIM = 16


@dataclass(slots=True)
class RecoveryReport:
    """What one recovery pass did, saga ids by outcome."""

    succeeded: list[str] = field(default_factory=list)
    compensated: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    #: saga id -> why it could not be rebuilt
    parked: dict[str, str] = field(default_factory=dict)
    #: under a durable backoff that has not ended yet
    waiting: list[str] = field(default_factory=list)
    #: taken by another worker first
    skipped: list[str] = field(default_factory=list)
    #: saga id -> journal error that stopped it
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> list[str]:
        return [*self.succeeded, *self.compensated, *self.failed]

    def __bool__(self) -> bool:
        return bool(self.finished or self.parked or self.errors)

    def summary(self) -> str:
        parts = [
            f"{len(v)} {k}"
            for k, v in (
                ("succeeded", self.succeeded),
                ("compensated", self.compensated),
                ("failed", self.failed),
                ("parked", self.parked),
                ("waiting", self.waiting),
                ("skipped", self.skipped),
                ("errored", self.errors),
            )
            if v
        ]
        return ", ".join(parts) or "nothing to recover"


@dataclass(frozen=True, slots=True)
class _Candidate:
    id: str
    plan: str
    version: int
    wake_at: datetime | None


class _RecoveryJournal:
    """The store's journal for recovery: a saga that another worker finished since this pass
    listed it is that worker's outcome, not ours (it is reported as skipped, never twice)."""

    blocks = True

    def __init__(self, journal: SqlJournal) -> None:
        self.journal = journal

    def open(self, plan: SagaPlan) -> SagaState | None:
        state = self.journal.open(plan)
        if state is not None and state.is_final:
            self.journal.release(plan.saga_id)
            raise SagaAlreadyRunning(f"saga {plan.saga_id!r} was finished by another worker")
        return state

    def record(self, events: Sequence[Event], *, durable: bool) -> None:
        self.journal.record(events, durable=durable)

    def release(self, saga_id: str) -> None:
        self.journal.release(saga_id)


class _Deferred(BaseException):
    """A recovered saga reached a retry delay: its end is journaled (wake_at), so the pass
    moves on and a later pass runs it, instead of sleeping through it."""


class _InsideLoop(SagaDefinitionError):
    """recover() met an async saga while an event loop runs in this thread."""


def _defer(seconds: float) -> None:
    if seconds > 0:
        raise _Deferred


async def _defer_async(seconds: float) -> None:
    _defer(seconds)


class Recoverer:
    """Runs recovery passes for one store (one process incarnation)."""

    def __init__(self, journal: SqlJournal, instance_id: str) -> None:
        self.journal = journal
        self._recovery_journal = _RecoveryJournal(journal)
        self.engine: Engine = journal.engine
        self.instance_id = instance_id
        self._first_pass = True

    def recover(self, *, limit: int | None = None) -> RecoveryReport:
        """One pass over abandoned sagas (parked ones too on this process's first pass)."""
        report = RecoveryReport()
        with closing(self._candidates(report, limit)) as candidates:
            for candidate, plan in candidates:
                self._recover_one(candidate, plan, report, self._run)
        return report

    async def recover_async(self, *, limit: int | None = None) -> RecoveryReport:
        """The async twin: async sagas run on the current loop, the rest in worker threads."""
        report = RecoveryReport()
        # Claimed a chunk at a time as the pass goes, like the sync pass (not all up front).
        candidates = self._candidates(report, limit)
        fetching: asyncio.Future[tuple[_Candidate, SagaPlan] | None] | None = None
        try:
            while True:
                fetching = asyncio.ensure_future(asyncio.to_thread(next, candidates, None))
                item = await asyncio.shield(fetching)
                if item is None:
                    break
                await self._recover_one_async(*item, report)
        finally:
            # Cancelled while a worker thread claims? The generator must stop before it is
            # closed (which gives back what was claimed but not run).
            if fetching is not None and not fetching.done():
                await asyncio.wait([fetching])
            await asyncio.to_thread(candidates.close)
        return report

    async def _recover_one_async(
        self, candidate: _Candidate, plan: SagaPlan, report: RecoveryReport
    ) -> None:
        try:
            if plan.is_async:
                await run_async(plan, self._recovery_journal, sleep=_defer_async, rand=default_rand)
            else:
                await asyncio.to_thread(
                    run, plan, self._recovery_journal, sleep=_defer, rand=default_rand
                )
        except BaseException as exc:
            if self._outcome(candidate.id, exc, report):
                raise
        else:
            report.succeeded.append(candidate.id)

    def recover_one(self, saga_id: str) -> RecoveryReport:
        """Recover one saga now, if it is abandoned (used after a person re-drives it)."""
        report = RecoveryReport()
        found = self._candidates(report, None, saga_id=saga_id, include_parked=True)
        with closing(found) as candidates:
            for candidate, plan in candidates:
                self._recover_one(candidate, plan, report, self._run)
        return report

    # -- internals -----------------------------------------------------------------------

    def _candidates(
        self,
        report: RecoveryReport,
        limit: int | None,
        *,
        saga_id: str | None = None,
        include_parked: bool | None = None,
    ) -> Generator[tuple[_Candidate, SagaPlan]]:
        """Abandoned sagas, claimed for this worker and adopted by its journal, with plans."""
        parked_too = self._first_pass if include_parked is None else include_parked
        self._first_pass = False
        running_here = set(self.journal.open_sagas())
        seen = 0
        size = 1
        after: tuple[datetime, str] | None = None
        while limit is None or seen < limit:
            batch = self._batch(after, parked_too, saga_id)
            if not batch:
                return
            ready: list[_Candidate] = []
            for row, created_at in batch:
                after = (created_at, row.id)
                if row.id in running_here:
                    continue
                if row.wake_at is not None and row.wake_at > clock.utcnow():
                    report.waiting.append(row.id)
                    continue
                ready.append(row)
            while ready:
                room = size if limit is None else min(size, limit - seen)
                if room <= 0:
                    return
                chunk, ready = ready[:room], ready[room:]
                for claimed in self._claim(chunk, report):
                    seen += 1
                    yield claimed
                size = min(2 * size, _CLAIM)
            if len(batch) < _BATCH:
                return

    def _claim(
        self, chunk: Sequence[_Candidate], report: RecoveryReport
    ) -> Iterator[tuple[_Candidate, SagaPlan]]:
        """Claim a chunk in one transaction; yield what was won, and give back, if the pass
        stops early, what was won but not run."""
        plans: dict[str, tuple[_Candidate, SagaPlan]] = {}
        for candidate in chunk:
            plan = self._plan(candidate, report)  # parks what cannot be rebuilt, unclaimed
            if plan is not None:
                plans[candidate.id] = (candidate, plan)
        won = claims.claim(
            self.engine,
            {saga_id: candidate.version for saga_id, (candidate, _) in plans.items()},
            worker_id=self.journal.worker_id,
            lease=self.journal.lease,
        )
        adopted: list[tuple[_Candidate, SagaPlan]] = []
        for saga_id, (candidate, plan) in plans.items():
            claimed = won.get(saga_id)
            if claimed is None:
                report.skipped.append(saga_id)  # taken (or moved on) since it was listed
                continue
            try:
                state = decode_state(claimed.row, claimed.attempts, self.journal.serializer)
            except SagaDefinitionError as exc:  # a result the serializer cannot read back
                self.journal.give_back(plan, claimed.version)
                self._park_by_id(saga_id, str(exc), report)
                continue
            self.journal.adopt(plan, claimed.version, state)
            adopted.append((candidate, plan))
        try:
            yield from adopted
        finally:
            for candidate, _ in adopted:
                self.journal.unadopt(candidate.id)  # nothing to do for those opened

    def _batch(
        self, after: tuple[datetime, str] | None, parked_too: bool, saga_id: str | None
    ) -> list[tuple[_Candidate, datetime]]:
        now = clock.utcnow()
        c = sagas.c
        conditions: list[Any] = [
            c.status.in_(("running", "compensating")),
            or_(
                c.lease_expires_at.is_(None),
                c.lease_expires_at <= now,
                c.owner == self.journal.worker_id,
            ),
        ]
        if not parked_too:
            conditions.append(c.parked_at.is_(None))
        if saga_id is not None:
            conditions.append(c.id == saga_id)
        if after is not None:
            conditions.append(
                or_(c.created_at > after[0], and_(c.created_at == after[0], c.id > after[1]))
            )
        query = (
            select(c.id, c.plan, c.version, c.wake_at, c.created_at)
            .where(*conditions)
            .order_by(c.created_at, c.id)
            .limit(_BATCH)
        )
        with translate_errors(self.engine.url), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [(_Candidate(r.id, r.plan, r.version, r.wake_at), r.created_at) for r in rows]

    def _run(self, plan: SagaPlan) -> None:
        if plan.is_async:
            if loop_running():
                raise _InsideLoop(
                    f"saga {plan.saga_id!r} has coroutine functions and recover() was called "
                    "inside a running event loop: use `await store.recover_async()` there"
                )
            asyncio.run(
                run_async(plan, self._recovery_journal, sleep=_defer_async, rand=default_rand)
            )
        else:
            run(plan, self._recovery_journal, sleep=_defer, rand=default_rand)

    def _recover_one(
        self,
        candidate: _Candidate,
        plan: SagaPlan,
        report: RecoveryReport,
        runner: Callable[[SagaPlan], None],
    ) -> None:
        try:
            runner(plan)
        except BaseException as exc:
            if self._outcome(candidate.id, exc, report):
                raise
        else:
            report.succeeded.append(candidate.id)

    def _plan(self, candidate: _Candidate, report: RecoveryReport) -> SagaPlan | None:
        try:
            return decode_plan(candidate.plan, self.journal.registry, self.journal.serializer)
        except SagaDefinitionError as exc:
            self._park(candidate, str(exc), report)
            return None

    def _outcome(self, saga_id: str, exc: BaseException, report: RecoveryReport) -> bool:
        """File the saga under its outcome; True when the exception must propagate."""
        if isinstance(exc, _InsideLoop):
            return True
        if isinstance(exc, SagaException):
            (report.failed if exc.status == "failed" else report.compensated).append(saga_id)
        elif isinstance(exc, _Deferred):
            report.waiting.append(saga_id)  # its next attempt is journaled; a later pass runs it
        elif isinstance(exc, SagaAlreadyRunning | LeaseLostError):
            report.skipped.append(saga_id)
        elif isinstance(exc, SagaDefinitionError):
            # the journal could not be decoded (e.g. a result the serializer cannot read)
            self._park_by_id(saga_id, str(exc), report)
        elif isinstance(exc, DatabaseUnavailable):
            report.errors[saga_id] = str(exc)
            return True
        elif isinstance(exc, JournalError):
            report.errors[saga_id] = str(exc)
        elif isinstance(exc, Exception):
            # Not the saga's steps (their errors are journaled), so the engine or a decoder:
            # park it, so neither this pass nor the next ones stall on it.
            log.error("recovering saga %s failed unexpectedly", saga_id, exc_info=exc)
            self._park_by_id(saga_id, f"{type(exc).__name__}: {exc}", report)
        else:
            return True
        log.info("recovered saga %s: %s", saga_id, type(exc).__name__)
        return False

    def _park_by_id(self, saga_id: str, error: str, report: RecoveryReport) -> None:
        with translate_errors(self.engine.url), self.engine.connect() as conn:
            row = conn.execute(
                select(sagas.c.plan, sagas.c.version, sagas.c.wake_at).where(sagas.c.id == saga_id)
            ).one()
        self._park(_Candidate(saga_id, row.plan, row.version, row.wake_at), error, report)

    def _park(self, candidate: _Candidate, error: str, report: RecoveryReport) -> None:
        now = clock.utcnow()
        with translate_errors(self.engine.url), self.engine.begin() as conn:
            parked = conn.execute(
                update(sagas)
                .where(sagas.c.id == candidate.id, sagas.c.version == candidate.version)
                .values(
                    parked_at=now,
                    parked_by=self.instance_id,
                    parked_error=error,
                    version=candidate.version + 1,
                    updated_at=now,
                )
            )
            if parked.rowcount != 1:
                report.skipped.append(candidate.id)
                return
            conn.execute(
                insert(events).values(
                    saga_id=candidate.id,
                    at=now,
                    kind="parked",
                    worker=self.journal.worker_id,
                    detail=error,
                )
            )
        log.error("parked saga %s: %s", candidate.id, error)
        report.parked[candidate.id] = error

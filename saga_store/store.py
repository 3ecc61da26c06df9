"""SagaStore: durable sagas in one object (journal, registry, recovery, history, admin)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar, overload

from sqlalchemy import Engine

from micro_saga import SagaAssembler
from micro_saga.errors import SagaDefinitionError
from micro_saga.plan import CrashPolicy

from . import admin, history
from .db import SqliteSync, make_engine, redact, resolve_url
from .errors import SchemaNotMigrated
from .history import SagaPage
from .journal import SqlJournal
from .loops import AsyncRecoveryLoop, RecoveryLoop
from .records import SagaRecord, Stats
from .recovery import Recoverer, RecoveryReport
from .registry import Registry, default_registry
from .serialize import JsonSerializer, Serializer

__all__ = ["SagaStore"]

F = TypeVar("F", bound=Callable[..., Any])


class SagaStore:
    """Durable sagas on SQLite, PostgreSQL or MySQL/MariaDB.

    ``url`` is an SQLAlchemy URL or Engine; by default ``$SAGA_STORE_URL`` or the embedded
    SQLite file ``sagas.db``. ``worker_id`` names this service instance: give a restarted
    instance the same id and it takes its own sagas back at once, without waiting for their
    leases (default: unique per process). ``lease_seconds`` is how long a silent owner keeps
    a saga before another worker may recover it.
    """

    def __init__(
        self,
        url: str | Engine | None = None,
        *,
        worker_id: str | None = None,
        lease_seconds: float = 30.0,
        registry: Registry | None = None,
        serializer: Serializer | None = None,
        sqlite_synchronous: SqliteSync = "FULL",
        heartbeat: bool = True,
    ) -> None:
        if isinstance(lease_seconds, bool) or not isinstance(lease_seconds, int | float):
            raise SagaDefinitionError(
                f"lease_seconds must be a number of seconds, got {lease_seconds!r}"
            )
        if lease_seconds <= 0:
            raise SagaDefinitionError(f"lease_seconds must be > 0, got {lease_seconds!r}")
        if isinstance(url, Engine):
            self.engine = url
            self._owns_engine = False
        else:
            self.engine = make_engine(resolve_url(url), sqlite_synchronous=sqlite_synchronous)
            self._owns_engine = True
        self.instance_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.worker_id = worker_id or self.instance_id
        self.registry = registry or default_registry
        self.serializer = serializer or JsonSerializer()
        self.journal = SqlJournal(
            self.engine,
            registry=self.registry,
            serializer=self.serializer,
            worker_id=self.worker_id,
            lease_seconds=lease_seconds,
            heartbeat=heartbeat,
            # its own pool has connections to spare; a caller's engine may not
            keep_connection=self._owns_engine,
        )
        self._recoverer = Recoverer(self.journal, self.instance_id)

    def __repr__(self) -> str:
        return f"SagaStore({redact(self.engine.url)!r}, worker_id={self.worker_id!r})"

    # -- schema --------------------------------------------------------------------------

    def upgrade(self, revision: str = "head") -> None:
        """Create or migrate the saga tables (Alembic, with the migrations in the package)."""
        from . import migrate  # noqa: PLC0415  (Alembic loads only for those who migrate)

        migrate.upgrade(self.engine, revision)

    def downgrade(self, revision: str) -> None:
        """Migrate the saga tables down to ``revision`` ("base" drops them)."""
        from . import migrate  # noqa: PLC0415

        migrate.downgrade(self.engine, revision)

    def current_revision(self) -> str | None:
        """The schema's Alembic revision, or None before the first upgrade."""
        from . import migrate  # noqa: PLC0415

        return migrate.current(self.engine)

    def check_schema(self) -> None:
        """Raise SchemaNotMigrated unless the saga tables are at this package's head revision."""
        from . import migrate  # noqa: PLC0415

        current, head = migrate.current(self.engine), migrate.head()
        if current == head:
            return
        where = redact(self.engine.url)
        if current is None:
            raise SchemaNotMigrated(
                f"the saga tables are missing in {where}: run `saga-store upgrade` "
                "(or SagaStore.upgrade()) first"
            )
        raise SchemaNotMigrated(
            f"the saga tables in {where} are at revision {current}, this version needs {head}: "
            "run `saga-store upgrade` (or install a newer micro-saga if the database is newer)"
        )

    # -- functions and sagas -------------------------------------------------------------

    @overload
    def register(self, func: F, /, *, name: str | None = None) -> F: ...

    @overload
    def register(self, func: None = None, /, *, name: str | None = None) -> Callable[[F], F]: ...

    def register(
        self, func: Callable[..., Any] | None = None, /, *, name: str | None = None
    ) -> Any:
        """Decorator: make a function callable by durable sagas (and by recovery).

        The stable name defaults to ``module:qualname``; pass ``name=`` so a rename does not
        strand the sagas that recorded the old name.
        """
        if func is None:
            return self.registry.register(name=name)
        return self.registry.add(func, name)

    def saga(
        self,
        name: str | None = None,
        retry_attempts: int | None = None,
        *,
        saga_id: str | None = None,
        on_crash: CrashPolicy = "resume",
        **options: Any,
    ) -> SagaAssembler:
        """A saga journaled in this store (options as for ``SagaAssembler``)."""
        return SagaAssembler(
            retry_attempts,
            name=name,
            saga_id=saga_id,
            on_crash=on_crash,
            journal=self.journal,
            **options,
        )

    # -- history -------------------------------------------------------------------------

    def get(self, saga_id: str) -> SagaRecord:
        """One saga with every attempt and compensation; raises SagaNotFound."""
        return history.get(self.engine, self.serializer, saga_id)

    def list(
        self,
        *,
        status: str | Sequence[str] | None = None,
        name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        parked: bool | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> SagaPage:
        """Sagas newest first, filtered; ``page.next_cursor`` fetches the next page."""
        return history.list_page(
            self.engine,
            self.serializer,
            status=status,
            name=name,
            since=since,
            until=until,
            parked=parked,
            limit=limit,
            cursor=cursor,
        )

    def stats(self) -> Stats:
        """Counts by status and name, the oldest running saga, parked sagas."""
        return history.stats(self.engine, self.serializer)

    # -- recovery ------------------------------------------------------------------------

    def recover(self, *, limit: int | None = None) -> RecoveryReport:
        """One pass over abandoned sagas: resume or compensate each, park what cannot be
        rebuilt. Safe to run in several processes at once."""
        return self._recoverer.recover(limit=limit)

    async def recover_async(self, *, limit: int | None = None) -> RecoveryReport:
        """``recover`` for async services: async sagas run on the running loop."""
        return await self._recoverer.recover_async(limit=limit)

    def start_recovery(self, interval: float = 5.0) -> RecoveryLoop:
        """Recover now and every ``interval`` seconds on a background thread."""
        return RecoveryLoop(self.recover, interval).start()

    def start_recovery_async(self, interval: float = 5.0) -> AsyncRecoveryLoop:
        """The asyncio twin of ``start_recovery`` (call it inside a running loop)."""
        return AsyncRecoveryLoop(self.recover_async, interval).start()

    # -- a person's hand -----------------------------------------------------------------

    def retry(self, saga_id: str) -> RecoveryReport:
        """Re-drive a failed saga's compensations, or a parked saga, after the cause is fixed."""
        admin.prepare_retry(self.engine, saga_id, self.worker_id)
        return self._recoverer.recover_one(saga_id)

    def resolve(self, saga_id: str, note: str) -> None:
        """Mark a failed or parked saga as handled by hand; the note stays in its history."""
        admin.resolve(self.engine, saga_id, note, self.worker_id)

    # -- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the heartbeat and release the connections (if the store made the engine)."""
        if self.journal.heartbeat is not None:
            self.journal.heartbeat.stop()
        self.journal.writer.close()
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> SagaStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

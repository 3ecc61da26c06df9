"""The schema: one MetaData, the single source of truth that Alembic migrations come from."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["NAME_LENGTH", "UTCDateTime", "attempts", "events", "metadata", "sagas"]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on every dialect.

    PostgreSQL keeps ``timestamptz``; SQLite and MySQL keep naive UTC (MySQL with microseconds).
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware UTC time")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # SQLite keeps text: the very text SQLAlchemy's DATETIME writes, made in one C call
        # instead of its %-formatting of a dict (every journal write binds two or three times).
        def process(value: datetime | None) -> str | None:
            if value is not None and value.tzinfo is UTC:  # the journal's own times: "+00:00"
                # isoformat without timespec= parses no keyword (half the cost), and leaves
                # out a zero fraction
                text = value.isoformat(" ")[:-6]
                return text if value.microsecond else f"{text}.000000"
            naive = self.process_bind_param(value, dialect)
            return None if naive is None else naive.isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: JSON and tracebacks can outgrow MySQL's 64 KiB TEXT
LongText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
#: the longest saga id, saga name, step name or registered function name the tables hold
NAME_LENGTH = 200
Name = String(NAME_LENGTH)
#: ids compare byte for byte on MySQL too (its default collation ignores case and trailing
#: spaces, which would make "Order-42 " the saga "order-42")
SagaId = String(NAME_LENGTH).with_variant(
    mysql.VARCHAR(NAME_LENGTH, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)

sagas = Table(
    "saga_sagas",
    metadata,
    Column("id", SagaId, primary_key=True, comment="the saga id (caller-chosen or generated)"),
    Column("name", Name, nullable=True),
    Column("mode", String(20), nullable=False, comment="orchestrated | choreographed"),
    Column("status", String(20), nullable=False),
    Column("on_crash", String(20), nullable=False, comment="resume | compensate"),
    Column("plan", LongText, nullable=False, comment="JSON: functions, arguments, policies"),
    Column("results", LongText, nullable=True, comment="JSON list, once succeeded"),
    Column("error_type", Name, nullable=True),
    Column("error_message", LongText, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("owner", Name, nullable=True, comment="worker id holding the lease"),
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    Column("version", Integer, nullable=False, comment="bumped by every write: fencing"),
    Column("wake_at", UTCDateTime(), nullable=True, comment="next attempt time during a backoff"),
    Column("parked_at", UTCDateTime(), nullable=True),
    Column("parked_by", Name, nullable=True),
    Column("parked_error", LongText, nullable=True),
    Column("resolved_at", UTCDateTime(), nullable=True),
    Column("resolution_note", LongText, nullable=True),
    Index(None, "status", "lease_expires_at"),
    Index(None, "status", "created_at"),
    Index(None, "name", "status", "created_at"),
    Index(None, "created_at"),
)

attempts = Table(
    "saga_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "saga_id",
        SagaId,
        ForeignKey("saga_sagas.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("step", Integer, nullable=False),
    Column("step_name", Name, nullable=False),
    Column("kind", String(20), nullable=False, comment="action | compensation"),
    Column("attempt", Integer, nullable=False, comment="1-based, per step and kind"),
    Column("status", String(20), nullable=False),
    Column("worker", Name, nullable=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("result", LongText, nullable=True),
    Column("error_type", Name, nullable=True),
    Column("error_message", LongText, nullable=True),
    Column("error_traceback", LongText, nullable=True),
    Column("retry_at", UTCDateTime(), nullable=True),
    UniqueConstraint("saga_id", "kind", "step", "attempt"),
)

events = Table(
    "saga_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "saga_id",
        SagaId,
        ForeignKey("saga_sagas.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("at", UTCDateTime(), nullable=False),
    Column("kind", String(30), nullable=False, comment="parked | retried | resolved | ..."),
    Column("worker", Name, nullable=True),
    Column("detail", LongText, nullable=True),
    Index(None, "saga_id", "at"),
)

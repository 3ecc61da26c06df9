"""initial schema: saga_sagas, saga_attempts, saga_events

Revision ID: 0001
Revises:
Create Date: 2026-11-25 19:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from saga_store.tables import UTCDateTime

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# saga_store.tables.LongText as it was at this revision: JSON and tracebacks can outgrow MySQL's
# 64 KiB TEXT
LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
NAME = sa.String(length=200)
# saga_store.tables.SagaId: ids compare byte for byte on MySQL too ("Order-42" is not "order-42")
SAGA_ID = sa.String(length=200).with_variant(
    mysql.VARCHAR(length=200, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)


def upgrade() -> None:
    """Create the three saga tables with their indexes."""
    op.create_table(
        "saga_sagas",
        sa.Column(
            "id", SAGA_ID, nullable=False, comment="the saga id (caller-chosen or generated)"
        ),
        sa.Column("name", NAME, nullable=True),
        sa.Column(
            "mode", sa.String(length=20), nullable=False, comment="orchestrated | choreographed"
        ),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("on_crash", sa.String(length=20), nullable=False, comment="resume | compensate"),
        sa.Column(
            "plan", LONG_TEXT, nullable=False, comment="JSON: functions, arguments, policies"
        ),
        sa.Column("results", LONG_TEXT, nullable=True, comment="JSON list, once succeeded"),
        sa.Column("error_type", NAME, nullable=True),
        sa.Column("error_message", LONG_TEXT, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("owner", NAME, nullable=True, comment="worker id holding the lease"),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column(
            "version", sa.Integer(), nullable=False, comment="bumped by every write: fencing"
        ),
        sa.Column(
            "wake_at", UTCDateTime(), nullable=True, comment="next attempt time during a backoff"
        ),
        sa.Column("parked_at", UTCDateTime(), nullable=True),
        sa.Column("parked_by", NAME, nullable=True),
        sa.Column("parked_error", LONG_TEXT, nullable=True),
        sa.Column("resolved_at", UTCDateTime(), nullable=True),
        sa.Column("resolution_note", LONG_TEXT, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saga_sagas")),
    )
    # recovery: live sagas whose lease has expired; history: listing by status, name and time
    op.create_index(
        op.f("ix_saga_sagas_status_lease_expires_at"), "saga_sagas", ["status", "lease_expires_at"]
    )
    op.create_index(op.f("ix_saga_sagas_status_created_at"), "saga_sagas", ["status", "created_at"])
    op.create_index(
        op.f("ix_saga_sagas_name_status_created_at"),
        "saga_sagas",
        ["name", "status", "created_at"],
    )
    op.create_index(op.f("ix_saga_sagas_created_at"), "saga_sagas", ["created_at"])

    op.create_table(
        "saga_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("saga_id", SAGA_ID, nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("step_name", NAME, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False, comment="action | compensation"),
        sa.Column("attempt", sa.Integer(), nullable=False, comment="1-based, per step and kind"),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("worker", NAME, nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("result", LONG_TEXT, nullable=True),
        sa.Column("error_type", NAME, nullable=True),
        sa.Column("error_message", LONG_TEXT, nullable=True),
        sa.Column("error_traceback", LONG_TEXT, nullable=True),
        sa.Column("retry_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["saga_id"],
            ["saga_sagas.id"],
            name=op.f("fk_saga_attempts_saga_id_saga_sagas"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saga_attempts")),
        sa.UniqueConstraint(
            "saga_id",
            "kind",
            "step",
            "attempt",
            name=op.f("uq_saga_attempts_saga_id_kind_step_attempt"),
        ),
    )

    op.create_table(
        "saga_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("saga_id", SAGA_ID, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column(
            "kind",
            sa.String(length=30),
            nullable=False,
            comment="parked | retried | resolved | ...",
        ),
        sa.Column("worker", NAME, nullable=True),
        sa.Column("detail", LONG_TEXT, nullable=True),
        sa.ForeignKeyConstraint(
            ["saga_id"],
            ["saga_sagas.id"],
            name=op.f("fk_saga_events_saga_id_saga_sagas"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saga_events")),
    )
    op.create_index(op.f("ix_saga_events_saga_id_at"), "saga_events", ["saga_id", "at"])


def downgrade() -> None:
    """Drop the saga tables, children first; their indexes go with them.

    No drop_index first: MySQL refuses to drop ix_saga_events_saga_id_at while the foreign key
    on saga_id relies on it.
    """
    op.drop_table("saga_events")
    op.drop_table("saga_attempts")
    op.drop_table("saga_sagas")

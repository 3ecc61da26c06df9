"""saga_store: durable sagas for micro_saga, journaled in SQL (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

from .errors import (
    DatabaseUnavailable,
    InvalidTransition,
    SagaNotFound,
    SchemaNotMigrated,
    SerializationError,
    StoreError,
    UnregisteredFunction,
)
from .history import SagaPage
from .loops import AsyncRecoveryLoop, RecoveryLoop
from .records import AttemptRecord, EventRecord, SagaRecord, Stats, Undecodable
from .recovery import RecoveryReport
from .registry import Registry, default_registry
from .serialize import JsonSerializer, Serializer
from .store import SagaStore

__all__ = [
    "AsyncRecoveryLoop",
    "AttemptRecord",
    "DatabaseUnavailable",
    "EventRecord",
    "InvalidTransition",
    "JsonSerializer",
    "RecoveryLoop",
    "RecoveryReport",
    "Registry",
    "SagaNotFound",
    "SagaPage",
    "SagaRecord",
    "SagaStore",
    "SchemaNotMigrated",
    "SerializationError",
    "Serializer",
    "Stats",
    "StoreError",
    "Undecodable",
    "UnregisteredFunction",
    "default_registry",
]

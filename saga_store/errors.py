"""The store's exceptions, under micro_saga's one root.

::

    micro_saga.SagaError
    ├── micro_saga.SagaDefinitionError
    │   ├── UnregisteredFunction     a function the registry does not know (or cannot take)
    │   └── SerializationError       a value the serializer cannot store or read back
    └── micro_saga.JournalError
        └── StoreError               root of the store's runtime errors
            ├── DatabaseUnavailable  cannot reach the database
            ├── SchemaNotMigrated    tables missing or old: run ``saga-store upgrade``
            ├── SagaNotFound         no saga with that id
            └── InvalidTransition    the saga is not in a state that allows the request
"""

from __future__ import annotations

from micro_saga.errors import JournalError, SagaDefinitionError

__all__ = [
    "DatabaseUnavailable",
    "InvalidTransition",
    "SagaNotFound",
    "SchemaNotMigrated",
    "SerializationError",
    "StoreError",
    "UnregisteredFunction",
]


class UnregisteredFunction(SagaDefinitionError):
    """A function that is not (or cannot be) in the registry."""


class SerializationError(SagaDefinitionError):
    """A value the serializer cannot write, or journal text it cannot read."""


class StoreError(JournalError):
    """Root of the store's runtime errors."""


class DatabaseUnavailable(StoreError):
    """The database cannot be reached (down, wrong address, refused credentials)."""


class SchemaNotMigrated(StoreError):
    """The saga tables are missing or out of date."""


class SagaNotFound(StoreError, LookupError):
    """No saga has that id."""


class InvalidTransition(StoreError):
    """The saga's status does not allow what was asked (e.g. retrying a running saga)."""

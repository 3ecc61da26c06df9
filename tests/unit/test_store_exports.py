"""saga_store's public names are exactly the ones we mean to publish."""

from __future__ import annotations

import saga_store

EXPECTED = {
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
}


def test_all_is_exactly_the_public_api() -> None:
    assert set(saga_store.__all__) == EXPECTED
    assert all(hasattr(saga_store, name) for name in saga_store.__all__)


def test_store_errors_share_the_engines_root() -> None:
    from micro_saga import SagaError  # noqa: PLC0415  (the point: one root across packages)

    errors = [
        getattr(saga_store, name)
        for name in saga_store.__all__
        if isinstance(getattr(saga_store, name), type)
        and issubclass(getattr(saga_store, name), BaseException)
    ]
    assert len(errors) == 7
    assert all(issubclass(error, SagaError) for error in errors)

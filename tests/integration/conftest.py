"""Stores on a fresh database of each backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from saga_store import SagaStore
from tests.integration.recovery_support import Script, scripted


@pytest.fixture
def script() -> Iterator[Script]:
    """The recovery tests' scripted steps, reset for each test."""
    with scripted() as fresh:
        yield fresh


@pytest.fixture
def store(db_url: str) -> Iterator[SagaStore]:
    """A migrated store on a fresh database; no heartbeat thread (tests drive leases)."""
    with SagaStore(db_url, worker_id="test-worker", heartbeat=False) as saga_store:
        saga_store.upgrade()
        yield saga_store

"""Fixtures of the crash tests: fork-server lanes for the child processes, migrated databases."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from saga_store import SagaStore
from tests.crash.harness import Lanes


@pytest.fixture(scope="session")
def lanes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lanes]:
    """Launchers for child processes; at least three, so three recovery workers can race."""
    count = max(3, min(4, os.cpu_count() or 1))
    launchers = Lanes(tmp_path_factory.mktemp("children"), count)
    yield launchers
    launchers.close()


@pytest.fixture
def url(db_url: str) -> str:
    """A fresh database of the backend under test with the saga tables in it."""
    with SagaStore(db_url, heartbeat=False) as store:
        store.upgrade()
    return db_url

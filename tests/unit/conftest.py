"""Fixtures of the engine's unit tests: a frozen clock, a sleep that moves it, run flavours."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory

from tests.unit.helpers import FLAVOURS, START, FakeSleep, Flavour, Log


@pytest.fixture
def frozen() -> Iterator[FrozenDateTimeFactory]:
    """``micro_saga.clock.utcnow`` frozen at ``START``; asyncio and pytest's own timing keep
    the real clocks."""
    with freeze_time(START, real_asyncio=True, ignore=["_pytest"]) as factory:
        assert isinstance(factory, FrozenDateTimeFactory)
        yield factory


@pytest.fixture
def fake_sleep(frozen: FrozenDateTimeFactory) -> FakeSleep:
    return FakeSleep(frozen)


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture(params=FLAVOURS, ids=[f.id for f in FLAVOURS])
def flavour(request: pytest.FixtureRequest) -> Flavour:
    """Each behaviour test runs with plain and coroutine steps, through both runners."""
    result: Flavour = request.param
    return result

"""The recovery loops: a background thread (``start_recovery``) and its asyncio twin.

Real time here (the loops tick on it); every wait polls the database with a deadline.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from saga_store import (
    AsyncRecoveryLoop,
    DatabaseUnavailable,
    RecoveryLoop,
    RecoveryReport,
    SagaStore,
)
from tests.integration.recovery_support import (
    Script,
    crash,
    saga_of,
    wait_for,
    wait_for_async,
)

INTERVAL = 0.05


def _abandon(db_url: str, saga_id: str) -> None:
    """Leave a saga behind in another worker's name; it released the saga as it went down,
    so its lease is already over."""
    with SagaStore(db_url, worker_id="crashed-worker", heartbeat=False) as crashed:
        crash(saga_of(crashed, ["a", "b"], saga_id=saga_id))


def _alive(loop: RecoveryLoop | AsyncRecoveryLoop) -> bool:
    return loop.running


def _status_is(store: SagaStore, saga_id: str, status: str) -> bool:
    return store.get(saga_id).status == status


class _FailsOnce:
    """Stands in for a recovery pass that finds the database down the first time."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.calls = 0

    def fail_first(self) -> None:
        self.calls += 1
        if self.calls == 1:
            raise DatabaseUnavailable(self.message)


def test_the_recovery_thread_recovers_in_the_background_until_stopped(
    db_url: str, store: SagaStore, script: Script
) -> None:
    script.on("act", "a", "crash")
    _abandon(db_url, "orphan")
    loop = store.start_recovery(interval=INTERVAL)
    try:
        assert _alive(loop)
        assert wait_for(lambda: _status_is(store, "orphan", "succeeded"))
    finally:
        loop.stop()
    assert not _alive(loop)
    assert loop.passes >= 1
    assert script.count("act", "a") == 2
    assert script.count("act", "b") == 1
    with pytest.raises(ValueError, match="interval"):
        store.start_recovery(interval=0)


def test_the_recovery_thread_survives_a_failing_pass(
    db_url: str, store: SagaStore, script: Script, caplog: pytest.LogCaptureFixture
) -> None:
    script.on("act", "a", "crash")
    _abandon(db_url, "orphan")
    outage = _FailsOnce("cannot reach the database at test://: connection refused")
    recover = store.recover

    def flaky_recover(*, limit: int | None = None) -> RecoveryReport:
        outage.fail_first()
        return recover(limit=limit)

    caplog.set_level(logging.ERROR, logger="saga_store")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "recover", flaky_recover)
        loop = store.start_recovery(interval=INTERVAL)
        try:
            assert wait_for(lambda: _status_is(store, "orphan", "succeeded"))
        finally:
            loop.stop()
    assert outage.calls >= 2
    assert loop.passes >= 2
    assert not _alive(loop)
    failures = [r for r in caplog.records if "recovery pass failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], DatabaseUnavailable)


def test_the_async_recovery_loop_recovers_and_survives_a_failing_pass(
    db_url: str, store: SagaStore, script: Script, caplog: pytest.LogCaptureFixture
) -> None:
    script.on("act", "a", "crash")
    _abandon(db_url, "orphan")
    outage = _FailsOnce("cannot reach the database at test://: connection refused")
    recover_async = store.recover_async

    async def flaky_recover_async(*, limit: int | None = None) -> RecoveryReport:
        outage.fail_first()
        return await recover_async(limit=limit)

    async def service() -> None:
        loop = store.start_recovery_async(interval=INTERVAL)
        try:
            assert _alive(loop)
            # stop() cancels a pass under way: wait for the recovering pass to have ended
            assert await wait_for_async(
                lambda: loop.passes >= 2 and _status_is(store, "orphan", "succeeded")
            )
        finally:
            await loop.stop()
        assert not _alive(loop)

    with pytest.raises(RuntimeError):
        store.start_recovery_async(interval=INTERVAL)  # it needs a running event loop
    caplog.set_level(logging.ERROR, logger="saga_store")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "recover_async", flaky_recover_async)
        asyncio.run(service())
    assert outage.calls >= 2
    assert script.count("act", "a") == 2
    assert script.count("act", "b") == 1
    assert len([r for r in caplog.records if "recovery pass failed" in r.getMessage()]) == 1

"""Durable backoff (DESIGN 6.5): a retry delay under way when the process died is honoured.

Step b fails and its retry is due 60 s later; the process dies during the wait (the sleep seam
raises Crash). Recovery before the due time leaves the saga waiting; after it, b runs again.
"""

from __future__ import annotations

import pytest

from micro_saga import RetryPolicy
from saga_store import SagaStore
from tests.integration.recovery_support import (
    LEASE,
    VARIANTS,
    Crash,
    Script,
    at,
    crash,
    dying_process,
    frozen_at_start,
    saga_of,
    saga_row,
    statuses,
)

DELAY = 60.0

# Recovery that ignored a backoff would really sleep (and, the clock being frozen, for ever):
# fail fast instead.
pytestmark = pytest.mark.timeout(30)


def _die_in_backoff(seconds: float) -> None:
    raise Crash(f"the process died {seconds} s before its retry")


async def _die_in_backoff_async(seconds: float) -> None:
    _die_in_backoff(seconds)


def test_a_backoff_under_way_at_the_crash_is_honoured_by_recovery(
    db_url: str, store: SagaStore, script: Script
) -> None:
    names = sorted(name for name, _, _ in VARIANTS)
    with frozen_at_start() as frozen:
        with dying_process(db_url) as dead:
            for name, mode, flavour in VARIANTS:
                b = f"{name}.b"
                script.on("act", b, "fail")
                saga = saga_of(
                    dead,
                    [f"{name}.a", b],
                    saga_id=name,
                    flavour=flavour,
                    retry={b: RetryPolicy(attempts=2, delay=DELAY)},
                    sleep=_die_in_backoff,
                    async_sleep=_die_in_backoff_async,
                )
                crash(saga, mode, flavour)
        for name in names:
            # the due time was committed before the wait began
            record = store.get(name)
            assert record.status == "running", name
            assert record.wake_at == at(DELAY), name
            failed = [a for a in record.attempts if a.step == 1]
            assert [(a.status, a.retry_at) for a in failed] == [("failed", at(DELAY))], name
            assert saga_row(store.engine, name).wake_at == at(DELAY), name

        frozen.tick(LEASE + 1)  # the lease is gone, the backoff is not
        early = store.recover()
        assert sorted(early.waiting) == names
        assert early.finished == []
        assert early.skipped == []
        for name in names:
            assert script.count("act", f"{name}.b") == 1, name
            waiting = saga_row(store.engine, name)
            assert (waiting.status, waiting.owner) == ("running", "dead-worker"), name

        frozen.tick(DELAY - LEASE)  # now past the due time
        late = store.recover()
    assert sorted(late.succeeded) == names
    assert late.waiting == []
    for name in names:
        assert script.count("act", f"{name}.a") == 1, name
        assert script.count("act", f"{name}.b") == 2, name
        record = store.get(name)
        assert record.status == "succeeded", name
        assert record.wake_at is None, name
        assert statuses(record, "action", 1) == ["failed", "succeeded"], name
        retried = [a for a in record.attempts if a.step == 1 and a.attempt == 2]
        assert retried[0].started_at == at(DELAY + 1), name


def test_a_backoff_still_running_is_left_alone_by_the_owner_restarting(
    db_url: str, store: SagaStore, script: Script
) -> None:
    # Same worker id (a restart reclaims at once), but the retry is not due: it waits too.
    script.on("act", "b", "fail")
    with frozen_at_start() as frozen:
        with dying_process(db_url, worker_id="test-worker") as before_restart:
            saga = saga_of(
                before_restart,
                ["b"],
                saga_id="restart-waits",
                retry={"b": RetryPolicy(attempts=3, delay=DELAY)},
                sleep=_die_in_backoff,
            )
            crash(saga)
        frozen.tick(DELAY - 1)
        assert store.recover().waiting == ["restart-waits"]
        assert script.count("act", "b") == 1
        frozen.tick(1)
        assert store.recover().succeeded == ["restart-waits"]
    assert script.count("act", "b") == 2

"""Fencing (DESIGN 6.4): a worker paused past its lease loses the saga and touches it no more.

Worker A runs a saga whose first step blocks; the frozen clock moves past A's lease and worker
B recovers the saga (its claim bumps the version); then A's step returns. A's next journal
write is refused with LeaseLostError, A runs nothing more of that saga, and B's outcome stands.
"""

from __future__ import annotations

from typing import Literal

import pytest

from micro_saga import JournalError, LeaseLostError
from saga_store import SagaStore
from tests.integration.recovery_support import (
    LEASE,
    Background,
    Script,
    at,
    frozen_at_start,
    saga_of,
    saga_row,
    statuses,
)


@pytest.mark.parametrize("noticed_by", ["write", "renewal"])
def test_a_worker_whose_lease_was_taken_is_fenced_off(
    db_url: str, store: SagaStore, script: Script, noticed_by: Literal["write", "renewal"]
) -> None:
    # `store` is worker A ("test-worker", no heartbeat: a paused process renews nothing).
    script.on("act", "a", "block")
    with frozen_at_start() as frozen:
        saga = saga_of(store, ["a", "b"], saga_id="fenced")
        worker_a = Background(saga.orchestrator_execute, "worker-a")
        try:
            assert script.entered.wait(10)
            held = saga_row(store.engine, "fenced")
            assert (held.owner, held.lease_expires_at) == ("test-worker", at(LEASE))

            frozen.tick(LEASE + 1)
            with SagaStore(db_url, worker_id="worker-b", heartbeat=False) as b:
                report = b.recover()
            assert report.succeeded == ["fenced"]
            taken = saga_row(store.engine, "fenced")
            assert taken.version > held.version
            if noticed_by == "renewal":
                # the heartbeat's renewal is the first to notice, while the step still runs
                assert store.journal.renew_leases() == ["fenced"]
        finally:
            script.gate.set()  # A's step returns now
        worker_a.join()

    error = worker_a.error
    assert isinstance(error, LeaseLostError)
    assert isinstance(error, JournalError)
    assert "fenced" in str(error)
    assert worker_a.result is None
    # A ran nothing more: its next step's side effect never happened in A's thread
    assert script.count("act", "b", thread="worker-a") == 0
    assert script.count("act", "b") == 1  # B's run
    assert script.count("undo", "a") == script.count("undo", "b") == 0

    # B's outcome stands, untouched by A's late write
    after = saga_row(store.engine, "fenced")
    assert after.version == taken.version
    record = store.get("fenced")
    assert record.status == "succeeded"
    assert record.results == ["act a", "act b"]
    assert statuses(record, "action", 0) == ["interrupted", "succeeded"]
    assert statuses(record, "action", 1) == ["succeeded"]
    assert [(a.step, a.attempt, a.worker) for a in record.attempts] == [
        (0, 1, "test-worker"),
        (0, 2, "worker-b"),
        (1, 1, "worker-b"),
    ]
    # and A holds nothing of it any more
    assert store.journal.open_sagas() == []
    assert store.journal.renew_leases() == []

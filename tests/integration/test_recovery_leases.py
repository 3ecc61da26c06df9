"""Leases (DESIGN 6.4, 6.6): who may run a saga, for how long, and who recovery may take over.

Abandoned sagas are made in-process (see recovery_support); the SIGKILL proofs are in
tests/crash.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from micro_saga import clock
from saga_store import RecoveryReport, SagaStore
from tests.integration.recovery_support import (
    LEASE,
    Background,
    Script,
    at,
    crash,
    dying_process,
    frozen_at_start,
    saga_of,
    saga_row,
    statuses,
    wait_for,
)


def test_a_running_saga_holds_a_lease_that_renewal_moves_with_time(
    store: SagaStore, script: Script
) -> None:
    script.on("act", "slow", "block")
    with frozen_at_start() as frozen:
        saga = saga_of(store, ["slow"], saga_id="leased")
        run = Background(saga.orchestrator_execute, "saga")
        try:
            assert script.entered.wait(10)
            row = saga_row(store.engine, "leased")
            assert (row.status, row.owner, row.lease_expires_at) == (
                "running",
                "test-worker",
                at(LEASE),
            )
            first_version = row.version

            frozen.tick(10)
            assert store.journal.renew_leases() == []
            row = saga_row(store.engine, "leased")
            assert row.lease_expires_at == at(10 + LEASE)
            assert row.version == first_version + 1
            assert row.owner == "test-worker"

            frozen.tick(5)
            assert store.journal.renew_leases() == []
            assert saga_row(store.engine, "leased").lease_expires_at == at(15 + LEASE)

            # its own worker id would let recovery reclaim it, but it runs right here
            assert store.recover().summary() == "nothing to recover"
            assert saga_row(store.engine, "leased").version == first_version + 2
        finally:
            script.gate.set()
        run.join()
    assert run.error is None
    assert run.result == ["act slow"]
    row = saga_row(store.engine, "leased")
    assert (row.status, row.owner, row.lease_expires_at) == ("succeeded", None, None)
    assert store.journal.renew_leases() == []  # nothing left to renew


def test_the_heartbeat_keeps_a_long_step_from_being_recovered(
    db_url: str, store: SagaStore, script: Script
) -> None:
    # Real time here: the heartbeat thread must renew a 0.5 s lease while the step blocks.
    script.on("act", "slow", "block")
    with SagaStore(db_url, worker_id="worker-a", lease_seconds=0.5, heartbeat=True) as owner:
        run = Background(
            saga_of(owner, ["slow", "after"], saga_id="long").orchestrator_execute, "a"
        )
        try:
            assert script.entered.wait(10)
            first = saga_row(store.engine, "long")
            assert first.owner == "worker-a"

            def renewed_past_first_lease() -> bool:
                row = saga_row(store.engine, "long")
                return bool(
                    clock.utcnow() > first.lease_expires_at + timedelta(seconds=0.1)
                    and row.version >= first.version + 2
                )

            assert wait_for(renewed_past_first_lease)
            report = store.recover()
            assert report.finished == []
            assert report.skipped == []
            row = saga_row(store.engine, "long")
            assert (row.status, row.owner) == ("running", "worker-a")
            assert row.lease_expires_at > clock.utcnow()
        finally:
            script.gate.set()
        run.join()
    assert run.error is None
    assert run.result == ["act slow", "act after"]
    assert script.count("act", "slow") == 1
    assert script.count("act", "after") == 1
    assert saga_row(store.engine, "long").status == "succeeded"


def test_recover_claims_a_saga_only_once_its_lease_expired(
    db_url: str, store: SagaStore, script: Script
) -> None:
    script.on("act", "a", "crash")
    with frozen_at_start() as frozen:
        with dying_process(db_url) as dead:
            crash(saga_of(dead, ["a", "b"], saga_id="abandoned"))
        row = saga_row(store.engine, "abandoned")
        assert (row.status, row.owner, row.lease_expires_at) == (
            "running",
            "dead-worker",
            at(LEASE),
        )

        frozen.tick(LEASE - 1)
        early = store.recover()
        assert early.summary() == "nothing to recover"
        assert saga_row(store.engine, "abandoned").version == row.version
        assert script.count("act", "b") == 0

        frozen.tick(2)
        late = store.recover()
    assert late.succeeded == ["abandoned"]
    record = store.get("abandoned")
    assert record.status == "succeeded"
    assert record.results == ["act a", "act b"]
    assert statuses(record, "action", 0) == ["interrupted", "succeeded"]
    assert [a.worker for a in record.attempts if a.step == 0] == ["dead-worker", "test-worker"]
    assert script.count("act", "a") == 2  # at least once: the interrupted attempt ran again
    assert script.count("act", "b") == 1


def test_a_restart_with_the_same_worker_id_reclaims_at_once(
    db_url: str, store: SagaStore, script: Script
) -> None:
    # DESIGN 6.6: the `store` fixture is the restarted process of worker "test-worker".
    script.on("act", "a", "crash")
    with frozen_at_start():
        with dying_process(db_url, worker_id="test-worker") as before_restart:
            crash(saga_of(before_restart, ["a", "b"], saga_id="mine"))
        assert saga_row(store.engine, "mine").lease_expires_at == at(LEASE)
        report = store.recover()  # the lease runs another 30 s: no waiting for it
        with SagaStore(db_url, worker_id="someone-else", heartbeat=False) as other:
            script.on("act", "x", "crash")
            with dying_process(db_url, worker_id="test-worker") as before_restart:
                crash(saga_of(before_restart, ["x"], saga_id="not-theirs"))
            assert other.recover().summary() == "nothing to recover"
    assert report.succeeded == ["mine"]
    assert store.get("mine").status == "succeeded"
    assert saga_row(store.engine, "not-theirs").owner == "test-worker"


def test_a_released_saga_can_be_recovered_by_anyone_at_once(
    db_url: str, store: SagaStore, script: Script
) -> None:
    # An engine that exits with an exception releases its saga, which expires the lease now:
    # the in-process crash leaves nothing for another worker to wait for.
    script.on("act", "a", "crash")
    with frozen_at_start():
        with SagaStore(db_url, worker_id="crashed-worker", heartbeat=False) as crashed:
            crash(saga_of(crashed, ["a", "b"], saga_id="released"))
        row = saga_row(store.engine, "released")
        assert (row.status, row.owner, row.lease_expires_at) == (
            "running",
            "crashed-worker",
            at(0),
        )
        report = store.recover()
    assert report.succeeded == ["released"]
    assert script.count("act", "a") == 2


def test_two_recovery_workers_finish_each_saga_exactly_once(
    db_url: str, store: SagaStore, script: Script
) -> None:
    ids = [f"s{i:02}" for i in range(20)]
    for saga_id in ids:
        script.on("act", f"{saga_id}.a", "crash")
    with frozen_at_start() as frozen:
        with dying_process(db_url) as dead:
            for saga_id in ids:
                crash(saga_of(dead, [f"{saga_id}.a", f"{saga_id}.b"], saga_id=saga_id))
        frozen.tick(LEASE + 1)

        start = threading.Barrier(2)
        reports: dict[str, RecoveryReport] = {}
        errors: list[BaseException] = []

        def recover(worker: str) -> None:
            try:
                with SagaStore(db_url, worker_id=worker, heartbeat=False) as recoverer:
                    start.wait(10)
                    reports[worker] = recoverer.recover()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=recover, args=(w,), name=w) for w in ("w1", "w2")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert errors == []
    one, two = reports["w1"], reports["w2"]
    assert set(one.finished).isdisjoint(two.finished)
    assert sorted(one.finished + two.finished) == ids
    assert one.succeeded + two.succeeded == one.finished + two.finished
    assert one.errors == two.errors == {}
    for saga_id in ids:
        record = store.get(saga_id)
        assert record.status == "succeeded"
        assert statuses(record, "action", 0) == ["interrupted", "succeeded"]
        assert statuses(record, "action", 1) == ["succeeded"]
        # each step ran once in recovery, by the worker that reported the saga
        winner = "w1" if saga_id in one.finished else "w2"
        loser = "w2" if winner == "w1" else "w1"
        for label in (f"{saga_id}.a", f"{saga_id}.b"):
            assert script.count("act", label, thread=winner) == 1
            assert script.count("act", label, thread=loser) == 0


def test_a_saga_finished_by_another_worker_during_a_pass_is_skipped_not_reported(
    db_url: str, store: SagaStore, script: Script
) -> None:
    # w1's pass lists both sagas, then blocks inside the first; w2 finishes the second;
    # when w1 reaches it, it must not claim (nor report) another worker's outcome.
    script.on("act", "first", "crash", "block")
    script.on("act", "second", "crash")
    with frozen_at_start() as frozen:
        with dying_process(db_url) as dead:
            crash(saga_of(dead, ["first"], saga_id="s1"))
            frozen.tick(1)
            crash(saga_of(dead, ["second"], saga_id="s2"))
        frozen.tick(LEASE + 1)
        with (
            SagaStore(db_url, worker_id="w1", heartbeat=False) as w1,
            SagaStore(db_url, worker_id="w2", heartbeat=False) as w2,
        ):
            pass_one = Background(w1.recover, "w1")
            try:
                assert script.entered.wait(10)
                pass_two = w2.recover()
            finally:
                script.gate.set()
            pass_one.join()
    assert pass_one.error is None
    assert pass_two.succeeded == ["s2"]
    assert pass_one.result.succeeded == ["s1"]
    assert pass_one.result.skipped == ["s2"]
    assert script.count("act", "second") == 2  # the crash, then w2 only
    assert script.count("act", "second", thread="w1") == 0
    assert store.get("s2").status == "succeeded"

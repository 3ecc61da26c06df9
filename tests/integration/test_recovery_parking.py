"""Parking, re-driving and resolving (DESIGN 5): a saga that cannot be rebuilt is never deleted
nor retried in a hot loop; a new process tries it again, and a person can re-drive or close it.
"""

from __future__ import annotations

import pytest
from sqlalchemy import update

from micro_saga import RetryPolicy, SagaException
from saga_store import InvalidTransition, Registry, SagaNotFound, SagaStore
from saga_store.tables import attempts, sagas
from tests.integration.recovery_support import (
    LEASE,
    Script,
    at,
    crash,
    dying_process,
    execute,
    frozen_at_start,
    legacy,
    registry_without_legacy,
    saga_of,
    saga_row,
    statuses,
)

LEGACY = "recovery-tests:legacy"


def _set(store: SagaStore, saga_id: str, **values: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(sagas).where(sagas.c.id == saga_id).values(**values))


def _kinds(store: SagaStore, saga_id: str) -> list[str]:
    return [e.kind for e in store.get(saga_id).events]


def test_an_unregistered_function_parks_its_saga_until_a_new_process_can_run_it(
    db_url: str, store: SagaStore, script: Script
) -> None:
    script.on("act", "old", "crash")
    script.on("act", "new", "crash")
    with frozen_at_start() as frozen:
        with dying_process(db_url) as dead:
            crash(saga_of(dead, ["old", "x"], saga_id="stranded", first=legacy))
            crash(saga_of(dead, ["new"], saga_id="fine"))
        frozen.tick(LEASE + 1)

        # A deployment that no longer registers `legacy`: the other saga still recovers.
        with SagaStore(db_url, registry=registry_without_legacy(), heartbeat=False) as deployed:
            first = deployed.recover()
            assert first.succeeded == ["fine"]
            assert list(first.parked) == ["stranded"]
            assert LEGACY in first.parked["stranded"]
            parked = store.get("stranded")
            assert parked.status == "running"  # kept as it was: never deleted
            assert parked.parked_at == at(LEASE + 1)
            assert parked.parked_error == first.parked["stranded"]
            assert [(e.kind, e.detail) for e in parked.events] == [
                ("parked", first.parked["stranded"])
            ]
            assert store.stats().parked == ("stranded",)
            assert [r.id for r in store.list(parked=True)] == ["stranded"]
            assert [r.id for r in store.list(parked=False)] == ["fine"]
            version = saga_row(store.engine, "stranded").version

            # No hot loop: the same process leaves it alone on every later pass.
            frozen.tick(5)
            second = deployed.recover()
            assert second.summary() == "nothing to recover"
            row = saga_row(store.engine, "stranded")
            assert (row.version, row.parked_at) == (version, at(LEASE + 1))
            assert _kinds(store, "stranded") == ["parked"]

        # A new process of the same deployment tries once more on its first pass...
        frozen.tick(5)
        with SagaStore(db_url, registry=registry_without_legacy(), heartbeat=False) as restarted:
            again = restarted.recover()
            assert list(again.parked) == ["stranded"]
            assert restarted.recover().summary() == "nothing to recover"
        assert store.get("stranded").parked_at == at(LEASE + 11)
        assert _kinds(store, "stranded") == ["parked", "parked"]

        # ...and the one that registers `legacy` again finishes it on its first pass.
        frozen.tick(5)
        fixed = store.recover()
    assert fixed.succeeded == ["stranded"]
    record = store.get("stranded")
    assert record.status == "succeeded"
    assert record.results == ["act old", "act x"]
    assert (record.parked_at, record.parked_error) == (None, None)
    assert store.stats().parked == ()
    assert script.count("act", "old") == 2
    assert script.count("act", "x") == 1


def _set_result(store: SagaStore, saga_id: str, step: int, text: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            update(attempts)
            .where(attempts.c.saga_id == saga_id, attempts.c.step == step)
            .values(result=text)
        )


def test_a_journal_that_cannot_be_decoded_parks_its_saga_and_retry_re_drives_it(
    db_url: str, store: SagaStore, script: Script
) -> None:
    garbled = ["plan-not-json", "plan-format", "result-not-json"]
    with frozen_at_start() as frozen:
        with dying_process(db_url) as dead:
            for saga_id in garbled:
                script.on("act", f"{saga_id}.b", "crash")
                crash(saga_of(dead, [f"{saga_id}.a", f"{saga_id}.b"], saga_id=saga_id))
        plans = {saga_id: saga_row(store.engine, saga_id).plan for saga_id in garbled}
        _set(store, "plan-not-json", plan=plans["plan-not-json"][:40])
        _set(store, "plan-format", plan=plans["plan-format"].replace('"format":2', '"format":9'))
        _set_result(store, "result-not-json", 0, "{not json")
        frozen.tick(LEASE + 1)

        report = store.recover()
        assert sorted(report.parked) == sorted(garbled)
        for saga_id, words in [
            ("plan-not-json", "not valid JSON"),
            ("plan-format", "unknown plan format 9"),
            ("result-not-json", "not valid JSON"),
        ]:
            row = saga_row(store.engine, saga_id)
            assert row.status == "running", saga_id  # never deleted
            assert row.parked_at == at(LEASE + 1), saga_id
            assert row.parked_error == report.parked[saga_id], saga_id
            assert words in row.parked_error, saga_id
        assert [e.kind for e in store.get("plan-format").events] == ["parked"]
        assert sorted(store.stats().parked) == sorted(garbled)

        # retry while still broken: parked again, with a fresh record of it
        frozen.tick(1)
        for saga_id in garbled:
            assert list(store.retry(saga_id).parked) == [saga_id]
            assert saga_row(store.engine, saga_id).parked_at == at(LEASE + 2)

        # a person repairs the journal, then re-drives each saga
        _set(store, "plan-not-json", plan=plans["plan-not-json"])
        _set(store, "plan-format", plan=plans["plan-format"])
        _set_result(store, "result-not-json", 0, '"act result-not-json.a"')
        fixed = {saga_id: store.retry(saga_id) for saga_id in garbled}
    for saga_id in garbled:
        assert fixed[saga_id].succeeded == [saga_id]
        record = store.get(saga_id)
        assert record.status == "succeeded"
        assert record.results == [f"act {saga_id}.a", f"act {saga_id}.b"]
        assert record.parked_at is None
        assert [e.kind for e in record.events] == ["parked", "retried", "parked", "retried"]
        assert record.events[1].detail is not None
        assert record.events[1].detail.startswith("unparked (was: ")
        assert script.count("act", f"{saga_id}.a") == 1
        assert script.count("act", f"{saga_id}.b") == 2
    assert store.stats().parked == ()


def test_retry_re_runs_the_compensations_of_a_failed_saga(store: SagaStore, script: Script) -> None:
    # b fails, so a is undone; a's compensation gives up (1 attempt): the saga is failed.
    script.on("act", "b", "fail")
    script.on("undo", "a", "fail", "fail")
    saga = saga_of(store, ["a", "b"], saga_id="stuck", compensation_retry=RetryPolicy(attempts=1))
    with frozen_at_start() as frozen:
        with pytest.raises(SagaException) as failed:
            execute(saga)
        assert failed.value.status == "failed"
        assert store.get("stuck").status == "failed"
        assert store.stats().unresolved_failed == 1

        frozen.tick(60)
        still = store.retry("stuck")  # the cause is not fixed yet: it gives up again
        assert still.failed == ["stuck"]
        assert statuses(store.get("stuck"), "compensation", 0) == ["failed", "failed"]

        frozen.tick(60)
        fixed = store.retry("stuck")  # the third try of undo a succeeds
    assert fixed.compensated == ["stuck"]
    record = store.get("stuck")
    assert record.status == "compensated"
    assert statuses(record, "compensation", 0) == ["failed", "failed", "succeeded"]
    assert statuses(record, "compensation", 1) == []  # b raised: nothing to undo
    assert [e.kind for e in record.events] == ["retried", "retried"]
    assert script.count("act", "a") == script.count("act", "b") == 1
    assert script.count("undo", "a") == 3
    assert store.stats().unresolved_failed == 0


def test_retry_refuses_what_is_neither_failed_nor_parked(store: SagaStore, script: Script) -> None:
    execute(saga_of(store, ["a"], saga_id="done"))
    with pytest.raises(InvalidTransition, match="succeeded"):
        store.retry("done")
    with pytest.raises(SagaNotFound):
        store.retry("no-such-saga")
    assert store.get("done").events == ()


def test_resolve_keeps_the_note_in_the_saga_history(
    db_url: str, store: SagaStore, script: Script
) -> None:
    script.on("act", "b", "fail")
    script.on("undo", "a", "fail")
    script.on("act", "old", "crash")
    script.on("act", "live", "crash")
    with frozen_at_start() as frozen:
        with pytest.raises(SagaException):
            execute(saga_of(store, ["a", "b"], saga_id="failed"))
        with dying_process(db_url) as dead:
            crash(saga_of(dead, ["old"], saga_id="parked", first=legacy))
            crash(saga_of(dead, ["live"], saga_id="running"))
        execute(saga_of(store, ["c"], saga_id="succeeded"))
        frozen.tick(LEASE + 1)
        with SagaStore(db_url, registry=Registry(), heartbeat=False) as lost_everything:
            assert sorted(lost_everything.recover().parked) == ["parked", "running"]
        _set(store, "running", parked_at=None, parked_error=None, parked_by=None)

        frozen.tick(100)
        store.resolve("failed", note="refunded by hand, ticket 42")
        store.resolve("parked", note="the legacy service is gone; nothing to undo")

        with pytest.raises(InvalidTransition, match="is running"):
            store.resolve("running", note="not mine to close")
        with pytest.raises(InvalidTransition, match="is succeeded"):
            store.resolve("succeeded", note="nothing to resolve")
        with pytest.raises(ValueError, match="note"):
            store.resolve("failed", note="  ")
        with pytest.raises(SagaNotFound):
            store.resolve("no-such-saga", note="?")

        # a resolved saga is closed: no later pass, first or not, takes it up again
        with SagaStore(db_url, heartbeat=False) as restarted:
            assert restarted.recover().succeeded == ["running"]

    failed = store.get("failed")
    assert failed.status == "failed"
    assert failed.resolution_note == "refunded by hand, ticket 42"
    assert failed.resolved_at == at(LEASE + 101)
    assert [(e.kind, e.detail, e.at) for e in failed.events] == [
        ("resolved", "refunded by hand, ticket 42", at(LEASE + 101))
    ]
    parked = store.get("parked")
    assert parked.status == "failed"
    assert parked.resolution_note == "the legacy service is gone; nothing to undo"
    assert [e.kind for e in parked.events] == ["parked", "resolved"]
    assert script.count("act", "old") == 1
    assert store.get("running").resolution_note is None
    assert store.get("succeeded").events == ()
    assert store.stats().unresolved_failed == 0

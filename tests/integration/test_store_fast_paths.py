"""The journal's fast paths keep the guarantees: fewer statements, same fences.

- a commit is one statement on PostgreSQL (data-modifying CTEs), up to three elsewhere, and a
  write whose fence moved writes nothing at all;
- a generated saga id is not looked up (nothing can have it), a chosen one is;
- recovery claims abandoned sagas a chunk per transaction, and a saga it holds but has not
  opened yet is refused to it once another worker took it, or given back if the pass stops.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, select

from micro_saga import clock
from saga_store import SagaStore, claims, writes
from saga_store.tables import attempts, sagas
from tests.integration.recovery_support import (
    LEASE,
    Background,
    Crash,
    Script,
    crash,
    dying_process,
    frozen_at_start,
    new_saga_row,
    new_start_row,
    saga_of,
    saga_row,
    statuses,
    wait_for,
)
from tests.watch import Watch, WhatHappened


class Statements(Watch):
    """SQL statements the store runs while attached (through either door), but its BEGINs."""

    def __init__(self, store: SagaStore) -> None:
        super().__init__(store, self._record)
        self.seen: list[str] = []
        #: the full text of each UPDATE that claims sagas (a claim clears the parked fields)
        self.claims: list[str] = []

    def _record(self, what: WhatHappened, sql: str, _conn: Connection | None) -> None:
        if what != "execute" or sql.lstrip().upper().startswith("BEGIN"):
            return
        verb = sql.lstrip().split(None, 1)[0].upper()
        self.seen.append(verb)
        if verb == "UPDATE" and "parked_by" in sql:
            self.claims.append(sql)

    def __enter__(self) -> Statements:
        self.start()
        return self


def test_each_commit_is_one_statement_on_postgresql_and_at_most_three_elsewhere(
    store: SagaStore, backend: str, script: Script
) -> None:
    with Statements(store) as statements:
        assert saga_of(store, ["a", "b", "c"], saga_id="chosen").orchestrator_execute() == [
            "act a",
            "act b",
            "act c",
        ]
    commits = 4  # n + 1 for three steps
    if backend == "postgresql":
        # the id was chosen, so it is looked up first; then one statement per commit
        assert statements.seen == ["SELECT", *["WITH"] * commits]
    else:
        # saga + start; then fence + finish + start, twice; then fence + finish
        assert statements.seen == [
            "SELECT",
            "INSERT",
            "INSERT",
            *["UPDATE", "UPDATE", "INSERT"] * 2,
            "UPDATE",
            "UPDATE",
        ]
    record = store.get("chosen")
    assert record.status == "succeeded"
    assert [a.status for a in record.attempts] == ["succeeded"] * 3


def test_a_generated_saga_id_is_not_looked_up(store: SagaStore, script: Script) -> None:
    saga = saga_of(store, ["a"], saga_id="unused")
    saga.saga_id = None  # as when the caller gives none: a fresh uuid
    with Statements(store) as statements:
        assert saga.orchestrator_execute() == ["act a"]
    assert "SELECT" not in statements.seen
    assert store.stats().by_status == {"succeeded": 1}


def _seed(store: SagaStore) -> dict[str, Any]:
    now = clock.utcnow()
    row = new_saga_row("s", now)
    with store.engine.begin() as conn:  # through SQLAlchemy, as OnConnection allows
        writes.insert_saga(writes.OnConnection(conn), row, [], [_start(0, now)])
    return row


def _start(step: int, now: Any) -> dict[str, Any]:
    return new_start_row("s", step, now)


def _finish(step: int, now: Any) -> dict[str, Any]:
    return {
        "b_saga": "s",
        "b_kind": "action",
        "b_step": step,
        "b_attempt": 1,
        "status": "succeeded",
        "finished_at": now,
        "result": "1",
        "error_type": None,
        "error_message": None,
        "error_traceback": None,
        "retry_at": None,
    }


def _attempt_rows(store: SagaStore) -> list[tuple[int, str]]:
    with store.engine.connect() as conn:
        query = select(attempts.c.step, attempts.c.status).order_by(attempts.c.id)
        return [(r.step, r.status) for r in conn.execute(query)]


@pytest.mark.parametrize("starts", [1, 2], ids=["one-start", "two-starts"])
def test_a_write_whose_fence_moved_writes_no_attempts(store: SagaStore, starts: int) -> None:
    _seed(store)
    now = clock.utcnow()
    new = [_start(step, now) for step in range(1, 1 + starts)]
    values = {"version": 2, "updated_at": now}
    finishes = [_finish(0, now)]
    writer = store.journal.writer
    single = writes.one_statement(writer.dialect, finishes, new)
    assert single == (store.engine.dialect.name == "postgresql" and starts == 1)
    with writer.transaction(single=single) as conn:
        won = writes.fenced_update(conn, "s", 7, values, finishes=finishes, starts=new)
    assert won is False
    assert _attempt_rows(store) == [(0, "started")]
    assert saga_row(store.engine, "s").version == 1

    with writer.transaction(single=single) as conn:
        won = writes.fenced_update(conn, "s", 1, values, finishes=finishes, starts=new)
    assert won is True
    assert _attempt_rows(store) == [
        (0, "succeeded"),
        *((s, "started") for s in range(1, 1 + starts)),
    ]
    row = saga_row(store.engine, "s")
    assert (row.version, row.updated_at) == (2, now)


def test_recovery_claims_abandoned_sagas_a_chunk_per_transaction(
    db_url: str, store: SagaStore, script: Script
) -> None:
    ids = [f"s{i:02d}" for i in range(40)]
    with frozen_at_start() as frozen:
        with dying_process(db_url) as dead:
            for saga_id in ids:
                script.on("act", saga_id, "crash")
                crash(saga_of(dead, [saga_id], saga_id=saga_id))
        frozen.tick(LEASE + 1)
        with Statements(store) as statements:
            report = store.recover()
    assert sorted(report.succeeded) == ids
    assert report.skipped == []
    assert len(statements.claims) == 6  # chunks of 1, 2, 4, 8, 16 and the last 9
    # one page to find them; per chunk, its rows locked and its attempts read
    assert statements.seen.count("SELECT") == 1 + 2 * 6
    for saga_id in ids:
        assert statuses(store.get(saga_id), "action", 0) == ["interrupted", "succeeded"]


def test_a_saga_held_for_recovery_is_refused_once_another_worker_took_it(
    db_url: str, store: SagaStore, script: Script
) -> None:
    # w1 claims s2 and s3 together, blocks in s2 past the lease; w2 takes both; w1 must then
    # run nothing of s3: its first write is refused before the step is called.
    script.on("act", "s1", "crash")
    script.on("act", "s2", "crash", "block")
    script.on("act", "s3", "crash")
    with frozen_at_start() as frozen:
        with dying_process(db_url) as dead:
            for saga_id in ("s1", "s2", "s3"):
                crash(saga_of(dead, [saga_id], saga_id=saga_id))
                frozen.tick(1)
        frozen.tick(LEASE + 1)
        with (
            SagaStore(db_url, worker_id="w1", heartbeat=False) as w1,
            SagaStore(db_url, worker_id="w2", heartbeat=False) as w2,
        ):
            first = Background(w1.recover, "w1")
            try:
                assert script.entered.wait(10)
                assert saga_row(store.engine, "s3").owner == "w1"  # held, not opened
                frozen.tick(LEASE + 1)
                second = w2.recover()
            finally:
                script.gate.set()
            first.join()
    assert first.error is None
    assert first.result.succeeded == ["s1"]
    assert sorted(first.result.skipped) == ["s2", "s3"]
    assert sorted(second.succeeded) == ["s2", "s3"]
    assert script.count("act", "s3", thread="w1") == 0
    assert script.count("act", "s3") == 2  # the crash, then w2
    assert statuses(store.get("s3"), "action", 0) == ["interrupted", "succeeded"]


def test_sagas_held_for_recovery_are_given_back_when_the_pass_stops(
    db_url: str, store: SagaStore, script: Script
) -> None:
    # s2 kills the recovering process again; s3, claimed with it, must not wait for a lease.
    script.on("act", "s1", "crash")
    script.on("act", "s2", "crash", "crash")
    script.on("act", "s3", "crash")
    with frozen_at_start() as frozen:
        with dying_process(db_url) as dead:
            for saga_id in ("s1", "s2", "s3"):
                crash(saga_of(dead, [saga_id], saga_id=saga_id))
                frozen.tick(1)
        frozen.tick(LEASE + 1)
        with SagaStore(db_url, worker_id="w1", heartbeat=False) as w1, pytest.raises(Crash):
            w1.recover()
        row = saga_row(store.engine, "s3")
        assert row.lease_expires_at <= clock.utcnow()
        with SagaStore(db_url, worker_id="w2", heartbeat=False) as w2:
            report = w2.recover()  # no time passed
    assert sorted(report.succeeded) == ["s2", "s3"]
    assert script.count("act", "s3") == 2  # the crash, then w2
    assert saga_row(store.engine, "s1").status == "succeeded"


def test_a_claim_misses_a_saga_that_moved_since_it_was_listed(
    store: SagaStore, script: Script
) -> None:

    _seed(store)
    lease = timedelta(seconds=LEASE)
    assert claims.claim(store.engine, {"s": 5}, worker_id="w1", lease=lease) == {}
    won = claims.claim(store.engine, {"s": 1}, worker_id="w1", lease=lease)
    assert list(won) == ["s"]
    assert (won["s"].version, [a.status for a in won["s"].attempts]) == (2, ["started"])
    row = saga_row(store.engine, "s")
    assert (row.owner, row.version) == ("w1", 2)
    assert claims.claim(store.engine, {"s": 1}, worker_id="w2", lease=lease) == {}
    with store.engine.connect() as conn:
        assert conn.execute(select(sagas.c.owner)).scalar_one() == "w1"


def test_the_heartbeat_renews_a_saga_that_recovery_runs(
    db_url: str, store: SagaStore, script: Script
) -> None:
    # Real time here: a recovery worker's heartbeat must renew a 0.5 s lease on the saga it
    # took over while that saga's step blocks, so no other worker takes it meanwhile.
    script.on("act", "slow", "crash", "block")
    with dying_process(db_url, lease_seconds=0.01) as dead:
        crash(saga_of(dead, ["slow"], saga_id="taken-over"))
    abandoned = saga_row(store.engine, "taken-over").lease_expires_at
    assert wait_for(lambda: clock.utcnow() > abandoned)
    with SagaStore(db_url, worker_id="rescuer", lease_seconds=0.5, heartbeat=True) as rescuer:
        run = Background(rescuer.recover, "rescuer")
        try:
            assert script.entered.wait(10)
            first = saga_row(store.engine, "taken-over")
            assert first.owner == "rescuer"

            def renewed_past_first_lease() -> bool:
                row = saga_row(store.engine, "taken-over")
                return bool(
                    clock.utcnow() > first.lease_expires_at + timedelta(seconds=0.1)
                    and row.version >= first.version + 2
                )

            assert wait_for(renewed_past_first_lease)
            with SagaStore(db_url, worker_id="other", heartbeat=False) as other:
                assert other.recover().summary() == "nothing to recover"
        finally:
            script.gate.set()
        run.join()
    assert run.error is None
    assert run.result.succeeded == ["taken-over"]
    assert script.count("act", "slow") == 2  # the crash, then the rescuer only

"""Resuming and rolling back abandoned sagas (DESIGN 6.1-6.3, 6.5), in both modes, sync and async.

Each saga is left by a store that dies mid-step (recovery_support.dying_process) and is
recovered by the `store` fixture once the dead worker's lease has run out. Each test leaves one
saga per mode and flavour (named by VARIANTS) and recovers them all in one pass.
"""

from __future__ import annotations

import pytest
from sqlalchemy import update

from saga_store import SagaStore
from saga_store.tables import sagas
from tests.integration.recovery_support import (
    FLAVOURS,
    LEASE,
    VARIANTS,
    Crash,
    Script,
    crash,
    dying_process,
    execute,
    frozen_at_start,
    saga_of,
    saga_row,
    statuses,
)
from tests.plan_formats import as_format_1

BOOM = "tests.integration.recovery_support.Boom"


def _abc(name: str) -> tuple[str, str, str]:
    return f"{name}.a", f"{name}.b", f"{name}.c"


def test_an_interrupted_attempt_runs_again_without_using_a_retry(
    db_url: str, store: SagaStore, script: Script
) -> None:
    # b: the process dies in attempt 1; then one ordinary failure, which its 2 attempts allow
    # only because the interruption is not counted against them.
    with frozen_at_start() as frozen:
        with dying_process(db_url) as dead:
            for name, mode, flavour in VARIANTS:
                a, b, c = _abc(name)
                script.on("act", b, "crash", "fail")
                saga = saga_of(dead, [a, b, c], saga_id=name, flavour=flavour, retry_attempts=2)
                crash(saga, mode, flavour)
                abandoned = store.get(name)
                assert abandoned.status == "running"
                assert statuses(abandoned, "action", 1) == ["started"], name
        frozen.tick(LEASE + 1)
        report = store.recover()
    assert sorted(report.succeeded) == sorted(name for name, _, _ in VARIANTS)
    for name, _, _ in VARIANTS:
        a, b, c = _abc(name)
        record = store.get(name)
        assert record.status == "succeeded", name
        assert record.results == [f"act {a}", f"act {b}", f"act {c}"], name
        assert statuses(record, "action", 1) == ["interrupted", "failed", "succeeded"], name
        interrupted = next(x for x in record.attempts if x.status == "interrupted")
        assert (interrupted.worker, interrupted.error_type) == ("dead-worker", None), name
        # finished attempts never run again
        assert statuses(record, "action", 0) == statuses(record, "action", 2) == ["succeeded"]
        assert script.count("act", a) == script.count("act", c) == 1, name
        assert script.count("act", b) == 3, name
    assert script.order("undo") == []


def test_a_step_that_keeps_killing_its_process_ends_in_compensation(
    db_url: str, store: SagaStore, script: Script
) -> None:
    with frozen_at_start() as frozen:
        with dying_process(db_url) as dead:
            for flavour in FLAVOURS:
                script.on("act", f"{flavour}.b", "crash", "crash", "crash")
                saga = saga_of(
                    dead,
                    [f"{flavour}.a", f"{flavour}.b"],
                    saga_id=flavour,
                    flavour=flavour,
                    max_interruptions=1,
                )
                crash(saga, flavour=flavour)
        frozen.tick(LEASE + 1)
        for flavour in FLAVOURS:
            # the second attempt kills its process too (each pass dies in the first saga it
            # takes; the other's lease is then still live)
            with (
                dying_process(db_url, worker_id=f"dead-again-{flavour}") as dead_again,
                pytest.raises(Crash),
            ):
                dead_again.recover()
        for flavour in FLAVOURS:
            assert statuses(store.get(flavour), "action", 1) == ["interrupted", "started"]
        frozen.tick(LEASE + 1)
        report = store.recover()
    assert sorted(report.compensated) == sorted(FLAVOURS)
    for flavour in FLAVOURS:
        a, b = f"{flavour}.a", f"{flavour}.b"
        # budget: 1 interruption tolerated, the 2nd gives up
        assert script.count("act", b) == 2, flavour
        record = store.get(flavour)
        assert record.status == "compensated"
        assert statuses(record, "action", 1) == ["interrupted", "interrupted"]
        assert record.error_type == "StepInterrupted"
        assert record.error_message is not None
        assert f"'{b}'" in record.error_message
        assert "interrupted 2 times" in record.error_message
        # b was in flight, so it is undone too (last first), with no result to hand over
        assert [x for x in script.order("undo") if x.startswith(flavour)] == [b, a]
        assert [x.received for x in script.of("undo", b)] == [None]
        assert [x.received for x in script.of("undo", a)] == [f"act {a}"]


def test_on_crash_compensate_rolls_back_what_succeeded_or_was_in_flight(
    db_url: str, store: SagaStore, script: Script
) -> None:
    # orchestrated: a done, b in flight, c never started. choreographed (all start at once):
    # a done, b in flight, c raised (so it did nothing to undo).
    with frozen_at_start() as frozen:
        with dying_process(db_url) as dead:
            for name, mode, flavour in VARIANTS:
                a, b, c = _abc(name)
                script.on("act", b, "crash")
                if mode == "choreographed":
                    script.on("act", c, "fail")
                saga = saga_of(
                    dead, [a, b, c], saga_id=name, flavour=flavour, on_crash="compensate"
                )
                crash(saga, mode, flavour)
        frozen.tick(LEASE + 1)
        report = store.recover()
    assert sorted(report.compensated) == sorted(name for name, _, _ in VARIANTS)
    for name, mode, _ in VARIANTS:
        a, b, c = _abc(name)
        record = store.get(name)
        assert record.status == "compensated", name
        assert record.on_crash == "compensate"
        # the crash is the reason, unless a step had failed for good by itself
        assert record.error_type == ("SagaCrashed" if mode == "orchestrated" else BOOM), name
        assert statuses(record, "action", 1) == ["interrupted"], name  # not run again
        assert script.count("act", b) == 1, name
        assert statuses(record, "compensation", 0) == ["succeeded"], name
        assert statuses(record, "compensation", 1) == ["succeeded"], name
        assert statuses(record, "compensation", 2) == [], name
        undone = [x for x in script.order("undo") if x.startswith(f"{name}.")]
        if mode == "orchestrated":
            assert undone == [b, a], name  # reverse order
            assert script.count("act", c) == 0, name
            assert statuses(record, "action", 2) == [], name
        else:
            assert sorted(undone) == [a, b], name
            assert statuses(record, "action", 2) == ["failed"], name
        assert [x.received for x in script.of("undo", a)] == [f"act {a}"], name


def test_a_saga_found_compensating_goes_on_without_redoing_finished_compensations(
    db_url: str, store: SagaStore, script: Script
) -> None:
    # c fails for good; while a and b are being undone, the process dies in a's compensation.
    with frozen_at_start() as frozen:
        with dying_process(db_url) as dead:
            for name, mode, flavour in VARIANTS:
                a, b, c = _abc(name)
                script.on("act", c, "fail")
                script.on("undo", a, "crash")
                crash(saga_of(dead, [a, b, c], saga_id=name, flavour=flavour), mode, flavour)
                abandoned = store.get(name)
                assert abandoned.status == "compensating", name
                assert statuses(abandoned, "compensation", 0) == ["started"], name
                assert statuses(abandoned, "compensation", 1) == ["succeeded"], name
        frozen.tick(LEASE + 1)
        report = store.recover()
    assert sorted(report.compensated) == sorted(name for name, _, _ in VARIANTS)
    for name, _, _ in VARIANTS:
        a, b, c = _abc(name)
        record = store.get(name)
        assert record.status == "compensated", name
        assert record.error_type == BOOM, name
        assert statuses(record, "compensation", 0) == ["interrupted", "succeeded"], name
        assert statuses(record, "compensation", 1) == ["succeeded"], name
        assert statuses(record, "compensation", 2) == [], name  # c raised: nothing to undo
        assert script.count("undo", b) == 1, name  # finished: never redone
        assert script.count("undo", a) == 2, name
        assert script.count("act", a) == script.count("act", b) == script.count("act", c) == 1


def test_starting_an_abandoned_saga_id_again_resumes_it(store: SagaStore, script: Script) -> None:
    # After a restart, the caller starting the same saga id resumes it instead of re-running.
    for name, mode, flavour in VARIANTS:
        a, b, _ = _abc(name)
        script.on("act", b, "crash")
        crash(saga_of(store, [a, b], saga_id=name, flavour=flavour), mode, flavour)
        results = execute(saga_of(store, [a, b], saga_id=name, flavour=flavour), mode, flavour)
        assert results == [f"act {a}", f"act {b}"], name
        assert script.count("act", a) == 1, name
        assert script.count("act", b) == 2, name
        assert statuses(store.get(name), "action", 1) == ["interrupted", "succeeded"], name


def test_a_saga_left_with_a_format_1_plan_is_recovered_with_its_policies(
    db_url: str, store: SagaStore, script: Script
) -> None:
    # Left by a version that wrote plans as format 1. Its step b may fail twice: it succeeds
    # only if the three attempts of its policy are read back from the old plan.
    with frozen_at_start() as frozen:
        with dying_process(db_url) as dead:
            script.on("act", "old.b", "crash", "fail", "fail")
            crash(saga_of(dead, ["old.a", "old.b"], saga_id="old", retry_attempts=3))
        old_plan = as_format_1(saga_row(store.engine, "old").plan)
        with store.engine.begin() as conn:
            conn.execute(update(sagas).where(sagas.c.id == "old").values(plan=old_plan))
        frozen.tick(LEASE + 1)
        report = store.recover()
    assert report.succeeded == ["old"]
    record = store.get("old")
    assert record.results == ["act old.a", "act old.b"]
    assert statuses(record, "action", 1) == ["interrupted", "failed", "failed", "succeeded"]
    assert saga_row(store.engine, "old").plan == old_plan  # read as it was, never rewritten

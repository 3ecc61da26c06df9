"""Resuming a saga from a journal's prior record: what crash recovery runs on.

Each test writes the prior record by hand (as a crashed process would have left it), then
executes a saga with the same id and journal.
"""

from __future__ import annotations

from typing import Any

import pytest
from freezegun.api import FrozenDateTimeFactory

from micro_saga import (
    ACTION_RESULT,
    ErrorInfo,
    Event,
    InMemoryJournal,
    RecordedError,
    RetryPolicy,
    SagaAlreadyRunning,
    SagaAssembler,
    SagaCrashedError,
    SagaException,
    SagaFinished,
    SagaStarted,
    StatusChanged,
    StepInterruptedError,
    clock,
)
from micro_saga.plan import CrashPolicy, Mode
from tests.unit.helpers import START, FakeSleep, Flavour, Log, at, described, finished, started

SAGA_ID = "saga-1"


def _abc(
    flavour: Flavour,
    log: Log,
    journal: InMemoryJournal,
    *,
    failing_b: int = 0,
    on_crash: CrashPolicy = "resume",
    max_interruptions: int = 3,
    retry: RetryPolicy | None = None,
    fake_sleep: FakeSleep | None = None,
) -> SagaAssembler:
    """Steps a, b, c; each compensation logs "undo <name> <action result>"; b fails
    ``failing_b`` times first."""

    def undo(name: str, result: Any) -> str:
        log.add(f"undo {name} {result}")
        return f"undo {name}"

    options: dict[str, Any] = {}
    if fake_sleep is not None:
        options = {"sleep": fake_sleep, "async_sleep": fake_sleep.async_sleep}
    saga = SagaAssembler.saga(
        saga_id=SAGA_ID,
        journal=journal,
        on_crash=on_crash,
        max_interruptions=max_interruptions,
        retry=retry or RetryPolicy(attempts=2),
        **options,
    )
    for name in "abc":
        func = log.failing(name, times=failing_b) if name == "b" else log.step(name)
        op = flavour.op(func).named(name)
        saga.operation(flavour.compensate(op, undo, name, ACTION_RESULT))
    return saga


def _prior(
    journal: InMemoryJournal, saga: SagaAssembler, *events: Event, mode: Mode = "orchestrated"
) -> int:
    """Record what a crashed process left behind; returns how many events that is."""
    journal.record([SagaStarted(plan=saga.plan(mode), at=START), *events], durable=True)
    return len(journal.events)


def _failure(message: str) -> ErrorInfo:
    return ErrorInfo(type="ValueError", message=message)


def test_finished_steps_are_not_run_again_and_the_one_in_flight_is(
    flavour: Flavour, log: Log
) -> None:
    journal = InMemoryJournal()
    saga = _abc(flavour, log, journal, failing_b=1)
    prior = _prior(
        journal,
        saga,
        started(SAGA_ID, 0),
        finished(SAGA_ID, 0, result="a (before crash)"),
        started(SAGA_ID, 1),
    )

    assert flavour.execute(saga) == ["a (before crash)", "b", "c"]

    assert log.entries == ["b", "b", "c"]
    # The interrupted attempt did not use up b's two attempts: after it, b failed once and
    # still had a second try.
    assert described(journal)[prior:] == [
        ("AttemptFinished", 1, "action", 1, "interrupted"),
        ("AttemptStarted", 1, "action", 2),
        ("AttemptFinished", 1, "action", 2, "failed"),
        ("AttemptStarted", 1, "action", 3),
        ("AttemptFinished", 1, "action", 3, "succeeded"),
        ("AttemptStarted", 2, "action", 1),
        ("AttemptFinished", 2, "action", 1, "succeeded"),
        ("SagaFinished", "succeeded"),
    ]


def test_a_choreographed_saga_resumes_only_what_did_not_finish(flavour: Flavour, log: Log) -> None:
    journal = InMemoryJournal()
    saga = _abc(flavour, log, journal)
    _prior(
        journal,
        saga,
        started(SAGA_ID, 0),
        started(SAGA_ID, 1),
        finished(SAGA_ID, 0, result="a (before crash)"),
        mode="choreographed",
    )

    assert flavour.execute(saga, "choreographed") == ["a (before crash)", "b", "c"]
    assert sorted(log.entries) == ["b", "c"]


def test_a_saga_that_crashed_before_its_first_step_runs_from_the_start(
    flavour: Flavour, log: Log
) -> None:
    journal = InMemoryJournal()
    saga = _abc(flavour, log, journal)
    _prior(journal, saga)

    assert flavour.execute(saga) == ["a", "b", "c"]
    assert log.entries == ["a", "b", "c"]


@pytest.mark.parametrize(("interruptions", "gives_up"), [(1, False), (2, False), (3, True)])
def test_a_step_interrupted_too_often_gives_up_and_the_saga_compensates(
    flavour: Flavour, log: Log, interruptions: int, gives_up: bool
) -> None:
    journal = InMemoryJournal()
    saga = _abc(flavour, log, journal, max_interruptions=2)
    earlier: list[Event] = []
    for number in range(1, interruptions):
        earlier += [started(SAGA_ID, 1, number), finished(SAGA_ID, 1, number, status="interrupted")]
    _prior(
        journal,
        saga,
        started(SAGA_ID, 0),
        finished(SAGA_ID, 0, result="A"),
        *earlier,
        started(SAGA_ID, 1, interruptions),
    )

    if not gives_up:
        assert flavour.execute(saga) == ["A", "b", "c"]
        assert log.entries == ["b", "c"]
        return
    with pytest.raises(SagaException) as caught:
        flavour.execute(saga)

    # b never ran again; it was in flight at a crash, so it is compensated (it had no result).
    assert log.entries == ["undo b None", "undo a A"]
    e = caught.value
    assert isinstance(e.operation_error, StepInterruptedError)
    assert "interrupted 3 times" in str(e)
    assert e.operation_name == "b"
    assert e.compensation_success_result == ["undo b", "undo a"]
    assert e.status == "compensated"


@pytest.mark.parametrize("mode", ["orchestrated", "choreographed"])
def test_on_crash_compensate_rolls_a_resumed_saga_back(
    flavour: Flavour, log: Log, mode: Mode
) -> None:
    journal = InMemoryJournal()
    saga = _abc(flavour, log, journal, on_crash="compensate")
    prior = _prior(
        journal,
        saga,
        started(SAGA_ID, 0),
        finished(SAGA_ID, 0, result="A"),
        started(SAGA_ID, 1),
        mode=mode,
    )

    with pytest.raises(SagaException) as caught:
        flavour.execute(saga, mode)

    # Succeeded and in-flight steps are undone; c never started, so it is neither run nor undone.
    assert sorted(log.entries) == ["undo a A", "undo b None"]
    e = caught.value
    assert isinstance(e.operation_error, SagaCrashedError)
    assert e.operation_name is None
    assert sorted(e.compensation_success_result or []) == ["undo a", "undo b"]
    assert e.compensation_errors is None
    assert e.status == "compensated"
    assert described(journal)[prior : prior + 2] == [
        ("AttemptFinished", 1, "action", 1, "interrupted"),
        ("StatusChanged", "compensating"),
    ]
    last = journal.events[-1]
    assert isinstance(last, SagaFinished)
    assert last.error is not None
    assert last.error.type == "SagaCrashed"


@pytest.mark.parametrize("mode", ["orchestrated", "choreographed"])
def test_on_crash_compensate_finishes_a_saga_whose_every_step_already_succeeded(
    flavour: Flavour, log: Log, mode: Mode
) -> None:
    # The crash came after the last step's success was journaled but before the saga's end:
    # there is nothing to undo, so the saga finishes as succeeded instead of rolling back.
    journal = InMemoryJournal()
    saga = _abc(flavour, log, journal, on_crash="compensate")
    events: list[Event] = []
    for step, result in enumerate("ABC"):
        events += [started(SAGA_ID, step), finished(SAGA_ID, step, result=result)]
    _prior(journal, saga, *events, mode=mode)

    assert flavour.execute(saga, mode) == ["A", "B", "C"]
    assert log.entries == []
    last = journal.events[-1]
    assert isinstance(last, SagaFinished)
    assert last.status == "succeeded"


def test_a_saga_found_compensating_continues_without_redoing_finished_compensations(
    flavour: Flavour, log: Log
) -> None:
    journal = InMemoryJournal()
    saga = _abc(flavour, log, journal)
    prior = _prior(
        journal,
        saga,
        started(SAGA_ID, 0),
        finished(SAGA_ID, 0, result="A"),
        started(SAGA_ID, 1),
        finished(SAGA_ID, 1, result="B"),
        started(SAGA_ID, 2),
        finished(SAGA_ID, 2, status="failed", error=_failure("c broke")),
        StatusChanged(saga_id=SAGA_ID, status="compensating", at=START),
        started(SAGA_ID, 1, kind="compensation"),
        finished(SAGA_ID, 1, kind="compensation", result="undo b (before crash)"),
        started(SAGA_ID, 0, kind="compensation"),
    )

    with pytest.raises(SagaException) as caught:
        flavour.execute(saga)

    assert log.entries == ["undo a A"]
    assert described(journal)[prior:] == [
        ("AttemptFinished", 0, "compensation", 1, "interrupted"),
        ("AttemptStarted", 0, "compensation", 2),
        ("AttemptFinished", 0, "compensation", 2, "succeeded"),
        ("SagaFinished", "compensated"),
    ]
    e = caught.value
    # The live exception died with the crashed process: the journal's record stands in for it.
    assert isinstance(e.operation_error, RecordedError)
    assert e.operation_error.error_type == "ValueError"
    assert str(e) == "c broke"
    assert e.operation_name == "c"
    assert e.compensation_success_result == ["undo b (before crash)", "undo a"]
    assert e.status == "compensated"


def test_a_step_that_gave_up_before_the_crash_is_not_retried(flavour: Flavour, log: Log) -> None:
    journal = InMemoryJournal()
    saga = _abc(flavour, log, journal)
    _prior(
        journal,
        saga,
        started(SAGA_ID, 0),
        finished(SAGA_ID, 0, result="A"),
        started(SAGA_ID, 1),
        finished(SAGA_ID, 1, status="failed", error=_failure("b broke")),
    )

    with pytest.raises(SagaException) as caught:
        flavour.execute(saga)

    assert log.entries == ["undo a A"]
    assert caught.value.operation_name == "b"


@pytest.mark.parametrize(("now", "waits"), [(4, [6.0]), (10, []), (15, [])])
def test_a_durable_backoff_is_honoured_on_resume(
    flavour: Flavour,
    log: Log,
    frozen: FrozenDateTimeFactory,
    fake_sleep: FakeSleep,
    now: float,
    waits: list[float],
) -> None:
    journal = InMemoryJournal()
    runs_at: list[Any] = []

    saga = _abc(
        flavour, log, journal, retry=RetryPolicy(attempts=3, delay=10), fake_sleep=fake_sleep
    )
    saga.operations[0] = flavour.op(lambda: runs_at.append(clock.utcnow()))
    _prior(
        journal,
        saga,
        started(SAGA_ID, 0),
        finished(SAGA_ID, 0, status="failed", error=_failure("a broke"), retry_at=at(10)),
    )
    frozen.move_to(at(now))

    flavour.execute(saga)

    assert fake_sleep.delays == waits
    assert runs_at == [at(max(now, 10))]


@pytest.mark.parametrize("mode", ["orchestrated", "choreographed"])
def test_a_finished_saga_returns_its_recorded_results_without_running(
    flavour: Flavour, log: Log, mode: Mode
) -> None:
    journal = InMemoryJournal()
    assert flavour.execute(_abc(flavour, log, journal), mode) == ["a", "b", "c"]
    recorded = list(journal.events)

    again = flavour.execute(_abc(flavour, log, journal), mode)

    assert again == ["a", "b", "c"]
    assert log.entries == ["a", "b", "c"]
    assert journal.events == recorded


@pytest.mark.parametrize("mode", ["orchestrated", "choreographed"])
def test_a_failed_saga_raises_its_recorded_failure_without_running(
    flavour: Flavour, log: Log, mode: Mode
) -> None:
    journal = InMemoryJournal()
    with pytest.raises(SagaException) as first:
        flavour.execute(_abc(flavour, log, journal, failing_b=5), mode)
    ran = list(log.entries)
    recorded = list(journal.events)

    with pytest.raises(SagaException) as again:
        flavour.execute(_abc(flavour, log, journal, failing_b=5), mode)

    assert log.entries == ran
    assert journal.events == recorded
    for e in (first.value, again.value):
        assert str(e) == "b broke"
        assert e.operation_name == "b"
        assert e.status == "compensated"
        assert e.saga_id == SAGA_ID
    assert again.value.compensation_success_result == first.value.compensation_success_result
    assert again.value.compensation_errors == first.value.compensation_errors


def test_a_saga_that_is_open_elsewhere_is_not_run_twice(flavour: Flavour, log: Log) -> None:
    journal = InMemoryJournal()
    saga = _abc(flavour, log, journal)
    journal.open(saga.plan("orchestrated"))

    with pytest.raises(SagaAlreadyRunning, match=SAGA_ID):
        flavour.execute(saga)
    # The refused run must not release the other owner's hold.
    with pytest.raises(SagaAlreadyRunning):
        flavour.execute(saga)

    assert log.entries == []
    journal.release(SAGA_ID)
    assert flavour.execute(saga) == ["a", "b", "c"]


def test_a_compensation_interrupted_too_often_gives_up_and_is_reported(
    flavour: Flavour, log: Log
) -> None:
    journal = InMemoryJournal()
    saga = _abc(flavour, log, journal, max_interruptions=1)
    _prior(
        journal,
        saga,
        started(SAGA_ID, 0),
        finished(SAGA_ID, 0, result="A"),
        started(SAGA_ID, 1),
        finished(SAGA_ID, 1, result="B"),
        started(SAGA_ID, 2),
        finished(SAGA_ID, 2, status="failed", error=_failure("c broke")),
        StatusChanged(saga_id=SAGA_ID, status="compensating", at=START),
        started(SAGA_ID, 1, kind="compensation"),
        finished(SAGA_ID, 1, kind="compensation", status="interrupted"),
        started(SAGA_ID, 1, 2, kind="compensation"),
    )

    with pytest.raises(SagaException) as caught:
        flavour.execute(saga)

    # b's compensation is not tried a third time; a's still runs.
    assert log.entries == ["undo a A"]
    e = caught.value
    assert str(e) == "c broke"
    assert e.compensation_success_result == ["undo a"]
    assert e.compensation_errors is not None
    assert len(e.compensation_errors) == 1
    assert "'b' (compensation) was interrupted 2 times" in e.compensation_errors[0]
    assert e.status == "failed"


def test_a_durable_compensation_backoff_is_honoured_on_resume(
    flavour: Flavour, log: Log, frozen: FrozenDateTimeFactory, fake_sleep: FakeSleep
) -> None:
    journal = InMemoryJournal()
    saga = _abc(
        flavour, log, journal, retry=RetryPolicy(attempts=2, delay=30), fake_sleep=fake_sleep
    )
    _prior(
        journal,
        saga,
        started(SAGA_ID, 0),
        finished(SAGA_ID, 0, result="A"),
        started(SAGA_ID, 1),
        finished(SAGA_ID, 1, status="failed", error=_failure("b broke")),
        StatusChanged(saga_id=SAGA_ID, status="compensating", at=START),
        started(SAGA_ID, 0, kind="compensation"),
        finished(
            SAGA_ID,
            0,
            kind="compensation",
            status="failed",
            error=_failure("undo a broke"),
            retry_at=at(30),
        ),
    )
    frozen.move_to(at(20))

    with pytest.raises(SagaException) as caught:
        flavour.execute(saga)

    assert fake_sleep.delays == [10.0]
    assert log.entries == ["undo a A"]
    assert caught.value.status == "compensated"

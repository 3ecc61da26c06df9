"""What the engine reports to a journal, in which order, and what it asks to be committed when."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from micro_saga import (
    AttemptFinished,
    AttemptStarted,
    Event,
    InMemoryJournal,
    Journal,
    NullJournal,
    ResultNotStored,
    RetryPolicy,
    SagaAssembler,
    SagaDefinitionError,
    SagaException,
    SagaFinished,
    SagaStarted,
    current_step,
)
from micro_saga.context import StepKind
from micro_saga.plan import Mode
from tests.unit.helpers import FakeSleep, Flavour, Log, described


def test_the_journals_follow_the_protocol() -> None:
    assert isinstance(InMemoryJournal(), Journal)
    assert isinstance(NullJournal(), Journal)
    assert isinstance(SagaAssembler.saga().journal, NullJournal)


def test_a_success_is_journaled_in_order(flavour: Flavour, log: Log) -> None:
    journal = InMemoryJournal()
    saga = SagaAssembler.saga(name="order", saga_id="j-1", journal=journal)
    saga.operation(flavour.op(log.step("a", result=1)).named("a"))
    saga.operation(flavour.op(log.step("b", result=2)).named("b"))

    assert flavour.execute(saga) == [1, 2]

    assert described(journal) == [
        ("SagaStarted", "j-1"),
        ("AttemptStarted", 0, "action", 1),
        ("AttemptFinished", 0, "action", 1, "succeeded"),
        ("AttemptStarted", 1, "action", 1),
        ("AttemptFinished", 1, "action", 1, "succeeded"),
        ("SagaFinished", "succeeded"),
    ]
    first = journal.events[0]
    assert isinstance(first, SagaStarted)
    assert first.plan == saga.plan("orchestrated")
    assert [step.name for step in first.plan.steps] == ["a", "b"]
    results = [e.result for e in journal.events if isinstance(e, AttemptFinished)]
    assert results == [1, 2]
    last = journal.events[-1]
    assert isinstance(last, SagaFinished)
    assert (last.results, last.error) == ([1, 2], None)
    state = journal.state("j-1")
    assert state is not None
    assert state.status == "succeeded"
    assert state.name == "order"


def test_a_rollback_is_journaled_in_order(flavour: Flavour, log: Log) -> None:
    journal = InMemoryJournal()
    saga = SagaAssembler.saga(saga_id="j-2", journal=journal)
    for name in "ab":
        saga.operation(flavour.compensate(flavour.op(log.step(name)), log.step(f"undo {name}")))
    saga.operation(flavour.op(log.failing("c")).with_retry(attempts=2))

    with pytest.raises(SagaException):
        flavour.execute(saga)

    assert described(journal) == [
        ("SagaStarted", "j-2"),
        ("AttemptStarted", 0, "action", 1),
        ("AttemptFinished", 0, "action", 1, "succeeded"),
        ("AttemptStarted", 1, "action", 1),
        ("AttemptFinished", 1, "action", 1, "succeeded"),
        ("AttemptStarted", 2, "action", 1),
        ("AttemptFinished", 2, "action", 1, "failed"),
        ("AttemptStarted", 2, "action", 2),
        ("AttemptFinished", 2, "action", 2, "failed"),
        ("StatusChanged", "compensating"),
        ("AttemptStarted", 1, "compensation", 1),
        ("AttemptFinished", 1, "compensation", 1, "succeeded"),
        ("AttemptStarted", 0, "compensation", 1),
        ("AttemptFinished", 0, "compensation", 1, "succeeded"),
        ("SagaFinished", "compensated"),
    ]
    failures = [e for e in journal.events if isinstance(e, AttemptFinished) and e.error]
    assert [e.retry_at is None for e in failures] == [False, True]
    error = failures[-1].error
    assert error is not None
    assert (error.type, error.message) == ("ValueError", "c broke")
    assert isinstance(error.exception, ValueError)
    assert error.traceback is not None
    assert error.traceback.endswith("ValueError: c broke\n")
    last = journal.events[-1]
    assert isinstance(last, SagaFinished)
    assert last.results is None
    assert last.error is not None
    # What the saga finished with is what a journal can store: no live exception.
    assert (last.error.type, last.error.message, last.error.exception) == (
        "ValueError",
        "c broke",
        None,
    )


class RefusingJournal(InMemoryJournal):
    """A journal that cannot store a set (as a JSON journal cannot)."""

    def record(self, events: Sequence[Event], *, durable: bool) -> None:
        for event in events:
            if isinstance(event, AttemptFinished) and isinstance(event.result, set):
                raise SagaDefinitionError("cannot store a set")
        super().record(events, durable=durable)


@pytest.mark.parametrize("mode", ["orchestrated", "choreographed"])
def test_a_result_the_journal_cannot_store_ends_its_step_and_is_compensated(
    flavour: Flavour, log: Log, mode: Mode
) -> None:
    journal = RefusingJournal()
    saga = SagaAssembler.saga(retry_attempts=3, journal=journal)
    saga.operation(
        flavour.op(log.step("a", result={1})).named("a").add_compensation(log.step("undo a"))
    )

    with pytest.raises(SagaException) as caught:
        flavour.execute(saga, mode)

    assert isinstance(caught.value.operation_error, ResultNotStored)
    assert isinstance(caught.value.operation_error, SagaDefinitionError)
    assert str(caught.value) == (
        "step 0 (action) returned what the journal refuses: cannot store a set"
    )
    assert caught.value.operation_name == "a"
    # The action ran, so it is not retried (that would repeat its effect) but undone.
    assert log.entries == ["a", "undo a"]
    assert described(journal)[1:3] == [
        ("AttemptStarted", 0, "action", 1),
        ("AttemptFinished", 0, "action", 1, "failed"),
    ]


# -- durability: what is committed before each function runs ------------------------------


def _committed(journal: InMemoryJournal, step: int, kind: StepKind, number: int) -> bool:
    """Whether the attempt's start is recorded and a durable write has come since."""
    for i, (events, _) in enumerate(journal.batches):
        if any(
            isinstance(e, AttemptStarted) and (e.step, e.kind, e.number) == (step, kind, number)
            for e in events
        ):
            return any(durable for _, durable in journal.batches[i:])
    return False


def _durable_batches(journal: InMemoryJournal) -> int:
    return sum(1 for _, durable in journal.batches if durable)


def _starts_are_in_durable_batches(journal: InMemoryJournal) -> bool:
    return all(
        durable
        for events, durable in journal.batches
        if any(isinstance(e, AttemptStarted) for e in events)
    )


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_an_orchestrated_success_costs_n_plus_one_commits(flavour: Flavour, steps: int) -> None:
    journal = InMemoryJournal()
    saga = SagaAssembler.saga(journal=journal)
    for i in range(steps):
        saga.operation(flavour.op(str, i))

    assert flavour.execute(saga) == [str(i) for i in range(steps)]

    assert _durable_batches(journal) == steps + 1
    assert _starts_are_in_durable_batches(journal)
    assert journal.batches[-1][1]


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_a_choreographed_success_costs_at_most_n_plus_two_commits(
    flavour: Flavour, steps: int
) -> None:
    journal = InMemoryJournal()
    saga = SagaAssembler.saga(journal=journal)
    for i in range(steps):
        saga.operation(flavour.op(str, i))

    assert flavour.execute(saga, "choreographed") == [str(i) for i in range(steps)]

    assert _durable_batches(journal) <= steps + 2
    assert _starts_are_in_durable_batches(journal)
    assert journal.batches[-1][1]


@pytest.mark.parametrize("mode", ["orchestrated", "choreographed"])
def test_every_attempt_is_committed_before_its_function_runs(flavour: Flavour, mode: Mode) -> None:
    journal = InMemoryJournal()
    checked: list[tuple[int, str, int, bool]] = []

    def check(fail_first: bool) -> None:
        step = current_step()
        checked.append(
            (
                step.step,
                step.kind,
                step.attempt,
                _committed(journal, step.step, step.kind, step.attempt),
            )
        )
        if fail_first and step.attempt == 1:
            raise ValueError("first attempt fails")

    saga = SagaAssembler.saga(retry_attempts=2, journal=journal)
    saga.operation(flavour.compensate(flavour.op(check, True), check, True))
    saga.operation(flavour.compensate(flavour.op(check, False), check, False))
    saga.operation(flavour.op(check, True).with_retry(attempts=1))

    with pytest.raises(SagaException):
        flavour.execute(saga, mode)

    assert sorted(checked) == [
        (0, "action", 1, True),
        (0, "action", 2, True),
        (0, "compensation", 1, True),
        (0, "compensation", 2, True),
        (1, "action", 1, True),
        (1, "compensation", 1, True),
        (2, "action", 1, True),
    ]


def test_a_backoff_is_committed_before_the_wait(flavour: Flavour, fake_sleep: FakeSleep) -> None:
    journal = InMemoryJournal()
    committed_before_wait: list[bool] = []

    def sleep(seconds: float) -> None:
        events, durable = journal.batches[-1]
        last = events[-1]
        committed_before_wait.append(
            durable and isinstance(last, AttemptFinished) and last.retry_at is not None
        )
        fake_sleep(seconds)

    async def async_sleep(seconds: float) -> None:
        sleep(seconds)

    saga = SagaAssembler.saga(
        retry=RetryPolicy(attempts=3, delay=5),
        journal=journal,
        sleep=sleep,
        async_sleep=async_sleep,
    )
    saga.operation(flavour.op(Log().failing("act", times=2)))

    flavour.execute(saga)

    assert fake_sleep.delays == [5, 5]
    assert committed_before_wait == [True, True]

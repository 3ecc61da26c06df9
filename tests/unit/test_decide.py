"""The pure decisions of micro_saga.decide, on small hand-made states."""

from __future__ import annotations

from typing import Any

import pytest

from micro_saga import Attempt, ErrorInfo, RecordedError, RetryPolicy, SagaPlan, SagaState, StepPlan
from micro_saga.context import StepKind
from micro_saga.decide import (
    BeginCompensation,
    Done,
    Finish,
    GaveUp,
    RunAttempt,
    RunSteps,
    Wait,
    compensation_targets,
    failure_report,
    on_open,
    results,
    saga_action,
    step_action,
)
from micro_saga.operation import Call
from micro_saga.plan import CrashPolicy, Mode
from micro_saga.state import AttemptFinished, AttemptStatus, SagaStatus, StatusChanged
from tests.unit.helpers import START, at

NOW = at(100)


def _call() -> Call:
    return Call(print, (), {})


def _plan(
    steps: int = 3,
    mode: Mode = "orchestrated",
    *,
    without_compensation: tuple[int, ...] = (),
    on_crash: CrashPolicy = "resume",
    max_interruptions: int = 3,
) -> SagaPlan:
    return SagaPlan(
        saga_id="s",
        name=None,
        mode=mode,
        steps=tuple(
            StepPlan(
                index=i,
                name=f"step{i}",
                action=_call(),
                compensation=None if i in without_compensation else _call(),
                retry=RetryPolicy(),
                compensation_retry=RetryPolicy(),
            )
            for i in range(steps)
        ),
        on_crash=on_crash,
        max_interruptions=max_interruptions,
    )


def _attempt(
    step: int,
    status: AttemptStatus,
    number: int = 1,
    kind: StepKind = "action",
    *,
    retry_at: float | None = None,
    result: Any = None,
    error: ErrorInfo | None = None,
) -> Attempt:
    return Attempt(
        step=step,
        kind=kind,
        number=number,
        status=status,
        started_at=START,
        finished_at=None if status == "started" else START,
        result=result,
        error=error,
        retry_at=None if retry_at is None else at(retry_at),
    )


def _state(*attempts: Attempt, status: SagaStatus = "running") -> SagaState:
    return SagaState(
        saga_id="s", name=None, status=status, created_at=START, attempts=list(attempts)
    )


def _series(*statuses: AttemptStatus, retry_at: float | None = None) -> list[Attempt]:
    """Attempts of step 0's action; the last one gets ``retry_at``."""
    last = len(statuses)
    return [
        _attempt(0, status, n, retry_at=retry_at if n == last else None)
        for n, status in enumerate(statuses, start=1)
    ]


# -- step_action --------------------------------------------------------------------------


def test_a_step_never_tried_runs_its_first_attempt() -> None:
    assert step_action([], 3, NOW) == RunAttempt(1)


def test_a_succeeded_step_is_done_with_its_last_attempt() -> None:
    attempts = [*_series("failed", retry_at=0), _attempt(0, "succeeded", 2, result="r")]

    assert step_action(attempts, 3, NOW) == Done(attempts[-1])


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        (_series("failed"), GaveUp("failed")),
        (_series("failed", retry_at=150), Wait(at(150))),
        (_series("failed", retry_at=100), RunAttempt(2)),
        (_series("failed", retry_at=50), RunAttempt(2)),
        (_series("interrupted"), RunAttempt(2)),
        (_series("interrupted", "interrupted", "failed", retry_at=99), RunAttempt(4)),
        (_series("interrupted", "interrupted", "failed"), GaveUp("failed")),
    ],
)
def test_step_action_after_a_failure_or_an_interruption(
    attempts: list[Attempt], expected: object
) -> None:
    assert step_action(attempts, 3, NOW) == expected


@pytest.mark.parametrize(
    ("max_interruptions", "interruptions", "expected"),
    [
        (0, 1, GaveUp("interrupted")),
        (1, 1, RunAttempt(2)),
        (1, 2, GaveUp("interrupted")),
        (3, 3, RunAttempt(4)),
        (3, 4, GaveUp("interrupted")),
    ],
)
def test_interruptions_have_their_own_budget(
    max_interruptions: int, interruptions: int, expected: object
) -> None:
    statuses: list[AttemptStatus] = ["interrupted"] * interruptions
    attempts = _series(*statuses)

    assert step_action(attempts, max_interruptions, NOW) == expected


def test_interruptions_count_even_between_failures() -> None:
    attempts = _series("interrupted", "failed", "interrupted", retry_at=None)
    attempts[1] = _attempt(0, "failed", 2, retry_at=0)

    assert step_action(attempts, 1, NOW) == GaveUp("interrupted")
    assert step_action(attempts, 2, NOW) == RunAttempt(4)


def test_an_attempt_in_flight_must_be_marked_before_deciding() -> None:
    with pytest.raises(RuntimeError, match="marked interrupted"):
        step_action(_series("started"), 3, NOW)


# -- saga_action --------------------------------------------------------------------------


def test_an_orchestrated_saga_runs_its_first_unfinished_step() -> None:
    plan = _plan()

    assert saga_action(plan, _state(), NOW) == RunSteps("action", (0,))
    assert saga_action(plan, _state(_attempt(0, "succeeded")), NOW) == RunSteps("action", (1,))
    retrying = _state(_attempt(0, "succeeded"), _attempt(1, "failed", retry_at=200))
    assert saga_action(plan, retrying, NOW) == RunSteps("action", (1,))


def test_a_choreographed_saga_runs_every_unfinished_step_at_once() -> None:
    plan = _plan(mode="choreographed")

    assert saga_action(plan, _state(), NOW) == RunSteps("action", (0, 1, 2))
    assert saga_action(plan, _state(_attempt(1, "succeeded")), NOW) == RunSteps("action", (0, 2))


@pytest.mark.parametrize("mode", ["orchestrated", "choreographed"])
def test_a_saga_whose_steps_all_succeeded_finishes(mode: Mode) -> None:
    state = _state(*(_attempt(i, "succeeded") for i in range(3)))

    assert saga_action(_plan(mode=mode), state, NOW) == Finish("succeeded")


@pytest.mark.parametrize("mode", ["orchestrated", "choreographed"])
def test_a_step_that_gave_up_begins_compensation(mode: Mode) -> None:
    state = _state(_attempt(0, "succeeded"), _attempt(1, "failed"))

    assert saga_action(_plan(mode=mode), state, NOW) == BeginCompensation()


def test_a_choreographed_step_that_gave_up_does_not_wait_for_one_still_in_backoff() -> None:
    # The step in backoff has done nothing to undo; what gave up cannot succeed any more.
    state = _state(_attempt(0, "failed", retry_at=200), _attempt(1, "failed"))

    assert saga_action(_plan(mode="choreographed"), state, NOW) == BeginCompensation()


def test_compensating_orchestrated_undoes_the_last_completed_step_first() -> None:
    plan = _plan()
    done = [_attempt(0, "succeeded"), _attempt(1, "succeeded"), _attempt(2, "failed")]

    state = _state(*done, status="compensating")
    assert saga_action(plan, state, NOW) == RunSteps("compensation", (1,))
    state = _state(*done, _attempt(1, "succeeded", kind="compensation"), status="compensating")
    assert saga_action(plan, state, NOW) == RunSteps("compensation", (0,))


def test_compensating_choreographed_undoes_every_completed_step_at_once() -> None:
    done = [_attempt(0, "succeeded"), _attempt(1, "failed"), _attempt(2, "succeeded")]

    state = _state(*done, status="compensating")
    assert saga_action(_plan(mode="choreographed"), state, NOW) == RunSteps("compensation", (2, 0))


@pytest.mark.parametrize("mode", ["orchestrated", "choreographed"])
def test_compensating_goes_on_past_a_compensation_that_gave_up(mode: Mode) -> None:
    plan = _plan(mode=mode)
    done = [_attempt(0, "succeeded"), _attempt(1, "succeeded"), _attempt(2, "failed")]
    gave_up = _attempt(1, "failed", kind="compensation")

    state = _state(*done, gave_up, status="compensating")
    assert saga_action(plan, state, NOW) == RunSteps("compensation", (0,))
    undone = _attempt(0, "succeeded", kind="compensation")
    state = _state(*done, gave_up, undone, status="compensating")
    assert saga_action(plan, state, NOW) == Finish("failed")


def test_compensating_finishes_compensated_when_every_compensation_succeeded() -> None:
    state = _state(
        _attempt(0, "succeeded"),
        _attempt(1, "failed"),
        _attempt(0, "succeeded", kind="compensation"),
        status="compensating",
    )

    assert saga_action(_plan(), state, NOW) == Finish("compensated")


@pytest.mark.parametrize("status", ["succeeded", "compensated", "failed"])
def test_a_finished_saga_stays_finished(status: SagaStatus) -> None:
    assert saga_action(_plan(), _state(status=status), NOW) == Finish(status)


# -- compensation_targets -----------------------------------------------------------------


def test_compensation_targets_are_completed_or_interrupted_steps_last_first() -> None:
    plan = _plan(6, without_compensation=(4,))
    state = _state(
        _attempt(0, "succeeded"),
        _attempt(1, "failed"),  # did nothing to undo
        _attempt(2, "interrupted"),  # may have done something
        _attempt(3, "failed", retry_at=0),
        _attempt(3, "succeeded", 2),  # succeeded on retry
        _attempt(4, "succeeded"),  # has no compensation
        # step 5 never started
    )

    assert compensation_targets(plan, state) == [3, 2, 0]


def test_nothing_to_compensate_when_nothing_completed() -> None:
    assert compensation_targets(_plan(), _state(_attempt(0, "failed"))) == []


# -- on_open ------------------------------------------------------------------------------


def test_on_open_marks_every_attempt_in_flight_interrupted() -> None:
    prior = _state(
        _attempt(0, "succeeded"),
        _attempt(1, "started"),
        _attempt(0, "started", kind="compensation"),
        status="compensating",
    )

    assert on_open(_plan(), prior, NOW) == [
        AttemptFinished(saga_id="s", step=1, kind="action", number=1, at=NOW, status="interrupted"),
        AttemptFinished(
            saga_id="s", step=0, kind="compensation", number=1, at=NOW, status="interrupted"
        ),
    ]


def test_on_open_starts_compensating_a_running_saga_whose_policy_is_to_roll_back() -> None:
    plan = _plan(on_crash="compensate")
    prior = _state(_attempt(0, "succeeded"), _attempt(1, "started"))

    events = on_open(plan, prior, NOW)

    assert events[-1] == StatusChanged(saga_id="s", status="compensating", at=NOW)
    assert len(events) == 2


def test_on_open_leaves_the_status_of_a_resumed_or_already_compensating_saga() -> None:
    assert on_open(_plan(), _state(_attempt(0, "succeeded")), NOW) == []
    compensating = _state(_attempt(0, "succeeded"), status="compensating")
    assert on_open(_plan(on_crash="compensate"), compensating, NOW) == []


@pytest.mark.parametrize("status", ["succeeded", "compensated", "failed"])
def test_on_open_changes_nothing_in_a_finished_saga(status: SagaStatus) -> None:
    prior = _state(_attempt(0, "started"), status=status)

    assert on_open(_plan(on_crash="compensate"), prior, NOW) == []


# -- results and the failure report -------------------------------------------------------


def test_results_are_each_steps_last_result_in_operation_order() -> None:
    state = _state(
        _attempt(1, "succeeded", result="b"),
        _attempt(0, "failed", retry_at=0),
        _attempt(0, "succeeded", 2, result="a"),
    )

    assert results(_plan(2), state) == ["a", "b"]


def test_the_failure_report_is_built_from_the_journal_alone() -> None:
    state = _state(
        _attempt(0, "succeeded"),
        _attempt(1, "succeeded"),
        _attempt(2, "failed", error=ErrorInfo(type="KeyError", message="'gone'")),
        _attempt(1, "succeeded", kind="compensation", result="undone 1"),
        _attempt(0, "failed", kind="compensation", error=ErrorInfo(type="E", message="stuck")),
        status="failed",
    )

    report = failure_report(_plan(), state, NOW)

    assert isinstance(report.operation_error, RecordedError)
    assert report.operation_error.error_type == "KeyError"
    assert str(report) == "'gone'"
    assert report.operation_name == "step2"
    assert report.compensation_success_result == ["undone 1"]
    assert report.compensation_errors == ["stuck"]
    assert (report.saga_id, report.status) == ("s", "failed")

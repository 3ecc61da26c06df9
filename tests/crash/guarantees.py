"""DESIGN.md section 6, checked for one saga against its ledger and its journal.

``violations`` compares what the journal and the ledger held at the kill (read by the test
before recovery) with what they hold after recovery, and returns every broken guarantee as a
sentence (an empty list when all hold), so that a failing case says all that went wrong.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tests.crash.harness import FINAL, SagaView

__all__ = ["STEPS", "Case", "violations"]

STEPS = 3
KINDS = ("action", "compensation")
#: the error type a step told to fail records (tests.crash.steps.StepFailed)
STEP_FAILED = "tests.crash.steps.StepFailed"
#: SagaAssembler's default: interrupted attempts a step may have before it gives up
MAX_INTERRUPTIONS = 3

LedgerCounts = Counter[tuple[str, str, int]]


@dataclass(frozen=True, slots=True)
class Case:
    """One saga of the matrix: where its process was killed, and how it was built."""

    saga_id: str
    kill: str
    on_crash: str = "resume"
    fail_step: int = -1
    #: the final status, when the configuration alone does not tell (a budget ran out)
    expect: str | None = None

    def expected_status(self, at_kill: SagaView) -> str:
        if self.expect is not None:
            return self.expect
        if at_kill.status in FINAL:
            return at_kill.status
        if at_kill.status == "compensating":
            return "compensated"
        if self.on_crash == "compensate":
            # Every action had succeeded: nothing is half done, so the saga just finishes
            # (micro_saga.decide.on_open) instead of undoing a complete operation.
            done = all("succeeded" in at_kill.statuses("action", s) for s in range(STEPS))
            return "succeeded" if done else "compensated"
        return "compensated" if self.fail_step >= 0 else "succeeded"


def violations(
    case: Case,
    before: SagaView | None,
    after: SagaView | None,
    led_before: LedgerCounts,
    led_after: LedgerCounts,
    *,
    recoveries: int = 1,
) -> list[str]:
    """Every guarantee of section 6 this saga's recovery broke.

    ``recoveries`` is how many recovery processes ran the saga since the kill: each may run a
    step that was in flight once more (retries after an exception come on top).
    """
    found: list[str] = []
    if before is None:
        # Killed before its first commit: no journal, so no step may have run.
        if after is not None:
            found.append(f"appeared in the journal after recovery ({after.status})")
        if led_after:
            found.append(f"side effects without a journal: {dict(led_after)}")
        return found
    if after is None:
        return ["(1) lost: the saga vanished from the journal"]
    _nothing_lost(case, before, after, found)
    _never_rerun(before, after, led_before, led_after, recoveries, found)
    _ledger_matches_journal(after, led_after, found)
    if after.status == "compensated":
        _compensated_where_needed(after, led_after, found)
    elif after.status == "succeeded":
        _succeeded_cleanly(after, led_after, found)
    if case.on_crash == "compensate" and before.status == "running":
        _rolled_back_not_resumed(before, after, led_before, led_after, found)
    return found


def _nothing_lost(case: Case, before: SagaView, after: SagaView, found: list[str]) -> None:
    expected = case.expected_status(before)
    if after.status != expected:
        found.append(f"(1) status {after.status!r} after recovery, expected {expected!r}")
    if after.parked:
        found.append("(1) the saga was parked")
    if before.status in FINAL and after.shape() != before.shape():
        found.append("a finished saga's journal changed during recovery")


def _never_rerun(
    before: SagaView,
    after: SagaView,
    led_before: LedgerCounts,
    led_after: LedgerCounts,
    recoveries: int,
    found: list[str],
) -> None:
    for kind in KINDS:
        for step in range(STEPS):
            more = led_after["begin", kind, step] - led_before["begin", kind, step]
            retried = led_after["fail", kind, step] - led_before["fail", kind, step]
            journaled = before.statuses(kind, step)
            if "succeeded" in journaled and more:
                found.append(
                    f"(2) {kind} {step} ran {more} more time(s) although its success was "
                    "in the journal at the kill"
                )
            if more - retried > recoveries:
                found.append(
                    f"(2) {kind} {step} ran {more} more times after the kill, {retried} of them "
                    f"failed: more than once again per recovery ({recoveries})"
                )
            now = after.statuses(kind, step)
            if now[: len(journaled)] != tuple(
                "interrupted" if s == "started" else s for s in journaled
            ):
                found.append(
                    f"(2) {kind} {step}: attempts {journaled} at the kill became {now}: "
                    "in-flight attempts must be recorded 'interrupted', the rest kept"
                )
            if "started" in now:
                found.append(f"(2) {kind} {step} still has an attempt in flight: {now}")


def _ledger_matches_journal(after: SagaView, led: LedgerCounts, found: list[str]) -> None:
    """Every call had its started record first; every success and failure was a real call."""
    for kind in KINDS:
        for step in range(STEPS):
            statuses = after.statuses(kind, step)
            calls, ends, fails = (led[e, kind, step] for e in ("begin", "end", "fail"))
            if calls > len(statuses):
                found.append(
                    f"{kind} {step} was called {calls} times but the journal has only "
                    f"{len(statuses)} attempts: a call without its started record"
                )
            if ends < statuses.count("succeeded") or fails < statuses.count("failed"):
                found.append(
                    f"{kind} {step}: journal {statuses} but the ledger has {ends} ends, "
                    f"{fails} failures"
                )


def _compensated_where_needed(after: SagaView, led: LedgerCounts, found: list[str]) -> None:
    for step in range(STEPS):
        actions = after.statuses("action", step)
        compensations = after.statuses("compensation", step)
        needed = any(s in ("succeeded", "interrupted") for s in actions)
        if needed:
            if compensations.count("succeeded") != 1 or compensations[-1] != "succeeded":
                found.append(
                    f"(3) step {step} (action {actions}) must be compensated once, "
                    f"compensations {compensations}"
                )
            if led["end", "compensation", step] < 1:
                found.append(f"(3) step {step} was not really compensated (no ledger line)")
        elif compensations or led["begin", "compensation", step]:
            found.append(
                f"(3) step {step} (action {actions}) needs no compensation but got "
                f"{compensations} / {led['begin', 'compensation', step]} calls"
            )
        if not actions and (led["begin", "action", step] or led["begin", "compensation", step]):
            found.append(f"(3) step {step} never started but has side effects")
    expected = expected_error(after)
    if after.error_type != expected:
        found.append(f"error type {after.error_type!r}, expected {expected!r}")


def expected_error(after: SagaView) -> str:
    """The error a rolled-back saga records: the first step that gave up, else the crash."""
    for step in range(STEPS):
        actions = after.statuses("action", step)
        if actions and actions[-1] == "failed":
            return STEP_FAILED
        if actions.count("interrupted") > MAX_INTERRUPTIONS and actions[-1] == "interrupted":
            return "StepInterrupted"
    return "SagaCrashed"


def _succeeded_cleanly(after: SagaView, led: LedgerCounts, found: list[str]) -> None:
    for step in range(STEPS):
        actions = after.statuses("action", step)
        if actions.count("succeeded") != 1 or actions[-1] != "succeeded":
            found.append(f"action {step} of a succeeded saga has attempts {actions}")
        if led["end", "action", step] < 1:
            found.append(f"action {step} of a succeeded saga has no side effect")
        if after.statuses("compensation", step) or led["begin", "compensation", step]:
            found.append(f"step {step} of a succeeded saga was compensated")


def _rolled_back_not_resumed(
    before: SagaView,
    after: SagaView,
    led_before: LedgerCounts,
    led_after: LedgerCounts,
    found: list[str],
) -> None:
    for step in range(STEPS):
        new_attempts = len(after.statuses("action", step)) - len(before.statuses("action", step))
        new_calls = led_after["begin", "action", step] - led_before["begin", "action", step]
        if new_attempts or new_calls:
            found.append(
                f"(4) on_crash='compensate' but action {step} ran again after the crash "
                f"({new_attempts} attempts, {new_calls} calls)"
            )

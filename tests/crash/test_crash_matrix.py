"""The crash matrix: a 3-step saga's process SIGKILLed at every journal boundary, recovered by a
new process, and DESIGN.md section 6 checked against the ledger of real side effects.

``test_kill_at_every_boundary``, for each configuration (orchestrated or choreographed; sync or
async steps; a saga that succeeds or one whose step 3 raises; ``on_crash`` resume or
compensate): a clean run counts the saga's commits N; then one child per boundary is killed just
before and just after each of the N commits (every started and finished record of the actions
and compensations, and the saga's final record), and inside each action and each compensation
the clean run called. The killed sagas share one database; one recovery process recovers them
all and each saga is checked (``tests.crash.guarantees``) against what the journal and the
ledger held at its kill. A restarted worker (same worker id) takes its sagas back at once (6.6);
for ``on_crash="compensate"`` the recovery worker has another id, so it must first find nothing
(the leases are live), then, moved past their expiry with freezegun, recover them all.

Then: the recovery process itself killed at each of its commits; the caller rerunning the same
saga id instead of a recovery pass; both budgets (a step or a compensation that kills its
process every time; a crash that must not use up a retry attempt); and a durable backoff that
survives the crash.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.crash.guarantees import MAX_INTERRUPTIONS, Case, violations
from tests.crash.harness import FINAL, Lanes, Ledger, Result, SagaView, journal, wait_until

pytestmark = pytest.mark.crash

#: the worker id of the processes that run (and die)
WORKER = "crash-worker"
#: another service instance, which must wait for the leases
OTHER = "crash-other"
LEASE = 300.0


@dataclass(frozen=True, slots=True)
class Config:
    mode: str
    flavor: str
    fail: bool
    on_crash: str

    def __str__(self) -> str:
        outcome = "fail3" if self.fail else "ok"
        return f"{self.mode[:5]}-{self.flavor}-{outcome}-{self.on_crash}"

    @property
    def fail_step(self) -> int:
        return 2 if self.fail else -1

    @property
    def recovery_worker(self) -> str:
        return OTHER if self.on_crash == "compensate" else WORKER


CONFIGS = [
    Config(mode, flavor, fail, on_crash)
    for mode in ("orchestrated", "choreographed")
    for flavor in ("sync", "async")
    for fail in (False, True)
    for on_crash in ("resume", "compensate")
]


def run_argv(url: str, ledger: Path, config: Config, saga_id: str, *extra: str) -> list[str]:
    return [
        "run",
        url,
        "--worker",
        WORKER,
        "--lease",
        str(LEASE),
        "--ledger",
        str(ledger),
        "--saga-id",
        saga_id,
        "--mode",
        config.mode,
        "--flavor",
        config.flavor,
        "--on-crash",
        config.on_crash,
        "--fail-step",
        str(config.fail_step),
        *extra,
    ]


def recover_argv(url: str, worker: str, *extra: str, lease: float = 5.0) -> list[str]:
    return ["recover", url, "--worker", worker, "--lease", str(lease), *extra]


def kill_points(commits: int, clean: Ledger) -> list[tuple[str, list[str]]]:
    """(saga id, child arguments) for every boundary of a run that makes ``commits`` commits."""
    points = [
        (f"{when}-commit-{n}", ["--kill-commit", str(n), "--kill-when", when])
        for n in range(1, commits + 1)
        for when in ("before", "after")
    ]
    steps = sorted({(e.kind, e.step) for e in clean.entries if e.event == "begin"})
    points += [(f"in-{kind}-{step}", ["--kill-in", f"{kind}:{step}"]) for kind, step in steps]
    return points


def report_of(result: Result) -> dict[str, Any]:
    reports: list[dict[str, Any]] = result.output()["reports"]
    assert len(reports) == 1
    return reports[0]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_kill_at_every_boundary(config: Config, url: str, lanes: Lanes, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"

    clean = lanes.run(run_argv(url, ledger, config, "clean"))
    output = clean.output()
    commits = output["commits"]
    assert output["journal_commits"] == commits  # our listener sees every journal commit
    assert output["outcome"] == ("compensated" if config.fail else "succeeded")
    clean_journal = journal(url)["clean"]

    points = kill_points(commits, Ledger.read(ledger))
    results = lanes.run_all([run_argv(url, ledger, config, sid, *args) for sid, args in points])
    for result in results:
        assert result.killed, result.describe()

    at_kill = journal(url)
    ledger_at_kill = Ledger.read(ledger)
    unfinished = {sid for sid, view in at_kill.items() if view.status not in FINAL}
    assert unfinished, "no kill left a saga unfinished"
    if config.mode == "orchestrated":
        _boundaries_are_distinct(at_kill, commits)

    # An async service recovers with recover_async; a sync one with recover.
    flavor = ["--use-async"] if config.flavor == "async" else []
    if config.recovery_worker == OTHER:
        # Another worker may not take sagas whose leases are live ...
        idle = report_of(lanes.run(recover_argv(url, OTHER, *flavor)))
        assert not any(idle.values()), idle
        assert _shapes(journal(url)) == _shapes(at_kill)
        # ... until they expire.
        travel = ("--time-travel", str(2 * LEASE))
        recovery = lanes.run(recover_argv(url, OTHER, *flavor, *travel))
    else:
        recovery = lanes.run(recover_argv(url, WORKER, *flavor))
    report = report_of(recovery)

    assert sorted(report["succeeded"] + report["compensated"]) == sorted(unfinished), report
    assert report["failed"] == report["skipped"] == [], report
    assert report["parked"] == report["errors"] == {}, report
    after = journal(url)
    ledger_after = Ledger.read(ledger)
    assert after["clean"].shape() == clean_journal.shape()
    broken = {
        sid: problems
        for sid, _ in points
        if (
            problems := violations(
                Case(sid, sid, config.on_crash, config.fail_step),
                at_kill.get(sid),
                after.get(sid),
                ledger_at_kill.of(sid),
                ledger_after.of(sid),
            )
        )
    }
    assert not broken, _explain(broken, at_kill, after)


def _shapes(views: dict[str, SagaView]) -> dict[str, Any]:
    return {sid: view.shape() for sid, view in views.items()}


def _boundaries_are_distinct(at_kill: dict[str, SagaView], commits: int) -> None:
    """Orchestrated runs are deterministic: the journal after commit k is the journal before
    commit k + 1, and differs from the journal before commit k (the kill points are real)."""
    shape = {sid: view.shape() for sid, view in at_kill.items()}
    for n in range(1, commits + 1):
        assert shape[f"after-commit-{n}"] != shape.get(f"before-commit-{n}"), n
        if n < commits:
            assert shape[f"after-commit-{n}"] == shape[f"before-commit-{n + 1}"], n
    assert "before-commit-1" not in shape  # killed before its first commit: not journaled


def _explain(
    broken: dict[str, list[str]], at_kill: dict[str, SagaView], after: dict[str, SagaView]
) -> str:
    lines = []
    for sid, problems in broken.items():
        lines.append(f"killed at {sid}:")
        lines.extend(f"    {p}" for p in problems)
        for name, views in (("at kill", at_kill), ("after", after)):
            view = views.get(sid)
            lines.append(f"    journal {name}: {None if view is None else view.shape()}")
    return "\n".join(lines)


# -- the caller restarts and runs the same saga id again -----------------------------------------

RERUN_CONFIGS = [
    Config("orchestrated", "sync", fail=False, on_crash="resume"),
    Config("choreographed", "sync", fail=True, on_crash="resume"),
]


@pytest.mark.parametrize("config", RERUN_CONFIGS, ids=str)
def test_rerun_of_the_same_saga_id_resumes(
    config: Config, url: str, lanes: Lanes, tmp_path: Path
) -> None:
    """Instead of a recovery pass, the restarted service retries the request with the same saga
    id: the saga must resume where the journal left it, never run twice (DESIGN.md 3)."""
    ledger = tmp_path / "ledger"
    clean = lanes.run(run_argv(url, ledger, config, "clean")).output()
    points = kill_points(clean["commits"], Ledger.read(ledger))
    results = lanes.run_all([run_argv(url, ledger, config, sid, *args) for sid, args in points])
    assert all(r.killed for r in results), [r.describe() for r in results if not r.killed]
    at_kill, ledger_at_kill = journal(url), Ledger.read(ledger)

    reruns = lanes.run_all([run_argv(url, ledger, config, sid) for sid, _ in points])

    after, ledger_after = journal(url), Ledger.read(ledger)
    broken: dict[str, list[str]] = {}
    for (sid, _), rerun in zip(points, reruns, strict=True):
        problems = []
        if rerun.output()["outcome"] != after[sid].status:
            problems.append(
                f"the rerun said {rerun.output()['outcome']}, the journal {after[sid].status}"
            )
        if sid in at_kill:
            problems += violations(
                Case(sid, sid, config.on_crash, config.fail_step),
                at_kill[sid],
                after[sid],
                ledger_at_kill.of(sid),
                ledger_after.of(sid),
            )
        elif after[sid].shape() != after["clean"].shape():
            problems.append(
                "never journaled before the kill, but the rerun differs from a clean run"
            )
        if problems:
            broken[sid] = problems
    assert not broken, _explain(broken, at_kill, after)


# -- the recovery process itself killed at every boundary --------------------------------------

RECOVERY_CONFIGS = [
    Config("orchestrated", "sync", fail=True, on_crash="resume"),
    Config("choreographed", "async", fail=False, on_crash="compensate"),
]


@pytest.mark.parametrize("config", RECOVERY_CONFIGS, ids=str)
def test_recovery_killed_at_every_boundary(
    config: Config, url: str, lanes: Lanes, tmp_path: Path
) -> None:
    """The first process dies inside step 2; the recovery process then dies at each of its own
    commits (claim, interrupted records, compensations...); a third process finishes the job.

    Cases run one after another in one database, so each recovery has exactly one saga to do.
    """
    ledger = tmp_path / "ledger"
    first_kill = ("--kill-in", "action:1")
    flavor = ["--use-async"] if config.flavor == "async" else []
    recover = recover_argv(url, WORKER, *flavor, lease=LEASE)  # no heartbeat commit meanwhile

    assert lanes.run(run_argv(url, ledger, config, "measure", *first_kill)).killed
    commits = lanes.run(recover).output()["commits"]
    assert commits >= 3
    broken: dict[str, list[str]] = {}
    for n in range(1, commits + 1):
        for when in ("before", "after"):
            sid = f"{when}-recovery-commit-{n}"
            assert lanes.run(run_argv(url, ledger, config, sid, *first_kill)).killed
            at_first, ledger_first = journal(url)[sid], Ledger.read(ledger).of(sid)
            assert lanes.run([*recover, "--kill-commit", str(n), "--kill-when", when]).killed
            at_second, ledger_second = journal(url)[sid], Ledger.read(ledger).of(sid)
            third = report_of(lanes.run(recover))
            finished = third["succeeded"] + third["compensated"]
            assert finished == ([] if at_second.status in FINAL else [sid]), (sid, third)
            final, ledger_final = journal(url)[sid], Ledger.read(ledger).of(sid)
            case = Case(sid, sid, config.on_crash, config.fail_step)
            problems = violations(case, at_first, final, ledger_first, ledger_final, recoveries=2)
            if at_second.status not in FINAL:
                problems += violations(case, at_second, final, ledger_second, ledger_final)
            if problems:
                broken[sid] = problems
    assert not broken, broken


# -- budgets: a step that kills its process every time -----------------------------------------


def _recover_until_final(lanes: Lanes, url: str, *extra: str, cap: int = 10) -> list[Result]:
    """Recovery processes one after another, as restarts would, until one ends normally."""
    rounds: list[Result] = []
    for _ in range(cap):
        result = lanes.run(recover_argv(url, WORKER, *extra))
        rounds.append(result)
        if not result.killed:
            return rounds
    raise AssertionError(f"still crashing after {cap} recoveries: no budget stopped the loop")


BUDGET_CONFIGS = [
    Config("orchestrated", "sync", fail=False, on_crash="resume"),
    Config("choreographed", "async", fail=False, on_crash="resume"),
]


@pytest.mark.parametrize("config", BUDGET_CONFIGS, ids=str)
def test_step_that_always_crashes_is_compensated(
    config: Config, url: str, lanes: Lanes, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    crash = ("--kill-in", "action:1")
    assert lanes.run(run_argv(url, ledger, config, "doomed", *crash)).killed
    at_kill, ledger_at_kill = journal(url)["doomed"], Ledger.read(ledger)

    rounds = _recover_until_final(lanes, url, *crash)

    # The first run and MAX_INTERRUPTIONS recoveries die in step 2; the next one gives up.
    assert [r.killed for r in rounds] == [True] * MAX_INTERRUPTIONS + [False]
    assert report_of(rounds[-1])["compensated"] == ["doomed"]
    after, ledger_after = journal(url)["doomed"], Ledger.read(ledger)
    assert after.statuses("action", 1) == ("interrupted",) * (MAX_INTERRUPTIONS + 1)
    assert ledger_after.of("doomed")["begin", "action", 1] == MAX_INTERRUPTIONS + 1
    assert after.error_type == "StepInterrupted"
    problems = violations(
        Case("doomed", "always in action 1", config.on_crash, expect="compensated"),
        at_kill,
        after,
        ledger_at_kill.of("doomed"),
        ledger_after.of("doomed"),
        recoveries=len(rounds),
    )
    assert not problems, problems


def test_compensation_that_always_crashes_ends_failed(
    url: str, lanes: Lanes, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    config = Config("orchestrated", "sync", fail=True, on_crash="resume")
    crash = ("--kill-in", "compensation:1")
    assert lanes.run(run_argv(url, ledger, config, "stuck", *crash)).killed

    rounds = _recover_until_final(lanes, url, *crash)

    assert [r.killed for r in rounds] == [True] * MAX_INTERRUPTIONS + [False]
    assert report_of(rounds[-1])["failed"] == ["stuck"]
    after = journal(url)["stuck"]
    counts = Ledger.read(ledger).of("stuck")
    assert after.status == "failed"  # a person must look: nothing was dropped
    assert after.statuses("compensation", 1) == ("interrupted",) * (MAX_INTERRUPTIONS + 1)
    assert counts["begin", "compensation", 1] == MAX_INTERRUPTIONS + 1
    # The other compensation still ran, once; the step that raised is not compensated.
    assert after.statuses("compensation", 0) == ("succeeded",)
    assert counts["begin", "compensation", 0] == counts["end", "compensation", 0] == 1
    assert after.statuses("action", 2) == ("failed",)
    assert after.statuses("compensation", 2) == ()
    assert counts["begin", "compensation", 2] == 0


def test_crash_does_not_use_up_retry_attempts(url: str, lanes: Lanes, tmp_path: Path) -> None:
    """Attempts: interrupted (the crash), failed (an exception), succeeded: with two
    attempts allowed, the crash must not have counted as one of them."""
    ledger = tmp_path / "ledger"
    config = Config("orchestrated", "sync", fail=False, on_crash="resume")
    argv = run_argv(url, ledger, config, "flaky", "--attempts", "2", "--kill-in", "action:1")
    assert lanes.run(argv).killed
    at_kill, ledger_at_kill = journal(url)["flaky"], Ledger.read(ledger)

    report = report_of(lanes.run(recover_argv(url, WORKER, "--raise-once-in", "action:1")))

    assert report["succeeded"] == ["flaky"]
    after = journal(url)["flaky"]
    assert after.statuses("action", 1) == ("interrupted", "failed", "succeeded")
    problems = violations(
        Case("flaky", "in action 1", config.on_crash),
        at_kill,
        after,
        ledger_at_kill.of("flaky"),
        Ledger.read(ledger).of("flaky"),
    )
    assert not problems, problems


def test_backoff_under_way_survives_the_crash(url: str, lanes: Lanes, tmp_path: Path) -> None:
    """A step failed and its process died during the hour's backoff: recovery waits out the
    hour (it does not retry at once), then retries."""
    ledger = tmp_path / "ledger"
    config = Config("orchestrated", "sync", fail=False, on_crash="resume")
    argv = run_argv(url, ledger, config, "nap", "--attempts", "2", "--delay", "3600")
    running = lanes.start([*argv, "--raise-once-in", "action:1"])
    try:
        wait_until(lambda: _retry_at(url, "nap") is not None, "the durable backoff")
    finally:
        os.kill(running.pid, signal.SIGKILL)  # our child, asleep in its backoff
    assert lanes.wait(running).killed
    ledger_at_kill = Ledger.read(ledger)

    # A recovery that ignored the backoff would sleep in it: give up on it early.
    early = report_of(lanes.run(recover_argv(url, WORKER), timeout=20))
    assert early["waiting"] == ["nap"]
    assert not early["succeeded"]
    assert Ledger.read(ledger) == ledger_at_kill  # nothing ran before its time

    late = report_of(lanes.run(recover_argv(url, WORKER, "--time-travel", "3601")))
    assert late["succeeded"] == ["nap"]
    assert journal(url)["nap"].statuses("action", 1) == ("failed", "succeeded")


def _retry_at(url: str, saga_id: str) -> Any:
    view = journal(url).get(saga_id)
    tries: Sequence[Any] = () if view is None else view.attempts.get(("action", 1), ())
    return tries[0].retry_at if tries and tries[0].status == "failed" else None

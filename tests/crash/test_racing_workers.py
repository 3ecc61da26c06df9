"""Three recovery workers (separate processes) race over 60 abandoned sagas.

One child starts 60 sagas in threads and SIGKILLs itself once every one of them is inside step
2 (step 1 finished, step 2 in flight). Three recovery processes with different worker ids then
start together (on a barrier file), 120 s past the dead worker's leases (freezegun in each),
and run ``store.recover()`` passes until no saga is left unfinished.

The even sagas resume, the odd ones have ``on_crash="compensate"``. Checked: every saga
finished (succeeded or compensated, by its policy); each was reported by exactly one worker;
step 1 never ran again; step 2 ran exactly once more (or was compensated) and step 3 once (or
never); and no step of a saga ever ran in two workers at the same time (ledger begin/end lines
in write order, and the journal's attempt times).

The proof the issue asks for is on PostgreSQL (CI sets SAGA_TEST_POSTGRES_URL); it runs on
SQLite and MariaDB as well, since it stays quick there.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests import dbs
from tests.crash.guarantees import Case, violations
from tests.crash.harness import Lanes, Ledger, SagaView, journal, wait_until

pytestmark = pytest.mark.crash

SAGAS = 60
WORKERS = ("racer-1", "racer-2", "racer-3")
VICTIM = "victim"
#: each step call of the racers lasts this long, so that two parallel runs would overlap
WORK_SECONDS = 0.01


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> dbs.Backend:
    """Every backend is listed, so that a missing PostgreSQL shows as a skip with its reason."""
    name: dbs.Backend = request.param
    if name not in dbs.active_backends():
        why = f"{dbs.BACKENDS_VARIABLE} leaves it out"
        if name in dbs.URL_VARIABLES and not os.environ.get(dbs.URL_VARIABLES[name]):
            why = f"{dbs.URL_VARIABLES[name]} is unset"
        pytest.skip(f"{why}: the racing recovery workers were not run on {name}")
    return name


@pytest.mark.parametrize("backend", dbs.ALL_BACKENDS, indirect=True)
def test_racing_recovery_workers(url: str, lanes: Lanes, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    victim = _abandon(lanes, url, ledger)
    abandoned = journal(url)
    ids = sorted(abandoned)
    assert len(ids) == SAGAS
    for sid in ids:
        view = abandoned[sid]
        assert view.status == "running", sid
        assert view.statuses("action", 0) == ("succeeded",), sid
        assert view.statuses("action", 1) == ("started",), sid
        assert view.statuses("action", 2) == (), sid

    outputs = _race(lanes, url, tmp_path)

    # Each saga reported by exactly one worker, under the outcome its policy gives.
    finished_by: dict[str, list[tuple[str, str]]] = {}
    for output in outputs:
        for report in output["reports"]:
            assert report["failed"] == [], report
            assert report["parked"] == report["errors"] == {}, report
            for status in ("succeeded", "compensated"):
                for sid in report[status]:
                    finished_by.setdefault(sid, []).append((output["worker"], status))
    assert sorted(finished_by) == ids
    twice = {sid: by for sid, by in finished_by.items() if len(by) > 1}
    assert not twice, f"sagas finished by more than one worker: {twice}"

    after = journal(url)
    entries = Ledger.read(ledger)
    at_kill = Ledger.read_until(ledger, victim)
    for i, sid in enumerate(ids):
        worker, status = finished_by[sid][0]
        rolls_back = i % 2 == 1
        assert after[sid].status == status == ("compensated" if rolls_back else "succeeded")
        _ran_as_allowed(sid, after[sid], entries.of(sid), rolls_back)
        problems = violations(
            Case(sid, "in action 1", "compensate" if rolls_back else "resume"),
            abandoned[sid],
            after[sid],
            at_kill.of(sid),
            entries.of(sid),
        )
        assert not problems, (sid, problems)
        _one_worker_per_saga(sid, after[sid], worker)
    assert _overlaps(entries, victim) == []

    share = Counter(by[0][0] for by in finished_by.values())
    print(f"sagas recovered per worker: {dict(share)}")  # shown with -s


def _abandon(lanes: Lanes, url: str, ledger: Path) -> int:
    """SAGAS sagas left in step 2 by a process killed there; returns its pid."""
    argv = ["abandon", url, "--worker", VICTIM, "--lease", "30", "--ledger", str(ledger)]
    victim = lanes.run([*argv, "--count", str(SAGAS), "--compensate-odd"])
    assert victim.killed, victim.describe()
    return victim.pid


def _race(lanes: Lanes, url: str, folder: Path) -> list[dict[str, Any]]:
    """Start the recovery workers together; return what each printed."""
    go = folder / "go"
    racers = [
        lanes.start(
            [
                *("recover", url, "--worker", worker, "--lease", "30"),
                *("--time-travel", "120", "--until-done", "--passes", "100000"),
                # One saga per pass: every pass, the racers go for the same oldest saga.
                *("--limit", "1"),
                *("--work-seconds", str(WORK_SECONDS)),
                *("--ready", str(folder / f"ready-{worker}"), "--barrier", str(go)),
            ]
        )
        for worker in WORKERS
    ]
    wait_until(
        lambda: all((folder / f"ready-{w}").exists() for w in WORKERS), "the racers to be ready"
    )
    go.touch()
    results = [lanes.wait(racer) for racer in racers]
    for result in results:
        assert result.returncode == 0, result.describe()
    return [result.output() for result in results]


def _ran_as_allowed(
    sid: str, view: SagaView, runs: Counter[tuple[str, str, int]], rolls_back: bool
) -> None:
    """Step 1 finished before the kill: never again. Step 2 was in flight: once more, or
    compensated. Step 3 never started: once, or never (and never compensated)."""
    assert view.statuses("action", 0) == ("succeeded",), sid
    assert runs["begin", "action", 0] == runs["end", "action", 0] == 1, sid
    if rolls_back:
        assert view.statuses("action", 1) == ("interrupted",), sid
        assert view.statuses("action", 2) == (), sid
        assert runs["begin", "action", 1] == 1, sid  # the victim's call only
        assert runs["begin", "action", 2] == 0, sid
        for step in (0, 1):
            assert view.statuses("compensation", step) == ("succeeded",), sid
            assert runs["begin", "compensation", step] == 1, sid
        assert runs["begin", "compensation", 2] == 0, sid
    else:
        assert view.statuses("action", 1) == ("interrupted", "succeeded"), sid
        assert view.statuses("action", 2) == ("succeeded",), sid
        assert runs["begin", "action", 1] == 2, sid  # once in the victim, once more after
        assert runs["end", "action", 1] == 1, sid
        assert runs["begin", "action", 2] == runs["end", "action", 2] == 1, sid
        assert not any(kind == "compensation" for _, kind, _ in runs), sid


def _one_worker_per_saga(sid: str, view: SagaView, worker: str) -> None:
    """Recovery attempts were all made by the worker that reported the saga, one after the
    other in the journal's own times."""
    recovered = [a for key in view.attempts for a in view.attempts[key] if a.worker != VICTIM]
    assert {a.worker for a in recovered} == {worker}, (sid, recovered)
    spans = sorted((a.started_at, a.finished_at) for a in recovered)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end is not None, (sid, spans)
        assert end <= start, f"{sid}: attempts overlap in time: {spans}"


def _overlaps(entries: Ledger, victim_pid: int) -> list[str]:
    """Steps that began in one process while another process was still inside them.

    The ledger is appended with O_APPEND, so its order is the order of the writes. The
    victim's steps ended at its kill, before any racer started.
    """
    inside: dict[tuple[str, str, int], int] = {}
    found: list[str] = []
    for e in entries.entries:
        if e.pid == victim_pid:
            continue
        key = (e.saga, e.kind, e.step)
        if e.event == "begin":
            if key in inside:
                found.append(f"{key} began in pid {e.pid} while pid {inside[key]} was in it")
            inside[key] = e.pid
        elif inside.get(key) == e.pid:
            del inside[key]
    return found

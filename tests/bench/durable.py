"""Durable sagas against the floor: sagas/s, steps/s, commits per saga, and efficiency.

Floor and saga runs alternate in short rounds on the same engine, and the rates are pooled over
all rounds (all commits over all the time), so that a noisy neighbour (another process, the
disk's cache) weighs on both alike. Efficiency is the sagas' pooled commits per second over the
floor's; the spread of the round-by-round ratio is kept in the JSON.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from saga_store import SagaStore

from .floor import create_floor_table, measure_floor
from .report import median, pooled, ratio
from .server import server_commits
from .support import (
    MODES,
    STEPS,
    BenchDb,
    Counter,
    Mode,
    durable_saga,
    open_store,
    repeatedly,
    run_for,
    runner,
)
from .wal import wal_frames_per_commit

__all__ = ["measure_journal"]

_EXPECTED = list(range(STEPS))


def measure_journal(
    url: str, db: BenchDb, *, rounds: int, floor_seconds: float, saga_seconds: float
) -> dict[str, Any]:
    """Floor and durable sagas on a fresh, migrated database, in ``rounds`` short alternations.

    Rates are pooled over the rounds (all commits over all the time), so that a neighbour's
    burst weighs on the floor and on the sagas alike.
    """
    # No heartbeat: its lease renewals would blur the commit counts (it adds none to a saga).
    store = open_store(url, db, heartbeat=False, upgrade=True)
    try:
        create_floor_table(store.engine)
        _warm_up(store)
        floors: list[dict[str, Any]] = []
        driver_floors: list[dict[str, Any]] = []
        runs: dict[Mode, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for _ in range(rounds):
            floors.append(measure_floor(store, floor_seconds))
            driver_floors.append(measure_floor(store, floor_seconds, driver=True))
            for mode in MODES:
                runs[mode].append(_run_sagas(store, mode, saga_seconds))
        floor_rate = pooled(floors, "commits")
        driver_rate = pooled(driver_floors, "commits")
        return {
            "backend": db.backend,
            "sqlite_synchronous": db.sqlite_synchronous if db.backend == "sqlite" else None,
            "floor": {
                "commits_per_s": floor_rate,
                "commits": sum(f["commits"] for f in floors),
                "rounds": [f["commits_per_s"] for f in floors],
                "server_commits": _total([f["server_commits"] for f in floors]),
            },
            # the same one-row INSERT through the journal's driver transactions
            "driver_floor": {
                "commits_per_s": driver_rate,
                "commits": sum(f["commits"] for f in driver_floors),
                "rounds": [f["commits_per_s"] for f in driver_floors],
                "server_commits": _total([f["server_commits"] for f in driver_floors]),
            },
            "durable": {
                mode: _summary(runs[mode], floors, floor_rate, driver_rate) for mode in MODES
            },
            "wal_frames_per_commit": wal_frames_per_commit(url, db)
            if db.backend == "sqlite"
            else None,
        }
    finally:
        store.close()


def _warm_up(store: SagaStore) -> None:
    """Connections, statement caches and imports, before anything is timed."""
    for mode in MODES:
        for _ in range(20):
            results = runner(durable_saga(store), mode)()
            if results != _EXPECTED:
                raise RuntimeError(f"a {mode} saga returned {results!r}, not {_EXPECTED!r}")
    measure_floor(store, 0.2)
    measure_floor(store, 0.2, driver=True)


def _run_sagas(store: SagaStore, mode: Mode, seconds: float) -> dict[str, Any]:
    before = server_commits(store.engine)
    with Counter(store) as counter:
        sagas, elapsed = run_for(seconds, repeatedly(partial(durable_saga, store), mode))
    after = server_commits(store.engine)
    return {
        "sagas": sagas,
        "seconds": elapsed,
        "commits": counter.commits,
        "server_commits": None if before is None or after is None else after - before,
    }


def _summary(
    runs: list[dict[str, Any]],
    floors: list[dict[str, Any]],
    floor_rate: float,
    driver_rate: float,
) -> dict[str, Any]:
    sagas = sum(r["sagas"] for r in runs)
    commits = sum(r["commits"] for r in runs)
    server = [r["server_commits"] for r in runs]
    sagas_per_s = pooled(runs, "sagas")
    commits_per_s = pooled(runs, "commits")
    # each round against the floor measured just before it: how much the ratio moves
    by_round = [
        ratio(r["commits"] / r["seconds"], f["commits_per_s"])
        for r, f in zip(runs, floors, strict=True)
    ]
    return {
        "sagas": sagas,
        "sagas_per_s": sagas_per_s,
        "steps_per_s": sagas_per_s * STEPS,
        "commits_per_saga": ratio(commits, sagas),
        # the server's own count over the same runs (None on SQLite)
        "server_commits_per_saga": _ratio_or_none(_total(server), sagas),
        "commits_per_s": commits_per_s,
        "efficiency": ratio(commits_per_s, floor_rate),
        "efficiency_vs_driver_floor": ratio(commits_per_s, driver_rate),
        "efficiency_by_round": {
            "min": min(by_round),
            "median": median(by_round),
            "max": max(by_round),
        },
    }


def _total(counts: list[int | None]) -> int | None:
    return None if None in counts else sum(c for c in counts if c is not None)


def _ratio_or_none(part: int | None, whole: int) -> float | None:
    return None if part is None else ratio(part, whole)

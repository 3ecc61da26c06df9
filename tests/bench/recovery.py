"""Recovery of abandoned sagas: one worker process, then four started together.

The abandoned sagas are written straight into the store's tables, through its own plan codec,
exactly as a crash leaves them: the saga row ``running`` with its plan and an expired lease held
by a dead worker, and the first step's attempt ``started`` with no finish. (A real crash leaves
the same rows: the first commit of an orchestrated saga is the saga row with step 1's start.)

Each worker is a process of its own (``python -m tests.bench.recovery``) with its own SagaStore
and worker id; all connect first, then start on the same signal, and each runs one
``recover()`` pass. Their statements and commits are counted with SQLAlchemy events.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from micro_saga import clock
from saga_store import SagaStore
from saga_store.codec import encode_plan
from saga_store.tables import attempts, sagas

from .report import ratio
from .support import BenchDb, Counter, durable_saga, fresh_database, open_store

__all__ = ["measure_recovery", "seed_abandoned"]

_CHUNK = 1000
_DEAD_WORKER = "crashed-worker"
_POLL = 0.005
_TIMEOUT = 900.0


def measure_recovery(db: BenchDb, *, sagas_count: int, workers: list[int]) -> dict[str, Any]:
    """For each worker count: a fresh database, ``sagas_count`` abandoned sagas, one pass each."""
    figures: dict[str, Any] = {"sagas": sagas_count}
    for count in workers:
        with fresh_database(db.backend) as url:
            store = open_store(url, db, heartbeat=False, upgrade=True)
            try:
                seed_abandoned(store, sagas_count)
                run = _recover_with(url, db, count)
                run["left_unfinished"] = _unfinished(store)
            finally:
                store.close()
        key = "one_worker" if count == 1 else "four_workers" if count == 4 else f"{count}_workers"
        figures[key] = run
    return figures


def seed_abandoned(store: SagaStore, count: int) -> None:
    """Write ``count`` sagas as a crash during their first step leaves them."""
    now = clock.utcnow()
    expired = now - timedelta(minutes=5)
    saga_rows: list[dict[str, Any]] = []
    attempt_rows: list[dict[str, Any]] = []
    with store.engine.begin() as conn:
        for i in range(count):
            plan = durable_saga(store, saga_id=f"abandoned-{i:07d}").plan("orchestrated")
            created = expired - timedelta(microseconds=count - i)
            saga_rows.append(
                {
                    "id": plan.saga_id,
                    "name": plan.name,
                    "mode": plan.mode,
                    "status": "running",
                    "on_crash": plan.on_crash,
                    "plan": encode_plan(plan, store.registry, store.serializer),
                    "created_at": created,
                    "updated_at": created,
                    "owner": _DEAD_WORKER,
                    "lease_expires_at": expired,
                    "version": 1,
                }
            )
            attempt_rows.append(
                {
                    "saga_id": plan.saga_id,
                    "step": 0,
                    "step_name": plan.steps[0].name,
                    "kind": "action",
                    "attempt": 1,
                    "status": "started",
                    "worker": _DEAD_WORKER,
                    "started_at": created,
                }
            )
            if len(saga_rows) == _CHUNK or i == count - 1:
                conn.execute(insert(sagas), saga_rows)
                conn.execute(insert(attempts), attempt_rows)
                saga_rows, attempt_rows = [], []


def _unfinished(store: SagaStore) -> int:
    with store.engine.connect() as conn:
        query = select(func.count()).select_from(sagas).where(sagas.c.status != "succeeded")
        return int(conn.execute(query).scalar_one())


def _recover_with(url: str, db: BenchDb, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="saga-bench-recovery-") as folder:
        place = Path(folder)
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.bench.recovery",
                    url,
                    db.sqlite_synchronous,
                    f"recovery-{i + 1}",
                    str(place),
                ],
            )
            for i in range(workers)
        ]
        try:
            _wait_for(
                lambda: all((place / f"recovery-{i + 1}.ready").exists() for i in range(workers))
            )
            (place / "go").touch()
            for child in children:
                child.wait(timeout=_TIMEOUT)
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        failed = [c.returncode for c in children if c.returncode != 0]
        if failed:
            raise RuntimeError(f"recovery workers exited with {failed}")
        results = [
            json.loads((place / f"recovery-{i + 1}.json").read_text()) for i in range(workers)
        ]
    recovered = sum(r["succeeded"] for r in results)
    seconds = max(r["finished"] for r in results) - min(r["started"] for r in results)
    statements: dict[str, int] = {}
    for r in results:
        for kind, n in r["statements"].items():
            statements[kind] = statements.get(kind, 0) + n
    commits = sum(r["commits"] for r in results)
    return {
        "workers": workers,
        "seconds": seconds,
        "recovered": recovered,
        "sagas_per_s": ratio(recovered, seconds),
        "per_worker": [r["succeeded"] for r in results],
        "skipped": sum(r["skipped"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "commits_per_saga": ratio(commits, recovered),
        "statements_per_saga": ratio(sum(statements.values()), recovered),
        "claim_queries_per_saga": ratio(
            statements.get("select", 0) + statements.get("claim", 0), recovered
        ),
        "statements": statements,
    }


def _wait_for(ready: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError("the recovery workers did not get ready in time")
        time.sleep(_POLL)


def _worker(url: str, synchronous: str, worker_id: str, folder: Path) -> None:
    """One recovery worker: connect, signal ready, wait for the go, run one pass, report."""
    db = BenchDb(label="worker", backend="sqlite", sqlite_synchronous="NORMAL")
    if synchronous == "FULL":
        db = BenchDb(label="worker", backend="sqlite")
    store = open_store(url, db, worker_id=worker_id)
    try:
        with store.engine.connect() as conn:  # the pool's first connection, before the clock
            conn.execute(select(func.count()).select_from(sagas)).scalar_one()
        (folder / f"{worker_id}.ready").touch()
        _wait_for((folder / "go").exists, _TIMEOUT)
        with Counter(store, statements=True) as counter:
            started = time.time()
            report = store.recover()
            finished = time.time()
        result = {
            "started": started,
            "finished": finished,
            "succeeded": len(report.succeeded),
            "skipped": len(report.skipped),
            "errors": len(report.errors),
            "commits": counter.commits,
            "statements": counter.statements,
        }
        (folder / f"{worker_id}.json").write_text(json.dumps(result))
    finally:
        store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one recovery worker of the benchmark")
    parser.add_argument("url")
    parser.add_argument("synchronous", choices=["FULL", "NORMAL"])
    parser.add_argument("worker_id")
    parser.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    _worker(args.url, args.synchronous, args.worker_id, args.folder)


if __name__ == "__main__":
    main()

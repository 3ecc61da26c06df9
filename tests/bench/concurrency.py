"""Threads running durable orchestrated sagas at once: throughput and latency per saga.

One store (one engine and pool, the store's defaults) is shared by all threads, as in a
service that runs sagas from its request handlers.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from saga_store import SagaStore

from .report import percentile
from .support import STEPS, BenchDb, durable_saga, open_store

__all__ = ["measure_concurrency"]


def measure_concurrency(
    url: str, db: BenchDb, *, threads: list[int], seconds: float
) -> list[dict[str, Any]]:
    store = open_store(url, db, upgrade=True)  # also when run alone (--only concurrency)
    try:
        durable_saga(store).orchestrator_execute()  # connect and warm the caches
        return [_measure(store, n, seconds) for n in threads]
    finally:
        store.close()


def _measure(store: SagaStore, threads: int, seconds: float) -> dict[str, Any]:
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)
    deadline: list[float] = [0.0]

    def work(mine: list[float]) -> None:
        start.wait()
        try:
            while time.perf_counter() < deadline[0]:
                began = time.perf_counter()
                durable_saga(store).orchestrator_execute()
                mine.append(time.perf_counter() - began)
        except BaseException as exc:
            errors.append(exc)

    workers = [
        threading.Thread(target=work, args=(latencies[i],), name=f"bench-{i}")
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{len(errors)} of {threads} threads failed") from errors[0]
    every = [x for mine in latencies for x in mine]
    sagas_per_s = len(every) / elapsed
    return {
        "threads": threads,
        "sagas": len(every),
        "seconds": elapsed,
        "sagas_per_s": sagas_per_s,
        "steps_per_s": sagas_per_s * STEPS,
        "p50_ms": percentile(every, 50) * 1000,
        "p99_ms": percentile(every, 99) * 1000,
    }

"""``await store.recover_async()``: the async twin of a recovery pass.

Async sagas run on the caller's event loop, sync ones in worker threads (the loop never blocks
on a step); outcomes are filed as by ``recover()``.
"""

from __future__ import annotations

import asyncio
import threading

from saga_store import RecoveryReport, Registry, SagaStore
from tests.integration.recovery_support import (
    LEASE,
    MODES,
    Script,
    crash,
    dying_process,
    frozen_at_start,
    saga_of,
    statuses,
)


def test_recover_async_runs_async_sagas_on_the_running_loop(
    db_url: str, store: SagaStore, script: Script
) -> None:
    # Per mode: an async saga to resume, a sync one to resume, an async one to roll back.
    with frozen_at_start() as frozen:
        with dying_process(db_url) as dead:
            for mode in MODES:
                a, b, c, x, y, q, r = (f"{mode}.{step}" for step in "abcxyqr")
                for label in (b, y, r):
                    script.on("act", label, "crash")
                crash(
                    saga_of(dead, [a, b, c], saga_id=f"{mode}.async", flavour="async"),
                    mode,
                    "async",
                )
                crash(saga_of(dead, [x, y], saga_id=f"{mode}.sync"), mode)
                saga = saga_of(
                    dead, [q, r], saga_id=f"{mode}.undo", flavour="async", on_crash="compensate"
                )
                crash(saga, mode, "async")
        frozen.tick(LEASE + 1)

        async def service() -> tuple[RecoveryReport, int]:
            report = await store.recover_async()
            return report, id(asyncio.get_running_loop())

        report, service_loop = asyncio.run(service())
    assert sorted(report.succeeded) == sorted(
        f"{mode}.{kind}" for mode in MODES for kind in ("async", "sync")
    )
    assert sorted(report.compensated) == sorted(f"{mode}.undo" for mode in MODES)
    assert report.skipped == report.waiting == []

    for mode in MODES:
        a, b, c, x, y, q, r = (f"{mode}.{step}" for step in "abcxyqr")
        # the async steps of recovery ran on the service's own loop
        assert [call.loop for call in script.of("act", b)[1:]] == [service_loop], mode
        undos = script.of("undo", q) + script.of("undo", r)
        assert {call.loop for call in undos} == {service_loop}, mode
        # the sync ones in worker threads, off the loop
        recovered_y = script.of("act", y)[1:]
        assert len(recovered_y) == 1, mode
        assert recovered_y[0].loop is None, mode
        assert recovered_y[0].thread != threading.main_thread().name, mode

        resumed = store.get(f"{mode}.async")
        assert resumed.results == [f"act {a}", f"act {b}", f"act {c}"], mode
        assert statuses(resumed, "action", 1) == ["interrupted", "succeeded"], mode
        assert store.get(f"{mode}.sync").results == [f"act {x}", f"act {y}"], mode
        undone = store.get(f"{mode}.undo")
        assert undone.status == "compensated", mode
        assert statuses(undone, "compensation", 0) == ["succeeded"], mode
        assert statuses(undone, "compensation", 1) == ["succeeded"], mode
        assert script.count("act", a) == script.count("act", x) == script.count("act", q) == 1


def test_recover_async_parks_and_waits_like_recover(
    db_url: str, store: SagaStore, script: Script
) -> None:
    script.on("act", "a", "crash")
    with frozen_at_start() as frozen:
        with dying_process(db_url) as dead:
            crash(saga_of(dead, ["a"], saga_id="early", flavour="async"), flavour="async")
        with SagaStore(db_url, registry=Registry(), heartbeat=False) as bare:
            # a live lease: not this pass's business
            assert asyncio.run(bare.recover_async()).summary() == "nothing to recover"
            frozen.tick(LEASE + 1)
            parked = asyncio.run(bare.recover_async())
            assert list(parked.parked) == ["early"]
            assert asyncio.run(bare.recover_async()).summary() == "nothing to recover"
        done = asyncio.run(store.recover_async())  # this process's first pass
    assert done.succeeded == ["early"]
    assert store.get("early").parked_at is None
    assert script.count("act", "a") == 2

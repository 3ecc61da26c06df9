"""Recovery loops for long-running services: a thread, and its asyncio twin."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable

from micro_saga.errors import SagaDefinitionError

from .recovery import RecoveryReport

__all__ = ["AsyncRecoveryLoop", "RecoveryLoop"]

log = logging.getLogger("saga_store")


def _log_pass(report: RecoveryReport) -> None:
    if report:
        log.info("recovery pass: %s", report.summary())
    for saga_id, error in report.parked.items():
        log.error("saga %s parked: %s", saga_id, error)


class RecoveryLoop:
    """Runs a recovery pass at once, then every ``interval`` seconds, until stopped.

    A failing pass (say, the database is briefly unreachable) is logged and retried on the
    next tick; the loop does not die.
    """

    def __init__(self, recover: Callable[[], RecoveryReport], interval: float) -> None:
        if interval <= 0:
            raise SagaDefinitionError(f"interval must be > 0 seconds, got {interval!r}")
        self.interval = interval
        self.passes = 0
        self._recover = recover
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="saga-recovery", daemon=True)

    def start(self) -> RecoveryLoop:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop after the pass under way (if any) ends."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                _log_pass(self._recover())
            except Exception:
                log.exception("recovery pass failed; retrying in %.1f s", self.interval)
            self.passes += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RecoveryLoop:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class AsyncRecoveryLoop:
    """The asyncio twin of RecoveryLoop: a task on the running event loop."""

    def __init__(self, recover: Callable[[], Awaitable[RecoveryReport]], interval: float) -> None:
        if interval <= 0:
            raise SagaDefinitionError(f"interval must be > 0 seconds, got {interval!r}")
        self.interval = interval
        self.passes = 0
        self._recover = recover
        self._task: asyncio.Task[None] | None = None

    def start(self) -> AsyncRecoveryLoop:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="saga-recovery")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            try:
                _log_pass(await self._recover())
            except Exception:
                log.exception("recovery pass failed; retrying in %.1f s", self.interval)
            self.passes += 1
            await asyncio.sleep(self.interval)

"""Threads for the steps of choreographed sagas, kept between sagas.

Starting a thread costs more than a trivial step, so threads that finished a step wait a while
for the next one. No step ever waits for a free thread: when none is idle a new one starts, so
a step that starts a saga of its own (and waits for it) cannot starve the pool. A thread idle
for ``idle_seconds`` ends.
"""

from __future__ import annotations

import os
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

__all__ = ["Workers", "workers"]

T = TypeVar("T")

_Work = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...]]


class Workers:
    """An unbounded pool of reusable daemon threads (see the module docstring)."""

    def __init__(self, *, idle_seconds: float = 30.0, name: str = "saga-step") -> None:
        self.idle_seconds = idle_seconds
        self.name = name
        self._started = 0
        self._reset()
        _POOLS.add(self)

    def _reset(self) -> None:
        # queue.Queue, not SimpleQueue: in CPython 3.11 a SimpleQueue.get(timeout=...) that
        # loses a race with another getter can wait forever instead of timing out.
        self._queue: queue.Queue[_Work] = queue.Queue()
        self._lock = threading.Lock()
        #: threads waiting for work, less the work already promised to them
        self._idle = 0

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` in a thread of the pool; its Future has the result or the error."""
        future: Future[T] = Future()
        with self._lock:
            spawn = self._idle == 0
            if spawn:
                self._started += 1
            else:
                self._idle -= 1
            name = f"{self.name}-{self._started}"
        if spawn:
            # started before its work is queued: a thread that cannot start leaves nothing
            # queued and no idle thread counted that does not exist
            threading.Thread(target=self._work, name=name, daemon=True).start()
        self._queue.put((future, fn, args))
        return future

    @property
    def idle(self) -> int:
        """Threads waiting for work now (a figure for tests)."""
        with self._lock:
            return self._idle

    def _work(self) -> None:
        while True:
            try:
                future, fn, args = self._queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # no work is promised to this thread: it may end
                        self._idle -= 1
                        return
                continue  # work was promised just now: it is in the queue
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:
                    future.set_exception(exc)
            del future, fn, args  # keep nothing of the step alive while idle
            with self._lock:
                self._idle += 1


def _after_fork_in_child() -> None:
    # A forked child has none of its parent's threads: its pools start empty.
    for pool in list(_POOLS):
        pool._reset()


_POOLS: weakref.WeakSet[Workers] = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

#: the pool the synchronous runner starts choreographed steps in
workers = Workers()

"""micro_saga.workers: the unbounded pool of reusable daemon threads of choreographed steps.

Every test makes its own pool (never the module-level ``workers``) with a unique name, so its
threads can be told apart in ``threading.enumerate()``. No test sleeps: they wait on Events,
Barriers, joins, and on the pool's own lock (see `_WatchedLock`) for its counters to change.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass

import pytest

from micro_saga.workers import Workers

#: a bound for waits that only time out when the pool is broken
TIMEOUT = 10.0

_pool_numbers = itertools.count(1)


class _WatchedLock:
    """Stands in for ``Workers._lock``: wakes `wait_for` whenever the pool releases it.

    A thread of the pool marks itself idle (``_idle += 1``) only after its step's Future is done,
    so a test that wants the pool quiet waits for the counter under this lock instead of sleeping.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._condition.acquire(blocking, timeout)

    def release(self) -> None:
        self._condition.notify_all()
        self._condition.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
        """Wait until ``predicate()`` holds; it runs with the lock held."""
        with self._condition:
            return self._condition.wait_for(predicate, timeout)


@dataclass
class Pool:
    workers: Workers
    lock: _WatchedLock

    @property
    def prefix(self) -> str:
        return f"{self.workers.name}-"

    def threads(self) -> list[threading.Thread]:
        """The pool's threads alive now."""
        return [t for t in threading.enumerate() if t.name.startswith(self.prefix)]

    def settle(self, idle: int) -> None:
        """Wait until the idle count (threads waiting, less work promised) is ``idle``."""
        settled = self.lock.wait_for(lambda: self.workers._idle == idle)
        assert settled, f"the pool's idle count stayed {self.workers._idle}, expected {idle}"

    def join_all(self) -> list[threading.Thread]:
        """Join the pool's threads (within TIMEOUT in all); return those still alive."""
        deadline = time.monotonic() + TIMEOUT
        for thread in self.threads():
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t for t in self.threads() if t.is_alive()]

    def end_threads(self) -> list[threading.Thread]:
        """End every idle thread; return the pool's threads still alive (busy in a step).

        A thread blocked in ``get(timeout=idle_seconds)`` sees a new idle_seconds only after one
        more step, so with idle_seconds set to 0 every idle thread gets one: as many steps as
        idle threads, meeting at a barrier so that no thread takes two. A wrong idle count
        shows here: too high and a step has no thread (the barrier breaks), too low and some
        thread never ends.
        """
        self.workers.idle_seconds = 0
        with self.lock:
            idle = self.workers._idle
        if idle:
            barrier = threading.Barrier(idle, timeout=TIMEOUT)
            steps = [self.workers.submit(barrier.wait) for _ in range(idle)]
            _, pending = wait(steps, timeout=2 * TIMEOUT)
            assert not pending
            assert all(step.exception() is None for step in steps)
        return self.join_all()


@pytest.fixture
def make_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[float], Pool]]:
    pools: list[Pool] = []

    def make(idle_seconds: float) -> Pool:
        workers = Workers(idle_seconds=idle_seconds, name=f"test-workers-{next(_pool_numbers)}")
        lock = _WatchedLock()
        monkeypatch.setattr(workers, "_lock", lock)
        pools.append(Pool(workers, lock))
        return pools[-1]

    yield make
    # Best effort: end the threads of a quiet pool whose count is sound; leave any other
    # pool's threads (daemons) alone rather than wait for them.
    for pool in pools:
        with pool.lock:
            quiet = pool.workers._idle == len(pool.threads())
        if quiet:
            pool.end_threads()


def _thread_name() -> str:
    return threading.current_thread().name


# --- results and errors ---------------------------------------------------------------------------


def test_the_future_has_the_result(make_pool: Callable[[float], Pool]) -> None:
    pool = make_pool(60)

    future = pool.workers.submit(pow, 2, 10)

    assert isinstance(future, Future)
    assert future.result(TIMEOUT) == 1024
    assert future.exception() is None


class _Abort(BaseException):
    """Not an Exception: like KeyboardInterrupt, it must still reach the Future."""


@pytest.mark.parametrize(
    "error",
    [ValueError("boom"), _Abort("abort"), KeyboardInterrupt(), SystemExit(3)],
    ids=["Exception", "BaseException", "KeyboardInterrupt", "SystemExit"],
)
def test_the_future_has_the_error_and_the_thread_survives(
    make_pool: Callable[[float], Pool], error: BaseException
) -> None:
    pool = make_pool(60)
    names: list[str] = []

    def fail() -> None:
        names.append(_thread_name())
        raise error

    future = pool.workers.submit(fail)

    assert future.exception(TIMEOUT) is error
    with pytest.raises(type(error)) as caught:
        future.result()
    assert caught.value is error
    # The thread caught it, went idle and takes the next step.
    pool.settle(1)
    assert pool.workers.submit(_thread_name).result(TIMEOUT) == names[0]
    assert pool.workers._started == 1


def test_the_pool_keeps_nothing_of_a_finished_step(make_pool: Callable[[float], Pool]) -> None:
    class Payload:
        def use(self, other: Payload) -> int:
            return 7

    fn_owner, arg = Payload(), Payload()
    fn_ref, arg_ref = weakref.ref(fn_owner), weakref.ref(arg)
    pool = make_pool(60)

    assert pool.workers.submit(fn_owner.use, arg).result(TIMEOUT) == 7
    pool.settle(1)  # the thread dropped the step before it counted itself idle
    del fn_owner, arg

    assert fn_ref() is None
    assert arg_ref() is None


# --- no step waits for another ------------------------------------------------------------------


def test_steps_at_a_barrier_all_run_at_once(make_pool: Callable[[float], Pool]) -> None:
    # With fewer threads than steps, the barrier would break (BrokenBarrierError in a Future).
    n = 40
    barrier = threading.Barrier(n, timeout=TIMEOUT)
    pool = make_pool(60)

    futures = [pool.workers.submit(barrier.wait) for _ in range(n)]

    done, pending = wait(futures, timeout=2 * TIMEOUT)
    assert not pending
    assert sorted(f.result() for f in done) == list(range(n))  # each party's index once
    assert pool.workers._started == n


@pytest.mark.parametrize("idle_seconds", [0, 60])
def test_a_step_that_waits_for_a_step_it_submitted_finishes(
    make_pool: Callable[[float], Pool], idle_seconds: float
) -> None:
    depth = 50
    pool = make_pool(idle_seconds)

    def nest(level: int) -> int:
        if level == 0:
            return 0
        return pool.workers.submit(nest, level - 1).result(TIMEOUT) + 1

    assert pool.workers.submit(nest, depth).result(2 * TIMEOUT) == depth
    if idle_seconds:
        # Every level held its thread while the next one ran: one thread per level.
        assert pool.workers._started == depth + 1


# --- threads are reused, then end ---------------------------------------------------------------


def test_a_second_batch_reuses_the_threads_of_the_first(make_pool: Callable[[float], Pool]) -> None:
    n = 8
    pool = make_pool(60)

    def batch() -> set[tuple[str, int | None]]:
        barrier = threading.Barrier(n, timeout=TIMEOUT)

        def meet() -> tuple[str, int | None]:
            barrier.wait()
            thread = threading.current_thread()
            return thread.name, thread.ident

        futures = [pool.workers.submit(meet) for _ in range(n)]
        return {f.result(TIMEOUT) for f in futures}

    first = batch()
    assert len(first) == n
    assert pool.workers._started == n
    pool.settle(n)  # a Future is done a moment before its thread counts itself idle

    second = batch()

    assert second == first
    assert pool.workers._started == n
    assert len(pool.threads()) == n


def test_an_idle_thread_ends_and_a_later_step_starts_a_new_one(
    make_pool: Callable[[float], Pool],
) -> None:
    pool = make_pool(0)

    first = pool.workers.submit(_thread_name).result(TIMEOUT)
    assert first == f"{pool.prefix}1"
    threads = pool.threads()  # empty if the thread has ended already
    assert [t.name for t in threads] in ([], [first])
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    assert pool.threads() == []
    assert pool.workers.idle == 0

    second = pool.workers.submit(_thread_name).result(TIMEOUT)

    assert second == f"{pool.prefix}2"
    assert pool.workers._started == 2
    assert pool.join_all() == []
    assert pool.workers.idle == 0


def test_threads_are_daemons_named_after_the_pool(make_pool: Callable[[float], Pool]) -> None:
    pool = make_pool(60)
    barrier = threading.Barrier(2, timeout=TIMEOUT)

    def describe() -> tuple[str, bool]:
        barrier.wait()
        thread = threading.current_thread()
        return thread.name, thread.daemon

    futures = [pool.workers.submit(describe) for _ in range(2)]

    assert sorted(f.result(TIMEOUT) for f in futures) == [
        (f"{pool.prefix}1", True),
        (f"{pool.prefix}2", True),
    ]
    assert all(t.daemon for t in pool.threads())


def _burst(pool: Pool, submitters: int, per_submitter: int) -> None:
    """Submit from several threads at once, some steps submitting steps of their own; every
    Future completes with the right result."""

    def step(k: int, i: int) -> int:
        if i % 25 == 0:  # a step that waits for a step of its own
            return pool.workers.submit(step, k, i + 1).result(TIMEOUT) - 1
        return k * 1000 + i

    start = threading.Barrier(submitters, timeout=TIMEOUT)
    submitted: list[list[Future[int]]] = [[] for _ in range(submitters)]

    def submit_many(k: int) -> None:
        out = submitted[k]
        start.wait()
        for i in range(per_submitter):
            out.append(pool.workers.submit(step, k, i))
            if i % 50 == 49:  # a pause: threads that finished may time out meanwhile
                out[-1].result(TIMEOUT)

    threads = [threading.Thread(target=submit_many, args=(k,)) for k in range(submitters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(3 * TIMEOUT)
    assert not any(t.is_alive() for t in threads)

    futures = [f for out in submitted for f in out]
    assert len(futures) == submitters * per_submitter
    _, pending = wait(futures, timeout=30)
    assert not pending
    assert [f.result() for f in futures] == [
        k * 1000 + i for k in range(submitters) for i in range(per_submitter)
    ]


def test_many_submitters_while_threads_time_out(make_pool: Callable[[float], Pool]) -> None:
    pool = make_pool(0.001)

    for _ in range(3):
        _burst(pool, submitters=8, per_submitter=300)

    # The count is still sound: exactly the idle threads take one step each, then all end.
    assert pool.end_threads() == []
    assert pool.workers.idle == 0


# --- found in review: idle threads that outlive idle_seconds, failed thread starts, fork -------


def test_every_idle_thread_ends_when_many_wait_at_once(make_pool: Callable[[float], Pool]) -> None:
    # Each round reproduces the race most of the time; it takes a few rounds to miss it 10 times.
    for _ in range(10):
        pool = make_pool(0.001)
        _burst(pool, submitters=8, per_submitter=200)

        # No work is left and idle_seconds is 1 ms: every thread ends; give them 1000 times that.
        deadline = time.monotonic() + 1.0
        for thread in pool.threads():
            thread.join(max(0.0, deadline - time.monotonic()))
        with pool.lock:
            lingering, idle = len(pool.threads()), pool.workers._idle
        # Each lingering thread is counted idle (it waits for work past its idle_seconds); the
        # next steps wake and end them, so the pool itself stays sound.
        assert pool.end_threads() == []
        assert (lingering, idle) == (0, 0), f"{lingering} idle threads outlived idle_seconds"


def test_a_submit_whose_thread_cannot_start_changes_nothing(
    make_pool: Callable[[float], Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = make_pool(60)
    start = threading.Thread.start

    def cannot_start(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")  # what CPython raises at its thread limit

    monkeypatch.setattr(threading.Thread, "start", cannot_start)
    ran = threading.Event()
    with pytest.raises(RuntimeError, match="can't start new thread"):
        pool.workers.submit(ran.set)
    monkeypatch.setattr(threading.Thread, "start", start)

    assert pool.workers.submit(_thread_name).result(TIMEOUT) == f"{pool.prefix}2"
    assert not ran.is_set(), "the step of the submit that raised ran anyway"
    # The pool is still sound: one idle thread, and a step never waits for another.
    pool.settle(1)
    release = threading.Event()
    blocked = pool.workers.submit(release.wait, TIMEOUT)
    try:
        assert pool.workers.submit(int).result(TIMEOUT) == 0
    finally:
        release.set()
    assert blocked.result(TIMEOUT) is True


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # 3.12+: multi-threaded fork()
def test_a_forked_child_can_run_steps(make_pool: Callable[[float], Pool]) -> None:
    pool = make_pool(60)
    assert pool.workers.submit(int).result(TIMEOUT) == 0
    pool.settle(1)  # one idle thread; the lock is free

    pid = os.fork()
    if pid == 0:  # the child: report by exit code, never return into pytest
        code = 3
        try:
            future = pool.workers.submit(int)
            code = 1  # no thread in this process can ever run it
            if pool.threads():
                code = 0 if future.result(TIMEOUT) == 0 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0, "the child's step had no thread to run it"

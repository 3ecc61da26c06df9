"""The crash tests' saga functions, registered at import as a service would register its own.

Each action and compensation appends to a ledger file (O_APPEND, fsync'd) a ``begin`` line when
it is called and an ``end`` line once its side effect is done (``fail`` when it raises instead):
``begin do 1 <saga id> <pid>``, ``end undo 0 <saga id> <pid>``. The tests count real side
effects from it. Where a step dies, blocks or raises comes from this process's command line
(the sets below), never from the journal, so a recovered saga does not inherit it; a business
failure (``fail=True``) is part of the saga's plan and fails in every process.

Kept apart from ``child.py`` because that one runs as ``__main__``: the registered functions must
live in a module with one stable name.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from micro_saga import current_step
from micro_saga.context import StepKind
from saga_store import default_registry

__all__ = [
    "BLOCK_IN",
    "KILL_IN",
    "RAISE_ONCE_IN",
    "WORK_SECONDS",
    "StepFailed",
    "act",
    "act_async",
    "block_until_all",
    "undo",
    "undo_async",
]

#: (kind, step) in which this process SIGKILLs itself
KILL_IN: set[tuple[StepKind, int]] = set()
#: (kind, step) that raises once in this process, then succeeds (a transient failure)
RAISE_ONCE_IN: set[tuple[StepKind, int]] = set()
#: (kind, step) that blocks until the process is killed
BLOCK_IN: set[tuple[StepKind, int]] = set()
#: how long each call works between its begin and end lines (a window in which a second,
#: parallel run of the same step would show in the ledger)
WORK_SECONDS = 0.0


class StepFailed(Exception):
    """A step's failure (an exception, not a crash)."""


class _Gate:
    """Counts steps that entered a blocking point; the last expected one kills the process."""

    def __init__(self) -> None:
        self.expected = 0
        self.entered = 0
        self.lock = threading.Lock()
        self.never = threading.Event()

    def enter(self) -> None:
        with self.lock:
            self.entered += 1
            everyone = self.entered == self.expected
        if everyone:
            os.kill(os.getpid(), signal.SIGKILL)
        self.never.wait()


_GATE = _Gate()


def block_until_all(expected: int) -> None:
    """Steps in BLOCK_IN block; once ``expected`` of them are blocked, the process dies."""
    _GATE.expected = expected


def append(ledger: str, line: str) -> None:
    """Append one line durably: the side effect is on disk before the step returns."""
    fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _side_effect(ledger: str, step: int, fail: bool) -> str:
    ctx = current_step()
    word = "do" if ctx.kind == "action" else "undo"
    where = (ctx.kind, ctx.step)
    tag = f"{word} {step} {ctx.saga_id} {os.getpid()}"
    if ctx.step != step:
        raise AssertionError(f"step {ctx.step} was called with the arguments of step {step}")
    append(ledger, f"begin {tag}")
    if where in KILL_IN:
        os.kill(os.getpid(), signal.SIGKILL)
    if where in BLOCK_IN:
        _GATE.enter()
    if WORK_SECONDS:
        time.sleep(WORK_SECONDS)
    if where in RAISE_ONCE_IN:
        RAISE_ONCE_IN.discard(where)
        append(ledger, f"fail {tag}")
        raise StepFailed(f"{word} {step}: transient failure")
    if fail:
        append(ledger, f"fail {tag}")
        raise StepFailed(f"{word} {step}: business failure")
    append(ledger, f"end {tag}")
    return f"{word} {step}"


@default_registry.register(name="crash.act")
def act(ledger: str, step: int, fail: bool) -> str:
    """A step's action: its side effect is a ledger line (or it fails, doing nothing)."""
    return _side_effect(ledger, step, fail)


@default_registry.register(name="crash.undo")
def undo(ledger: str, step: int) -> str:
    """A step's compensation."""
    return _side_effect(ledger, step, fail=False)


@default_registry.register(name="crash.act_async")
async def act_async(ledger: str, step: int, fail: bool) -> str:
    """The coroutine twin of ``act``."""
    return _side_effect(ledger, step, fail)


@default_registry.register(name="crash.undo_async")
async def undo_async(ledger: str, step: int) -> str:
    """The coroutine twin of ``undo``."""
    return _side_effect(ledger, step, fail=False)

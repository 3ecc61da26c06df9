"""What the crash tests share: launching child processes, reading the ledger and the journal.

Child processes come from fork servers (``python -m tests.crash.child serve``, see there) so that
hundreds of cases do not each pay for an interpreter start; ``SAGA_CRASH_FORK=0`` starts every
case as its own ``python -m tests.crash.child ...`` instead (slower, same behaviour).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from saga_store.tables import attempts, sagas

__all__ = [
    "FINAL",
    "AttemptView",
    "Entry",
    "Lanes",
    "Ledger",
    "Result",
    "Running",
    "SagaView",
    "journal",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[2]
FINAL = frozenset({"succeeded", "compensated", "failed"})
#: how long one child may take before it counts as hung
CHILD_TIMEOUT = 60.0
#: the return code reported for a child that hung and was killed by the test
HUNG = -1000


# -- processes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    """How a child process ended, and what it printed."""

    argv: tuple[str, ...]
    pid: int
    returncode: int
    stdout: str
    stderr: str

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    def output(self) -> Any:
        """The JSON the child printed last (it prints one object when it ends normally)."""
        assert self.returncode == 0, self.describe()
        return json.loads(self.stdout.strip().splitlines()[-1])

    def describe(self) -> str:
        return (
            f"child {' '.join(self.argv)} (pid {self.pid}) ended with {self.returncode}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


class _ForkServer:
    """One ``child serve`` process: forks a fresh child per request, one at a time."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.crash.child", "serve"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._n = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def _next(self, timeout: float) -> dict[str, Any]:
        line = self.lines.get(timeout=timeout)
        if not line:
            raise RuntimeError(f"the fork server exited with {self.proc.wait()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def start(self, argv: Sequence[str]) -> int:
        self._n += 1
        out = self.workdir / f"{self.proc.pid}-{self._n}"
        self._files = (out.with_suffix(".out"), out.with_suffix(".err"))
        request = {"argv": list(argv), "stdout": str(self._files[0]), "stderr": str(self._files[1])}
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        pid: int = self._next(CHILD_TIMEOUT)["pid"]
        return pid

    def wait(self, argv: Sequence[str], pid: int, timeout: float) -> Result:
        hung = ""
        try:
            answer = self._next(timeout)
        except queue.Empty:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # our own hung child; the server reaps it
            answer = self._next(CHILD_TIMEOUT)
            answer["returncode"] = HUNG
            hung = f"\n(hung for {timeout} s: killed by the test)\n"
        assert answer["pid"] == pid, answer
        return Result(
            tuple(argv),
            pid,
            answer["returncode"],
            self._files[0].read_text(),
            self._files[1].read_text() + hung,
        )

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


class _Direct:
    """The slow path: every child is a fresh ``python -m tests.crash.child``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._n = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._files: tuple[Path, Path] | None = None

    def start(self, argv: Sequence[str]) -> int:
        self._n += 1
        out = self.workdir / f"direct-{id(self)}-{self._n}"
        self._files = (out.with_suffix(".out"), out.with_suffix(".err"))
        with self._files[0].open("wb") as stdout, self._files[1].open("wb") as stderr:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "tests.crash.child", *argv],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        return self._proc.pid

    def wait(self, argv: Sequence[str], pid: int, timeout: float) -> Result:
        assert self._proc is not None
        assert self._files is not None
        try:
            code = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            code = HUNG
        return Result(
            tuple(argv), pid, code, self._files[0].read_text(), self._files[1].read_text()
        )

    def close(self) -> None:
        return None


_Launcher = _ForkServer | _Direct


@dataclass
class Running:
    """A child started with ``Lanes.start``; ``Lanes.wait`` collects it."""

    argv: tuple[str, ...]
    pid: int
    launcher: _Launcher


class Lanes:
    """A few launchers, so that independent children run side by side."""

    def __init__(self, workdir: Path, lanes: int) -> None:
        fork = os.environ.get("SAGA_CRASH_FORK", "1") != "0"
        self.launchers: list[_Launcher] = [
            _ForkServer(workdir) if fork else _Direct(workdir) for _ in range(lanes)
        ]
        self.free: queue.Queue[_Launcher] = queue.Queue()
        for launcher in self.launchers:
            self.free.put(launcher)

    def run(self, argv: Sequence[str], timeout: float = CHILD_TIMEOUT) -> Result:
        """Run one child to its end."""
        return self.wait(self.start(argv), timeout)

    def start(self, argv: Sequence[str]) -> Running:
        """Start a child on a free lane (the lane is busy until ``wait``)."""
        launcher = self.free.get(timeout=CHILD_TIMEOUT)
        try:
            pid = launcher.start(argv)
        except BaseException:
            self.free.put(launcher)
            raise
        return Running(tuple(argv), pid, launcher)

    def wait(self, running: Running, timeout: float = CHILD_TIMEOUT) -> Result:
        try:
            return running.launcher.wait(running.argv, running.pid, timeout)
        finally:
            self.free.put(running.launcher)

    def run_all(self, argvs: Sequence[Sequence[str]]) -> list[Result]:
        """Run children side by side on every lane; results in the order given."""
        with ThreadPoolExecutor(len(self.launchers)) as pool:
            return list(pool.map(self.run, argvs))

    def close(self) -> None:
        for launcher in self.launchers:
            launcher.close()


# -- the ledger -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger line: ``begin|end|fail do|undo STEP SAGA PID``."""

    event: str
    kind: str  # "action" or "compensation"
    step: int
    saga: str
    pid: int


@dataclass(frozen=True)
class Ledger:
    """The side effects in the ledger file, in the order they were written."""

    entries: tuple[Entry, ...] = ()

    @classmethod
    def read(cls, path: Path) -> Ledger:
        if not path.exists():
            return cls()
        entries = []
        for line in path.read_text().splitlines():
            event, word, step, saga, pid = line.split()
            kind = "action" if word == "do" else "compensation"
            entries.append(Entry(event, kind, int(step), saga, int(pid)))
        return cls(tuple(entries))

    @classmethod
    def read_until(cls, path: Path, pid: int) -> Ledger:
        """The ledger as process ``pid`` left it: its lines and every line before them."""
        entries = cls.read(path).entries
        last = max((i for i, e in enumerate(entries) if e.pid == pid), default=-1)
        return cls(entries[: last + 1])

    def of(self, saga: str) -> Counter[tuple[str, str, int]]:
        """Counts of (event, kind, step) for one saga."""
        return Counter((e.event, e.kind, e.step) for e in self.entries if e.saga == saga)


# -- the journal ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptView:
    number: int
    status: str
    worker: str | None
    started_at: datetime
    finished_at: datetime | None
    retry_at: datetime | None


@dataclass(frozen=True)
class SagaView:
    """A saga as the journal has it, read with plain SQL."""

    status: str
    parked: bool
    error_type: str | None
    owner: str | None
    attempts: dict[tuple[str, int], tuple[AttemptView, ...]] = field(default_factory=dict)

    def statuses(self, kind: str, step: int) -> tuple[str, ...]:
        return tuple(a.status for a in self.attempts.get((kind, step), ()))

    def shape(self) -> tuple[Any, ...]:
        """What a comparison of two sagas' journals looks at (not ids, times, workers)."""
        return (
            self.status,
            tuple(sorted((k, self.statuses(*k)) for k in self.attempts)),
        )


_SAGAS = sa.select(sagas.c.id, sagas.c.status, sagas.c.parked_at, sagas.c.error_type, sagas.c.owner)


@contextmanager
def _engine(url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


def journal(url: str) -> dict[str, SagaView]:
    """Every saga in the database with its attempts."""
    with _engine(url) as engine, engine.connect() as conn:
        saga_rows = conn.execute(_SAGAS).all()
        attempt_rows = conn.execute(
            sa.select(attempts).order_by(
                attempts.c.saga_id, attempts.c.kind, attempts.c.step, attempts.c.attempt
            )
        ).all()
    grouped: dict[str, dict[tuple[str, int], list[AttemptView]]] = {}
    for r in attempt_rows:
        grouped.setdefault(r.saga_id, {}).setdefault((r.kind, r.step), []).append(
            AttemptView(r.attempt, r.status, r.worker, r.started_at, r.finished_at, r.retry_at)
        )
    return {
        r.id: SagaView(
            status=r.status,
            parked=r.parked_at is not None,
            error_type=r.error_type,
            owner=r.owner,
            attempts={k: tuple(v) for k, v in grouped.get(r.id, {}).items()},
        )
        for r in saga_rows
    }


def wait_until(predicate: Any, what: str, timeout: float = CHILD_TIMEOUT) -> None:
    """Poll ``predicate()`` until it is true (waiting for a child to reach a point)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)

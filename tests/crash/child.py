"""The crash tests' child program: runs, abandons or recovers sagas, and dies where it is told.

Run from the repo root as ``python -m tests.crash.child COMMAND ...``:

* ``run URL --ledger PATH --saga-id ID ...`` runs one 3-step saga (orchestrated or
  choreographed, sync or async steps, ``on_crash`` resume or compensate, optionally failing at a
  step) and prints ``{"outcome": ..., "commits": ...}`` as JSON. ``--kill-commit N --kill-when
  before|after`` SIGKILLs the process just before or just after the Nth database commit;
  ``--kill-in action:1`` SIGKILLs it inside that step.
* ``recover URL --worker W`` runs ``store.recover()`` passes (``--time-travel S`` moves the
  clock S seconds ahead first, so that other workers' leases have expired) and prints the
  reports.
* ``abandon URL --count N`` starts N sagas in threads and SIGKILLs itself once all of them are
  inside step 2: N abandoned sagas for racing recovery workers (``--compensate-odd``: the odd
  ones roll back on recovery).
* ``serve`` is a fork server for the tests: it imports all of the above once, then forks one
  fresh process per request line (``{"argv": [...], "stdout": PATH, "stderr": PATH}``),
  answering ``{"pid": P}`` at once and ``{"pid": P, "returncode": R}`` when it ends. It saves
  the interpreter start and the imports (about a second here) for each of hundreds of cases.

The saga's functions and their ledger of side effects are in ``tests.crash.steps``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, func, select

from micro_saga import AsyncOperation, Operation, RetryPolicy, SagaAssembler, SagaException, clock
from micro_saga.context import StepKind
from micro_saga.plan import CrashPolicy
from saga_store import RecoveryReport, SagaStore
from saga_store.tables import sagas
from tests.crash import steps
from tests.crash.steps import act, act_async, undo, undo_async
from tests.watch import Watch, WhatHappened

__all__ = ["main"]

# -- kill points at journal commits -----------------------------------------------------------


class CommitKiller:
    """Counts the store's commits (through SQLAlchemy or the journal's driver transactions,
    seen by :class:`tests.watch.Watch`) and SIGKILLs the process at the Nth, before it reaches
    the database ("before") or right after it did ("after")."""

    def __init__(self, at: int | None, when: Literal["before", "after"]) -> None:
        self.at = at
        self.when = when
        self.count = 0
        self._lock = threading.Lock()
        #: the thread whose journal commit is the Nth: it dies once that commit is done
        self._armed: int | None = None

    def __call__(self, what: WhatHappened, _sql: str, conn: Connection | None) -> None:
        if what in ("committed", "failed"):
            if self._armed == threading.get_ident():
                if what == "committed":
                    _die()
                self._armed = None  # the commit did not happen: nothing to die after
            return
        if what != "commit":
            return
        with self._lock:
            self.count += 1
            hit = self.count == self.at
        if not hit:
            return
        if self.when == "before":
            _die()
        if conn is None:
            self._armed = threading.get_ident()  # the journal says "committed" once it did
            return
        # SQLAlchemy announces a commit only before it: the commit is done here and now, and the
        # process dies with the transaction durable and nothing after it run.
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        dbapi.commit()
        _die()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


# -- commands -----------------------------------------------------------------------------------


def _where(text: str) -> tuple[StepKind, int]:
    kind, _, step = text.partition(":")
    if kind not in ("action", "compensation"):
        raise argparse.ArgumentTypeError(f"expected action:N or compensation:N, got {text!r}")
    return ("action" if kind == "action" else "compensation"), int(step)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.crash.child")
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("url")
        sub.add_argument("--worker", required=True)
        sub.add_argument("--lease", type=float, default=30.0)
        sub.add_argument("--kill-in", type=_where, action="append", default=[])
        sub.add_argument("--raise-once-in", type=_where, action="append", default=[])
        sub.add_argument("--kill-commit", type=int, default=None, help="SIGKILL at commit N")
        sub.add_argument("--kill-when", choices=("before", "after"), default="before")
        sub.add_argument("--work-seconds", type=float, default=0.0, help="each call's duration")

    run = commands.add_parser("run", help="run one 3-step saga")
    common(run)
    run.add_argument("--ledger", required=True)
    run.add_argument("--saga-id", required=True)
    run.add_argument("--mode", choices=("orchestrated", "choreographed"), required=True)
    run.add_argument("--flavor", choices=("sync", "async"), required=True)
    run.add_argument("--on-crash", choices=("resume", "compensate"), default="resume")
    run.add_argument("--fail-step", type=int, default=-1, help="step whose action raises")
    run.add_argument("--attempts", type=int, default=1, help="retry attempts per step")
    run.add_argument("--delay", type=float, default=0.0, help="seconds between attempts")

    recover = commands.add_parser("recover", help="recovery passes until nothing is left")
    common(recover)
    recover.add_argument("--time-travel", type=float, default=0.0)
    recover.add_argument("--use-async", action="store_true", help="store.recover_async()")
    recover.add_argument("--passes", type=int, default=1, help="at most this many passes")
    recover.add_argument("--limit", type=int, default=None, help="sagas per pass")
    recover.add_argument(
        "--until-done", action="store_true", help="pass again while sagas are unfinished"
    )
    recover.add_argument("--barrier", default=None, help="wait for this file to exist first")
    recover.add_argument("--ready", default=None, help="create this file when ready")
    recover.add_argument("--deadline", type=float, default=60.0)

    abandon = commands.add_parser("abandon", help="start sagas, die inside step 2 of each")
    common(abandon)
    abandon.add_argument("--ledger", required=True)
    abandon.add_argument("--count", type=int, required=True)
    abandon.add_argument("--prefix", default="race")
    abandon.add_argument(
        "--compensate-odd", action="store_true", help='odd sagas get on_crash="compensate"'
    )

    commands.add_parser("serve", help="fork server (tests only)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve()
    steps.KILL_IN.update(args.kill_in)
    steps.RAISE_ONCE_IN.update(args.raise_once_in)
    steps.WORK_SECONDS = args.work_seconds
    commands: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
        "run": _run,
        "recover": _recover,
        "abandon": _abandon,
    }
    output = commands[args.command](args)
    print(json.dumps(output), flush=True)
    return 0


def _saga(
    store: SagaStore,
    *,
    saga_id: str,
    ledger: str,
    flavor: str = "sync",
    on_crash: CrashPolicy = "resume",
    fail_step: int = -1,
    attempts: int = 1,
    delay: float = 0.0,
) -> SagaAssembler:
    saga = store.saga(
        "crash",
        saga_id=saga_id,
        on_crash=on_crash,
        retry=RetryPolicy(attempts=attempts, delay=delay),
    )
    for step in range(3):
        if flavor == "async":
            op: Operation = AsyncOperation(act_async, ledger, step, step == fail_step)
            op.add_compensation(undo_async, ledger, step)
        else:
            op = Operation(act, ledger, step, step == fail_step)
            op.add_compensation(undo, ledger, step)
        saga.operation(op.named(f"step{step}"))
    return saga


def _run(args: argparse.Namespace) -> dict[str, Any]:
    # No heartbeat: its lease renewals would make the commit count depend on timing.
    store = SagaStore(args.url, worker_id=args.worker, lease_seconds=args.lease, heartbeat=False)
    killer = CommitKiller(args.kill_commit, args.kill_when)
    Watch(store, killer).start()  # for the life of the process
    saga = _saga(
        store,
        saga_id=args.saga_id,
        ledger=args.ledger,
        flavor=args.flavor,
        on_crash=args.on_crash,
        fail_step=args.fail_step,
        attempts=args.attempts,
        delay=args.delay,
    )
    outcome = "succeeded"
    try:
        if args.flavor == "async":
            execute = (
                saga.orchestrator_execute_async
                if args.mode == "orchestrated"
                else saga.choreography_execute_async
            )
            asyncio.run(execute())
        elif args.mode == "orchestrated":
            saga.orchestrator_execute()
        else:
            saga.choreography_execute()
    except SagaException as exc:
        outcome = str(exc.status)
    return {"outcome": outcome, "commits": killer.count, "journal_commits": store.journal.commits}


def _unfinished(store: SagaStore) -> int:
    with store.engine.connect() as conn:
        query = select(func.count()).where(sagas.c.status.in_(("running", "compensating")))
        return int(conn.execute(query).scalar_one())


def _recover(args: argparse.Namespace) -> dict[str, Any]:
    store = SagaStore(args.url, worker_id=args.worker, lease_seconds=args.lease)
    killer = CommitKiller(args.kill_commit, args.kill_when)
    Watch(store, killer).start()  # for the life of the process
    reports: list[dict[str, Any]] = []
    try:
        if args.ready:
            _touch(args.ready)
        if args.barrier:
            _wait_for_file(args.barrier, args.deadline)
        if args.time_travel:
            from freezegun import freeze_time  # noqa: PLC0415 - only recovery travels

            target = clock.utcnow() + timedelta(seconds=args.time_travel)
            with freeze_time(target, tick=True, real_asyncio=True):
                _passes(store, args, reports)
        else:
            _passes(store, args, reports)
    finally:
        store.close()
    return {
        "pid": os.getpid(),
        "worker": args.worker,
        "reports": reports,
        "commits": killer.count,
    }


def _passes(store: SagaStore, args: argparse.Namespace, reports: list[dict[str, Any]]) -> None:
    deadline = time.monotonic() + args.deadline
    for _ in range(args.passes):
        report: RecoveryReport = (
            asyncio.run(store.recover_async(limit=args.limit))
            if args.use_async
            else store.recover(limit=args.limit)
        )
        reports.append(asdict(report))
        if not args.until_done or _unfinished(store) == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"sagas still unfinished after {args.deadline} s")
        if not report:
            time.sleep(0.01)  # the rest is being run by other workers: poll again


def _abandon(args: argparse.Namespace) -> dict[str, Any]:
    steps.BLOCK_IN.add(("action", 1))
    steps.block_until_all(args.count)
    store = SagaStore(args.url, worker_id=args.worker, lease_seconds=args.lease, heartbeat=False)
    threads = [
        threading.Thread(
            target=_saga(
                store,
                saga_id=f"{args.prefix}-{i:03d}",
                ledger=args.ledger,
                on_crash="compensate" if args.compensate_odd and i % 2 else "resume",
            ).orchestrator_execute,
            daemon=True,
        )
        for i in range(args.count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    raise RuntimeError("every saga finished: the process should have killed itself in step 2")


def _touch(path: str) -> None:
    Path(path).touch()


def _wait_for_file(path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.002)


# -- the fork server ------------------------------------------------------------------------


_PRELOAD = (
    "freezegun",
    "psycopg",
    "pymysql",
    "sqlalchemy.dialects.mysql.pymysql",
    "sqlalchemy.dialects.postgresql.psycopg",
    "sqlalchemy.dialects.sqlite.pysqlite",
)


def _serve() -> int:
    # Imported once here, before any fork, so that no forked case pays for them.
    for module in _PRELOAD:
        importlib.import_module(module)

    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _forked(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "returncode": os.waitstatus_to_exitcode(status)}), flush=True)


def _forked(request: dict[str, Any]) -> None:
    code = 1
    try:
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())

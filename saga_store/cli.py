"""``saga-store``: the command line for saga history, schema and recovery.

Every command is a thin shell over ``SagaStore``: read or act, then print what ``render`` and
``timeline`` format. An error a user can fix ends in one line on stderr and exit code 1 (2 for
bad arguments), never a traceback; a database password is never printed.
"""

from __future__ import annotations

import argparse
import getpass
import importlib
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from alembic.util import CommandError
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from micro_saga import SagaError, clock

from . import demo, history, migrate, render, timeline
from .db import DEFAULT_URL, URL_ENV, redact, resolve_url
from .store import SagaStore

__all__ = ["main"]

PROG = "saga-store"
_DRIVERS = {"psycopg": "postgresql", "pymysql": "mysql"}  # module -> extra that installs it

Handler = Callable[[argparse.Namespace, SagaStore, TextIO], int]
Parser = argparse.ArgumentParser


class CliError(Exception):
    """A problem to report in one line (exit code 1)."""


def main(argv: list[str] | None = None) -> int:
    """Run ``saga-store`` with ``argv`` (default: the process's arguments); the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.error("a command is required (see --help)")
    except SystemExit as done:  # --help, or a usage error (exit 2): argparse printed it
        return done.code if isinstance(done.code, int) else 2
    _log_to_stderr(args)
    url = resolve_url(args.url)
    try:
        with _one_line_errors(url):
            if args.command == "demo":
                return demo.run_demo(args.url, fail=args.fail, keep=args.keep, out=sys.stdout)
            with _open_store(url, args) as store:
                if args.command not in ("upgrade", "downgrade", "current"):
                    store.check_schema()  # one clear line rather than a failed query
                handler: Handler = args.handler
                return handler(args, store, sys.stdout)
    except CliError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `saga-store list | head`: the reader left, and that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect, migrate and recover durable sagas (micro-saga's SQL journal).",
        epilog=f"The database is --url, else ${URL_ENV}, else {DEFAULT_URL} in the current "
        "directory. Times are UTC. Exit codes: 0 done, 1 error, 2 bad arguments.",
    )
    parser.add_argument("--url", help="SQLAlchemy URL of the saga database")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the store does")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")

    def command(name: str, handler: Handler | None, text: str, more: str = "") -> Parser:
        sub = commands.add_parser(name, help=text, description=text + more)
        sub.set_defaults(handler=handler)
        # `saga-store demo --url ...` works as well as `saga-store --url ... demo`
        shown = "the database (default: the demo's own SQLite file)" if name == "demo" else None
        sub.add_argument("--url", default=argparse.SUPPRESS, help=shown or argparse.SUPPRESS)
        return sub

    def json_flag(sub: Parser) -> None:
        sub.add_argument("--json", action="store_true", help="print a JSON document")

    def import_flag(sub: Parser, *, required: bool) -> None:
        sub.add_argument(
            "--import",
            dest="imports",
            action="append",
            metavar="MODULE",
            required=required,
            help="import MODULE first, so that the saga functions it registers can run "
            "(repeatable; the current directory is on the path)",
        )

    sub = command("upgrade", _migrate, "create or migrate the saga tables (Alembic)")
    sub.add_argument("revision", nargs="?", default="head", help="target revision (default: head)")
    command("current", _current, "print the schema revision of the database")
    sub = command("downgrade", _migrate, "migrate the saga tables down ('base' drops them)")
    sub.add_argument("revision", help="target revision, e.g. base")

    sub = command("list", _list, "list sagas, newest first")
    sub.add_argument("--status", action="append", choices=render.STATUSES, help="repeatable")
    sub.add_argument("--name", help="only sagas with this name")
    sub.add_argument("--since", type=_moment, help="created at or after (ISO 8601; naive is UTC)")
    sub.add_argument("--until", type=_moment, help="created before (ISO 8601; naive is UTC)")
    sub.add_argument("--parked", action="store_true", help="only parked sagas")
    sub.add_argument(
        "--limit", type=_number(int, history.MAX_LIMIT), default=50, help="page size (50)"
    )
    sub.add_argument("--cursor", help="the next page: the cursor a previous page printed")
    json_flag(sub)

    sub = command("show", _show, "show one saga: its header, then a timeline of its attempts")
    sub.add_argument("saga_id", metavar="ID")
    sub.add_argument("--traceback", action="store_true", help="print the errors' tracebacks")
    json_flag(sub)
    json_flag(command("stats", _stats, "counts by status and name, oldest running, parked"))

    sub = command("recover", _recover, "import the saga functions, then recover abandoned sagas")
    import_flag(sub, required=True)
    sub.add_argument("--loop", action="store_true", help="keep recovering until SIGINT/SIGTERM")
    sub.add_argument("--interval", type=_number(float), default=5.0, help="seconds (5)")
    sub.add_argument("--worker-id", help="a restarted worker with the same id resumes at once")

    sub = command("retry", _retry, "re-drive a failed saga's compensations, or a parked saga")
    sub.add_argument("saga_id", metavar="ID")
    import_flag(sub, required=False)
    sub = command("resolve", _resolve, "mark a failed or parked saga as handled by hand")
    sub.add_argument("saga_id", metavar="ID")
    sub.add_argument("--note", required=True, type=_note, help="what was done (kept in history)")

    sub = command("demo", None, demo.SUMMARY, demo.DETAILS)
    sub.add_argument("--fail", action="store_true", help="shipping fails: shows compensation")
    sub.add_argument("--keep", action="store_true", help=f"keep ./{demo.DEFAULT_FILE}")
    return parser


# -- commands -----------------------------------------------------------------------------------


def _migrate(args: argparse.Namespace, store: SagaStore, out: TextIO) -> int:
    if args.command == "upgrade":
        store.upgrade(args.revision)
    else:
        store.downgrade(args.revision)
    print(f"{redact(store.engine.url)}: schema at {_revision(store)}", file=out)
    return 0


def _current(args: argparse.Namespace, store: SagaStore, out: TextIO) -> int:
    print(_revision(store), file=out)
    return 0


def _list(args: argparse.Namespace, store: SagaStore, out: TextIO) -> int:
    page = store.list(
        status=args.status,
        name=args.name,
        since=args.since,
        until=args.until,
        parked=True if args.parked else None,
        limit=args.limit,
        cursor=args.cursor,
    )
    progress = history.progress(store.engine, store.serializer, [s.id for s in page])
    if args.json:
        _print_json(render.page_json(page.items, progress, page.next_cursor), out)
    else:
        print(render.saga_list(page.items, progress, page.next_cursor), file=out)
    return 0


def _show(args: argparse.Namespace, store: SagaStore, out: TextIO) -> int:
    record = store.get(args.saga_id)
    if args.json:
        _print_json(render.saga_json(record, full=True), out)
    else:
        print(timeline.timeline(record, tracebacks=args.traceback), file=out)
    return 0


def _stats(args: argparse.Namespace, store: SagaStore, out: TextIO) -> int:
    stats = store.stats()
    if args.json:
        _print_json(render.stats_json(stats), out)
    else:
        print(render.stats_text(stats, clock.utcnow()), file=out)
    return 0


def _recover(args: argparse.Namespace, store: SagaStore, out: TextIO) -> int:
    if not args.loop:
        print("\n".join(render.recovery_lines(store.recover())), file=out)
        return 0
    stop = threading.Event()
    with _stop_on_signals(stop):
        every = f"every {args.interval:g} s as worker {store.worker_id!r}"
        print(f"recovering {every} (Ctrl-C or SIGTERM stops)", file=out, flush=True)
        while not stop.is_set():
            try:
                report = store.recover()
            except SagaError as error:  # e.g. the database is down for a moment: try again
                text = _scrub(str(error), store.engine.url.render_as_string(False))
                print(f"{PROG}: recovery pass failed: {text}", file=sys.stderr, flush=True)
            else:
                if report:
                    print("\n".join(render.recovery_lines(report, clock.utcnow())), file=out)
                    out.flush()
            stop.wait(args.interval)
    print("stopped", file=out)
    return 0


def _retry(args: argparse.Namespace, store: SagaStore, out: TextIO) -> int:
    report = store.retry(args.saga_id)
    record = store.get(args.saga_id)
    print(f"retried saga {record.id!r}: now {render.status_label(record)}", file=out)
    for line in render.recovery_lines(report)[1:]:
        print(line, file=out)
    if record.status == "failed" or record.parked:
        why = record.parked_error or record.error_message or f"see {PROG} show {record.id}"
        raise CliError(f"saga {record.id!r} is {render.status_label(record)} again: {why}")
    return 0


def _resolve(args: argparse.Namespace, store: SagaStore, out: TextIO) -> int:
    store.resolve(args.saga_id, args.note)
    print(f"resolved saga {args.saga_id!r}: the note is kept in its history", file=out)
    return 0


# -- helpers ------------------------------------------------------------------------------------


def _open_store(url: str, args: argparse.Namespace) -> SagaStore:
    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError) as error:
        raise CliError(f"invalid database URL {redact(url)}: {error}") from None
    database = parsed.database or ""
    if (
        parsed.get_backend_name() == "sqlite"
        and args.command != "upgrade"
        and database not in ("", ":memory:")
        and not database.startswith("file:")
        and not Path(database).exists()
    ):  # reading must not leave an empty database file behind
        raise CliError(
            f"no saga database at {database}: run `{PROG} upgrade` to create it, or pass "
            f"--url (or set ${URL_ENV})"
        )
    for module in getattr(args, "imports", None) or ():
        _import(module)
    worker = getattr(args, "worker_id", None)
    if worker is None and args.command in ("retry", "resolve"):
        worker = f"{PROG}:{_user()}@{socket.gethostname()}:{os.getpid()}"  # who did it
    return SagaStore(url, worker_id=worker)


def _import(module: str) -> None:
    here = str(Path.cwd())
    if here not in sys.path:
        sys.path.insert(0, here)
    try:
        importlib.import_module(module)
    except Exception as error:
        raise CliError(f"cannot import {module!r}: {type(error).__name__}: {error}") from error


@contextmanager
def _one_line_errors(url: str) -> Iterator[None]:
    """Turn the errors a user can fix into CliError, with the URL's password masked."""
    try:
        yield
    except (SagaError, ValueError, sa_exc.SQLAlchemyError, CommandError) as error:
        raise CliError(_scrub(str(error), url)) from error
    except ModuleNotFoundError as error:
        if error.name not in _DRIVERS:
            raise
        extra = f"micro-saga[{_DRIVERS[error.name]}]"
        raise CliError(
            f"the database driver {error.name} is missing: pip install '{extra}'"
        ) from None


def _scrub(text: str, url: str) -> str:
    """The first line of ``text``, with the URL's password (or an unparseable URL) masked."""
    try:
        secret = str(make_url(url).password or "")
    except sa_exc.ArgumentError:
        secret = url  # an unparseable URL may hide a password anywhere: never print it
    if secret:
        text = text.replace(secret, "***")
    return text.strip().splitlines()[0] if text.strip() else text


def _log_to_stderr(args: argparse.Namespace) -> None:
    """Show the log with --verbose or in ``recover --loop``; otherwise keep Python's last-resort
    handler from echoing what each command reports itself (a parked saga, say)."""
    if args.verbose or getattr(args, "loop", False):
        level = logging.INFO if args.verbose else logging.WARNING
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
        return
    logger = logging.getLogger("saga_store")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _revision(store: SagaStore) -> str:
    return render.revision_label(store.current_revision(), migrate.head())


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return "someone"


def _print_json(data: Any, out: TextIO) -> None:
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False), file=out)


# -- argument types -----------------------------------------------------------------------------


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2025-01-31 or 2025-01-31T12:00:00+02:00)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _number(kind: type[int] | type[float], most: float | None = None) -> Callable[[str], Any]:
    """An argument type: a number > 0 (and <= ``most``), else a usage error."""
    what = "a whole number from 1" if kind is int else "a number > 0"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0 or (most is not None and value > most):
            bound = "" if most is None else f" to {most:g}"
            raise argparse.ArgumentTypeError(f"must be {what}{bound}, got {text!r}")
        return value

    return parse


def _note(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("say what was done (an empty note helps nobody)")
    return text

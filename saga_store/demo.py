"""``saga-store demo``: an order saga killed with SIGKILL in the middle of a step, then recovered.

The parent (``run_demo``) starts the saga in a child process (``python -m saga_store.demo``),
waits until the child is inside "charge card", kills it with SIGKILL, recovers the saga with the
same worker id and prints its timeline and a ledger of every side effect, with the process that
made it. The ledger doubles as the payment provider's records: a charge is keyed by the step's
idempotency key, so running "charge card" again after the crash does not charge twice.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.engine import make_url

from micro_saga import (
    ACTION_RESULT,
    Operation,
    SagaAssembler,
    SagaException,
    clock,
    idempotency_key,
)
from micro_saga.clock import utcnow

from . import render, timeline
from .db import redact
from .registry import default_registry
from .store import SagaStore

__all__ = ["DEFAULT_FILE", "DEFAULT_URL", "WORKER_ID", "run_demo"]

#: the demo's own SQLite file (in the current directory), so that a user's sagas.db is left alone
DEFAULT_FILE = "saga-demo.db"
DEFAULT_URL = f"sqlite:///{DEFAULT_FILE}"
#: parent and child share it: a restarted worker takes its own sagas back without waiting
WORKER_ID = "saga-demo"
LEASE_SECONDS = 30.0
_WAIT_FOR_CHILD = 60.0  # seconds: the child imports SQLAlchemy and opens the database first

SUMMARY = "SIGKILL an order saga inside a step, recover it, show its timeline"
DETAILS = (
    f". Without --url it uses its own SQLite file, ./{DEFAULT_FILE}, removed at the end unless "
    "--keep (your sagas.db is left alone); with --url (PostgreSQL works too) the tables are "
    "upgraded and the saga stays in that database's history."
)

#: set for the child only: the file it creates once it is inside "charge card", then it waits
CRASH_POINT_ENV = "SAGA_DEMO_CRASH_POINT"


Say = Callable[..., None]


class ShippingError(Exception):
    """The carrier refused the parcel (``--fail``)."""


# -- the saga's functions (registered: recovery finds them by these names) ----------------------


@default_registry.register(name="saga_store.demo:reserve_stock")
def reserve_stock(ledger: str, order: dict[str, Any]) -> str:
    reservation = f"R-{order['id'][-6:]}"
    _note(ledger, f"stock     reserved {order['qty']} x {order['sku']} ({reservation})")
    return reservation


@default_registry.register(name="saga_store.demo:release_stock")
def release_stock(ledger: str, order: dict[str, Any], reservation: str) -> None:
    _note(ledger, f"stock     released {order['qty']} x {order['sku']} ({reservation})")


@default_registry.register(name="saga_store.demo:charge_card")
def charge_card(ledger: str, order: dict[str, Any]) -> str:
    key = idempotency_key()
    earlier = [e for e in read_ledger(ledger) if e.get("key") == key]
    if earlier:
        payment = str(earlier[0]["payment"])
        _note(ledger, f"payments  key {key} already charged ({payment}): not charged twice")
        return payment
    payment = f"PAY-{uuid.uuid4().hex[:8].upper()}"
    _note(
        ledger,
        f"payments  charged {order['amount']} ({payment}, key {key})",
        key=key,
        payment=payment,
    )
    _wait_to_be_killed()
    return payment


@default_registry.register(name="saga_store.demo:refund")
def refund(ledger: str, order: dict[str, Any], payment: str) -> None:
    _note(ledger, f"payments  refunded {order['amount']} ({payment})")


@default_registry.register(name="saga_store.demo:ship")
def ship(ledger: str, order: dict[str, Any], fail: bool) -> str:
    if fail:
        raise ShippingError("the carrier refused the parcel: no delivery to this address")
    shipment = f"SHP-{order['id'][-6:]}"
    _note(ledger, f"carrier   parcel booked ({shipment})")
    return shipment


@default_registry.register(name="saga_store.demo:cancel_shipment")
def cancel_shipment(ledger: str, order: dict[str, Any], shipment: str) -> None:
    _note(ledger, f"carrier   shipment cancelled ({shipment})")


def build_saga(store: SagaStore, saga_id: str, ledger: str, *, fail: bool) -> SagaAssembler:
    """reserve stock -> charge card -> ship, each with its compensation."""
    order = {"id": saga_id, "sku": "WIDGET-42", "qty": 2, "amount": "49.90 EUR"}
    saga = store.saga("demo-order", saga_id=saga_id, max_interruptions=3)
    saga.operation(
        Operation(reserve_stock, ledger, order)
        .named("reserve stock")
        .add_compensation(release_stock, ledger, order, ACTION_RESULT)
    )
    saga.operation(
        Operation(charge_card, ledger, order)
        .named("charge card")
        .add_compensation(refund, ledger, order, ACTION_RESULT)
    )
    saga.operation(
        Operation(ship, ledger, order, fail)
        .named("ship")
        .with_retry(attempts=2, delay=0.2)
        .add_compensation(cancel_shipment, ledger, order, ACTION_RESULT)
    )
    return saga


# -- the ledger: one JSON line per side effect ---------------------------------------------------


def _note(ledger: str, text: str, **fields: Any) -> None:
    entry = {"at": clock.utcnow().isoformat(), "pid": os.getpid(), "text": text, **fields}
    with Path(ledger).open("a", encoding="utf-8") as file:
        file.write(json.dumps(entry) + "\n")
        file.flush()
        os.fsync(file.fileno())


def read_ledger(ledger: str) -> list[dict[str, Any]]:
    path = Path(ledger)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _wait_to_be_killed() -> None:
    crash_point = os.environ.get(CRASH_POINT_ENV)
    if not crash_point:
        return  # not the demo's child (recovery, say): nothing to wait for
    Path(crash_point).write_text(str(os.getpid()), encoding="utf-8")
    time.sleep(_WAIT_FOR_CHILD)
    os._exit(3)  # the parent is gone: do not finish the saga behind its back


# -- the parent ----------------------------------------------------------------------------------


def run_demo(url: str | None, *, fail: bool, keep: bool, out: TextIO) -> int:
    """Run the demo; 0 when the saga ended as it should (succeeded, or compensated with fail)."""
    target = url or DEFAULT_URL
    saga_id = f"order-{uuid.uuid4().hex[:6]}"
    expected = "compensated" if fail else "succeeded"

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    try:
        with (
            tempfile.TemporaryDirectory(prefix="saga-demo-") as scratch,
            SagaStore(target, worker_id=WORKER_ID, lease_seconds=LEASE_SECONDS) as store,
        ):
            status = _crash_and_recover(store, target, saga_id, Path(scratch), fail=fail, say=say)
    finally:
        if url is None:
            _finish_file(target, keep, saga_id, say)
    if status is None:
        return 1
    return 0 if status == expected else 1


def _crash_and_recover(
    store: SagaStore, url: str, saga_id: str, scratch: Path, *, fail: bool, say: Say
) -> str | None:
    """The demo's story; returns the saga's final status (None if the child went astray)."""
    store.upgrade()
    ledger, signal_file = str(scratch / "ledger.jsonl"), scratch / "inside-charge-card"
    say("micro-saga demo: an order saga that survives SIGKILL")
    say()
    say(f"database  {redact(url)} (schema upgraded to {store.current_revision()})")
    say(f"saga      {saga_id}: reserve stock -> charge card -> ship" + ("  (--fail)" * fail))
    say("          compensations: release stock, refund, cancel shipment")
    say()
    child = _start_child(url, saga_id, ledger, signal_file, fail)
    say(f"1. A child process (pid {child.pid}, worker id {WORKER_ID!r}) starts the saga.")
    try:
        if not _wait_inside(child, signal_file, say):
            return None
        say("2. The child is inside step 'charge card' (attempt 1): killing it with SIGKILL.")
        os.kill(child.pid, signal.SIGKILL)
    finally:  # on Ctrl-C too: leave no child behind
        if child.poll() is None:
            child.kill()
        child.wait()
        if child.stderr is not None:
            child.stderr.close()
    ended = child.returncode
    how = f"killed by {signal.Signals(-ended).name}" if ended < 0 else f"exit code {ended}"
    say(f"   The child is gone ({how}). The journal says:")
    for line in _journal_now(store, saga_id):
        say("   " + line)
    say()
    say(f"3. Recovering in this process (pid {os.getpid()}), same worker id {WORKER_ID!r}.")
    say("   A restarted service with the same worker id takes its own sagas back at once;")
    say(f"   any other worker would wait for the {LEASE_SECONDS:.0f} s lease to expire.")
    for line in render.recovery_lines(store.recover()):
        say("   " + line)
    record = store.get(saga_id)
    while record.status in ("running", "compensating") and record.wake_at is not None:
        # A retry delay began during recovery: it is journaled, and a later pass honours it.
        wait = max(0.0, (record.wake_at - utcnow()).total_seconds())
        say(f"   a retry is due in {wait:.1f} s (journaled); the next recovery pass runs it")
        time.sleep(wait)
        for line in render.recovery_lines(store.recover()):
            say("   " + line)
        record = store.get(saga_id)
    say()
    say(f"Timeline (saga-store show {saga_id}):")
    say()
    say(timeline.timeline(record))
    say()
    say("Ledger: every side effect, and the process that made it")
    for entry in read_ledger(ledger):
        who = "child, killed" if entry["pid"] == child.pid else "this process"
        say(f"  {entry['at'][11:23]}  pid {entry['pid']:<7} {who:<14} {entry['text']}")
    say()
    _conclude(record.status, say)
    return record.status


def _start_child(
    url: str, saga_id: str, ledger: str, signal_file: Path, fail: bool
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["SAGA_STORE_URL"] = url  # not on the command line, where `ps` would show a password
    env[CRASH_POINT_ENV] = str(signal_file)
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "saga_store.demo", "--saga-id", saga_id, "--ledger", ledger]
    argv += ["--fail"] if fail else []
    # our own interpreter and module, arguments we made: nothing untrusted is executed
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: S603


def _wait_inside(child: subprocess.Popen[bytes], signal_file: Path, say: Say) -> bool:
    deadline = time.monotonic() + _WAIT_FOR_CHILD
    while not signal_file.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            if child.poll() is None:
                child.kill()
            _, err = child.communicate()
            say("The child did not reach 'charge card'; its last words:")
            for line in err.decode(errors="replace").strip().splitlines()[-10:]:
                say("  " + line)
            return False
        time.sleep(0.02)
    return True


def _journal_now(store: SagaStore, saga_id: str) -> list[str]:
    record = store.get(saga_id)
    lines = [
        f"saga {record.status}; lease held by {record.owner!r} until {render.when(record.lease_expires_at)} UTC"
    ]
    for attempt in record.attempts:
        end = "never finished" if attempt.status == "started" else attempt.status
        lines.append(f"'{attempt.step_name}' attempt {attempt.attempt}: {end}")
    return lines


def _conclude(status: str, say: Say) -> None:
    say(f"Final status: {status}.")
    if status == "succeeded":
        say("The attempt cut short by SIGKILL is in the journal as 'interrupted'; recovery ran")
        say("'charge card' again with the same idempotency key, so the card was charged once,")
        say("and the saga went on to the end.")
    elif status == "compensated":
        say("Recovery finished 'charge card', then shipping failed: the completed steps were")
        say(
            "compensated in reverse order (refund, then release stock). Nothing was left half-done."
        )


def _finish_file(url: str, keep: bool, saga_id: str, say: Say) -> None:
    database = make_url(url).database or ""
    if keep:
        say(f"The demo database is kept: saga-store --url {url} show {saga_id}")
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(database + suffix).unlink(missing_ok=True)
    say(f"The demo database {database} was removed (--keep keeps it).")


# -- the child -----------------------------------------------------------------------------------


def _child_main(argv: list[str] | None = None) -> int:
    """Run the demo saga until the parent kills it inside "charge card"."""
    parser = argparse.ArgumentParser(prog="python -m saga_store.demo")
    parser.add_argument("--saga-id", required=True)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--fail", action="store_true")
    args = parser.parse_args(argv)
    with SagaStore(worker_id=WORKER_ID, lease_seconds=LEASE_SECONDS) as store:
        try:
            build_saga(store, args.saga_id, args.ledger, fail=args.fail).orchestrator_execute()
        except SagaException:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())

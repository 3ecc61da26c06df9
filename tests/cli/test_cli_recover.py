"""``saga-store recover``, ``retry`` and ``resolve`` through the real console script, with the
saga functions imported from a module in the current directory (``cli_shop``)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from micro_saga import Operation
from saga_store import SagaStore, default_registry
from tests.cli.conftest import COMMAND, CliRunner, Orders, cli_env, one_error_line, wait_for


class _Died(BaseException):
    """Leaves a saga mid-step in this process, as a killed process would (test setup only)."""


@default_registry.register
def ghost_step(order: str) -> str:
    """Registered here only: the CLI's process cannot find it, so recovery parks its saga."""
    raise _Died(order)


def _ghost(store: SagaStore) -> None:
    saga = store.saga("ghostly", saga_id="ghost")
    saga.operation(Operation(ghost_step, "ghost").named("haunt"))
    with pytest.raises(_Died):
        saga.orchestrator_execute()


def test_recover_retry_and_resolve(
    cli: CliRunner, main_run: CliRunner, orders: Orders, store: SagaStore, db_url: str
) -> None:
    assert orders.run("ok") == "succeeded"
    assert orders.run("stuck", broken=["ship", "refund"]) == "failed"
    assert orders.run("lost", broken=["charge-crash"]) == "crashed"
    _ghost(store)

    missing = one_error_line(main_run("recover", "--import", "no_such_module", url=db_url))
    assert missing.startswith("cannot import 'no_such_module': ModuleNotFoundError"), missing

    recovered = cli("recover", "--import", "cli_shop", url=db_url)
    assert (recovered.code, recovered.err) == (0, ""), recovered
    lines = recovered.out.splitlines()
    assert lines[0] == "recovery: 1 succeeded, 1 parked"
    assert lines[1].startswith(
        "  parked ghost: no function is registered as 'tests.cli.test_cli_recover:ghost_step'"
    )
    assert store.get("lost").status == "succeeded"
    ledger = [line.split(" pid=") for line in orders.lines() if " lost " in f" {line} "]
    assert [text for text, _ in ledger] == ["reserve lost", "charge lost", "ship lost"]
    assert ledger[1][1] != str(os.getpid())  # charged by the CLI's process

    parked = json.loads(cli("list", "--parked", "--json", url=db_url).out)
    assert [item["id"] for item in parked["items"]] == ["ghost"]
    assert "\nparked: 1: ghost\n" in main_run("stats", url=db_url).out

    retried = cli("retry", "stuck", "--import", "cli_shop", url=db_url)
    assert (retried.code, retried.out, retried.err) == (
        0, "retried saga 'stuck': now compensated\n", ""
    )  # fmt: skip
    assert "refund PAY-stuck" in [line.split(" pid=")[0] for line in orders.lines()]
    assert store.get("stuck").events[0].kind == "retried"

    assert one_error_line(cli("retry", "ok", url=db_url)) == (
        "saga 'ok' is succeeded and not parked: only a failed or parked saga can be retried"
    )
    assert one_error_line(main_run("resolve", "ok", "--note", "nothing to do", url=db_url)) == (
        "saga 'ok' is succeeded: only a failed or parked saga can be resolved by hand"
    )
    assert one_error_line(main_run("retry", "nope", url=db_url)) == "no saga with id 'nope'"
    assert one_error_line(main_run("resolve", "nope", "--note", "x", url=db_url)) == (
        "no saga with id 'nope'"
    )

    again = cli("retry", "ghost", "--import", "cli_shop", url=db_url)  # not here: ghost_step is
    assert one_error_line(again).startswith(
        "saga 'ghost' is running (parked) again: no function is registered as "
    )
    assert again.out.startswith("retried saga 'ghost': now running (parked)\n  parked ghost: ")
    resolved = cli("resolve", "ghost", "--note", "refunded by hand, ticket 42", url=db_url)
    assert (resolved.code, resolved.err) == (0, ""), resolved
    assert resolved.out == "resolved saga 'ghost': the note is kept in its history\n"
    record = store.get("ghost")
    assert (record.status, record.resolution_note) == ("failed", "refunded by hand, ticket 42")
    assert [e.kind for e in record.events] == ["parked", "retried", "parked", "resolved"]
    assert record.events[-1].worker is not None
    assert record.events[-1].worker.startswith("saga-store:")
    shown = main_run("show", "ghost", url=db_url).out
    assert "  status    failed\n" in shown
    assert re.search(r"^  resolved  at [\d-]+ [\d:]+: refunded by hand, ticket 42$", shown, re.M)
    assert re.search(r"\(saga\) +event +resolved +by saga-store:\S+; refunded by hand", shown)


def test_recover_loop_stops_cleanly_on_sigterm_and_sigint(
    orders: Orders, store: SagaStore, db_url: str, tmp_path: Path
) -> None:
    assert orders.run("lost", broken=["charge-crash"]) == "crashed"
    code, text, err = _loop_until(signal.SIGTERM, db_url, tmp_path, store)
    assert (code, err) == (0, ""), text + err
    assert text.startswith("recovering every 0.2 s as worker 'loop-worker'"), text
    assert re.search(r"^\d\d:\d\d:\d\d recovery: 1 succeeded$", text, re.MULTILINE), text
    assert text.endswith("stopped\n"), text
    code, text, err = _loop_until(signal.SIGINT, db_url, tmp_path, None)
    assert (code, err) == (0, ""), text + err
    assert "recovery:" not in text  # nothing left to recover: a quiet loop
    assert text.endswith("stopped\n"), text


def _loop_until(
    signum: signal.Signals, url: str, folder: Path, store: SagaStore | None
) -> tuple[int, str, str]:
    """Run ``recover --loop``; once it started (and recovered ``lost``, given ``store``),
    send ``signum``; returns its exit code, stdout and stderr."""
    out = folder / f"loop-{signum.name}.out"
    argv = [*COMMAND, "--url", url, "recover", "--import", "cli_shop", "--loop"]
    argv += ["--interval", "0.2", "--worker-id", "loop-worker"]
    with out.open("w") as stdout:
        loop = subprocess.Popen(
            argv, cwd=folder, env=cli_env(), stdout=stdout, stderr=subprocess.PIPE, text=True
        )
        try:
            wait_for(lambda: "recovering every" in out.read_text(), "the loop to start")
            if store is not None:
                wait_for(lambda: store.get("lost").status == "succeeded", "the recovery")
                wait_for(lambda: "recovery: 1 succeeded" in out.read_text(), "its report")
            loop.send_signal(signum)
            _, err = loop.communicate(timeout=30)
        finally:
            if loop.poll() is None:
                loop.kill()
                loop.wait()
    return loop.returncode, out.read_text(), err

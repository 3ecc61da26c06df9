"""Fixtures of the CLI tests: the real console script in a subprocess, and sagas to look at.

The sagas are made in this process with the functions of a small module, ``cli_shop``, written
to the test's folder; ``saga-store recover --import cli_shop`` (run in that folder) loads the
same functions, as a service's module would be loaded after a restart.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from micro_saga import Operation, SagaException
from saga_store import SagaStore
from saga_store.cli import main
from tests import dbs

#: for tests that need no database server: run them once, in the SQLite pass of CI
sqlite_pass = pytest.mark.skipif(
    "sqlite" not in dbs.active_backends(), reason="needs no server: runs in the SQLite pass"
)


def _command() -> tuple[str, ...]:
    """The installed console script (this venv's first), else ``python -m saga_store``."""
    beside = Path(sys.executable).with_name("saga-store")
    if beside.exists():
        return (str(beside),)
    found = shutil.which("saga-store")
    return (found,) if found else (sys.executable, "-m", "saga_store")


COMMAND = _command()

SHOP = textwrap.dedent(
    '''
    """Saga functions of the CLI tests (a stand-in for a service's module)."""

    from __future__ import annotations

    import os
    from pathlib import Path

    from saga_store import default_registry


    class Crash(BaseException):
        """Raised in the test process only: leaves a saga mid-step, as a dead process would."""


    def _broken(what: str) -> bool:
        return what in os.environ.get("CLI_SHOP_BROKEN", "").split(",")


    def _log(ledger: str, text: str) -> None:
        with Path(ledger).open("a", encoding="utf-8") as file:
            file.write(f"{text} pid={os.getpid()}\\n")


    @default_registry.register
    def reserve(ledger: str, order: str) -> str:
        _log(ledger, f"reserve {order}")
        return f"R-{order}"


    @default_registry.register
    def release(ledger: str, reservation: str) -> None:
        _log(ledger, f"release {reservation}")


    @default_registry.register
    def charge(ledger: str, order: str) -> str:
        if _broken("charge-crash"):
            raise Crash
        _log(ledger, f"charge {order}")
        return f"PAY-{order}"


    @default_registry.register
    def refund(ledger: str, payment: str) -> None:
        if _broken("refund"):
            raise RuntimeError("the refund service is down")
        _log(ledger, f"refund {payment}")


    @default_registry.register
    def ship(ledger: str, order: str) -> str:
        if _broken("ship"):
            raise ValueError(f"no carrier for {order}")
        _log(ledger, f"ship {order}")
        return f"SHP-{order}"
    '''
)


@dataclass(frozen=True, slots=True)
class Run:
    """A finished run of the command line."""

    code: int
    out: str
    err: str
    seconds: float

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the saga and test variables, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "SAGA_STORE_URL" and not k.startswith("CLI_SHOP_")
    }
    env.update(extra or {})
    return env


CliRunner = Callable[..., Run]


@pytest.fixture
def cli(tmp_path: Path) -> CliRunner:
    """``cli("list", "--json", url=...)``: run saga-store in tmp_path and wait for it."""

    def run(*args: str, url: str | None = None, env: dict[str, str] | None = None) -> Run:
        argv = [*COMMAND, *(("--url", url) if url else ()), *args]
        began = time.monotonic()
        done = subprocess.run(
            argv,
            cwd=tmp_path,
            env=cli_env(env),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - began)

    return run


@pytest.fixture
def main_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> CliRunner:
    """Like ``cli``, but calls ``saga_store.cli.main`` in this process (for the many small
    cases around one that runs the real console script)."""

    def run(*args: str, url: str | None = None, env: dict[str, str] | None = None) -> Run:
        with monkeypatch.context() as patch:
            patch.chdir(tmp_path)
            patch.setattr(sys, "path", list(sys.path))  # --import puts the folder on it
            patch.delenv("SAGA_STORE_URL", raising=False)
            for key, value in (env or {}).items():
                patch.setenv(key, value)
            began = time.monotonic()
            code = main([*(("--url", url) if url else ()), *args])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err, time.monotonic() - began)

    return run


def one_error_line(run: Run) -> str:
    """The single stderr line of a failed run (exit 1, no traceback), without its prefix."""
    assert run.code == 1, run
    assert "Traceback" not in run.err, run
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run
    assert lines[0].startswith("saga-store: error: "), run
    return lines[0].removeprefix("saga-store: error: ")


def usage_error(run: Run, message: str) -> None:
    """A bad-arguments run: exit 2, argparse's usage and ``message`` on stderr."""
    assert run.code == 2, run
    assert "Traceback" not in run.err, run
    assert run.err.startswith("usage: saga-store"), run
    assert message in run.err, run


@pytest.fixture
def shop(tmp_path: Path) -> ModuleType:
    """The ``cli_shop`` module, written to tmp_path and imported here too."""
    path = tmp_path / "cli_shop.py"
    path.write_text(SHOP, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("cli_shop", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cli_shop"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def store(db_url: str) -> Iterator[SagaStore]:
    """A migrated store on the test's database (no heartbeat: nothing here runs for long)."""
    with SagaStore(db_url, worker_id="cli-test", heartbeat=False) as saga_store:
        saga_store.upgrade()
        yield saga_store


@dataclass(frozen=True, slots=True)
class Orders:
    """Starts order sagas (reserve, charge, ship) with some functions broken on purpose."""

    store: SagaStore
    shop: ModuleType
    ledger: Path
    monkeypatch: pytest.MonkeyPatch

    def run(self, saga_id: str, *, broken: Sequence[str] = (), name: str = "checkout") -> str:
        """Run one saga here; returns how it ended (a status, or "crashed" mid-step)."""
        shop, ledger = self.shop, str(self.ledger)
        saga = self.store.saga(name, saga_id=saga_id)
        saga.operation(
            Operation(shop.reserve, ledger, saga_id)
            .named("reserve stock")
            .add_compensation(shop.release, ledger, f"R-{saga_id}")
        )
        saga.operation(
            Operation(shop.charge, ledger, saga_id)
            .named("charge card")
            .add_compensation(shop.refund, ledger, f"PAY-{saga_id}")
        )
        saga.operation(Operation(shop.ship, ledger, saga_id).named("ship"))
        with self.monkeypatch.context() as patch:
            patch.setenv("CLI_SHOP_BROKEN", ",".join(broken))
            try:
                saga.orchestrator_execute()
            except SagaException as failed:
                return str(failed.status)
            except shop.Crash:
                return "crashed"
        return "succeeded"

    def lines(self) -> list[str]:
        return self.ledger.read_text(encoding="utf-8").splitlines() if self.ledger.exists() else []


@pytest.fixture
def orders(
    store: SagaStore, shop: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Orders:
    return Orders(store, shop, tmp_path / "ledger.txt", monkeypatch)


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> None:
    """Poll until ``predicate()`` is true (a file or the database), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)

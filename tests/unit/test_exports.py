"""The public names are the ones we mean, and the engine imports nothing beyond the stdlib."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import micro_saga

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "ACTION_RESULT",
    "AsyncOperation",
    "Attempt",
    "AttemptFinished",
    "AttemptStarted",
    "Call",
    "ErrorInfo",
    "Event",
    "InMemoryJournal",
    "Journal",
    "JournalError",
    "LeaseLostError",
    "NullJournal",
    "Operation",
    "RecordedError",
    "ResultNotStored",
    "RetryPolicy",
    "SagaAlreadyRunning",
    "SagaAssembler",
    "SagaCrashedError",
    "SagaDefinitionError",
    "SagaError",
    "SagaException",
    "SagaFinished",
    "SagaPlan",
    "SagaStarted",
    "SagaState",
    "StatusChanged",
    "StepContext",
    "StepContextError",
    "StepInterruptedError",
    "StepPlan",
    "current_step",
    "idempotency_key",
}

SUBMODULES = sorted(f"micro_saga.{info.name}" for info in pkgutil.iter_modules(micro_saga.__path__))


def test_all_is_exactly_the_public_api() -> None:
    assert len(micro_saga.__all__) == len(set(micro_saga.__all__))
    assert set(micro_saga.__all__) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_public_name_is_importable(name: str) -> None:
    module = __import__("micro_saga", fromlist=[name])

    assert getattr(module, name) is not None


def test_every_exception_has_the_one_root() -> None:
    errors = [
        value
        for value in vars(micro_saga).values()
        if isinstance(value, type) and issubclass(value, BaseException)
    ]

    assert len(errors) == 11
    assert all(issubclass(error, micro_saga.SagaError) for error in errors)


@pytest.mark.parametrize("module", SUBMODULES)
def test_each_module_exports_what_it_defines(module: str) -> None:
    imported = importlib.import_module(module)
    exported = getattr(imported, "__all__", None)

    assert exported is not None
    assert all(hasattr(imported, name) for name in exported)


def test_the_engine_imports_only_the_standard_library() -> None:
    # -I: no user site, no PYTHON* variables, no script directory; only the repo is added.
    # Whatever the interpreter itself loaded at startup (site hooks) is left out.
    script = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import importlib, json\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        f"for name in ['micro_saga', *{SUBMODULES!r}]:\n"
        "    importlib.import_module(name)\n"
        "new = sorted(set(sys.modules) - before)\n"
        "print(json.dumps({'file': sys.modules['micro_saga'].__file__, 'modules': new}))\n"
    )

    completed = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, check=True, timeout=60
    )

    report = json.loads(completed.stdout)
    assert Path(report["file"]) == ROOT / "micro_saga" / "__init__.py"
    foreign = [
        name
        for name in report["modules"]
        if name.partition(".")[0] not in {*sys.stdlib_module_names, "micro_saga"}
        # sysconfig's generated data module has a platform-specific name
        and not name.startswith("_sysconfigdata_")
    ]
    assert foreign == []
    assert set(SUBMODULES) <= set(report["modules"])

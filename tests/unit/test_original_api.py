"""The original library's API and README examples keep working unchanged."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import micro_saga
from micro_saga import Operation, SagaAssembler
from micro_saga.plan import Mode
from tests.unit.helpers import Log, Runner, execute


def create_resource(x: Any) -> Any:
    print(f"Creating resource {x}")
    return x


def delete_resource(x: Any) -> None:
    print(f"Deleting resource {x}")


def fail_resource(x: Any) -> Any:
    print(f"Failing resource {x}")
    raise RuntimeError(f"resource {x} is unavailable")


# -- the README, as written ----------------------------------------------------------------


def test_readme_defining_operations() -> None:
    op = Operation(create_resource, 42).add_compensation(delete_resource, 42)

    assert isinstance(op, Operation)
    assert op.action() == 42
    assert op.compensation is not None
    assert op.compensation() is None


def test_readme_orchestrated_saga(capsys: pytest.CaptureFixture[str]) -> None:
    op = Operation(create_resource, 42).add_compensation(delete_resource, 42)

    saga = SagaAssembler.saga(retry_attempts=3)
    saga.operation(op)
    try:
        results = saga.orchestrator_execute()
        print("Saga succeeded:", results)
    except SagaAssembler.SagaException as e:
        print("Saga failed:", e)

    assert capsys.readouterr().out == "Creating resource 42\nSaga succeeded: [42]\n"


def test_readme_choreographed_saga(capsys: pytest.CaptureFixture[str]) -> None:
    op = Operation(create_resource, 42).add_compensation(delete_resource, 42)

    saga = SagaAssembler.saga(retry_attempts=2)
    saga.operation(op)
    try:
        results = saga.choreography_execute()
        print("Saga succeeded:", results)
    except SagaAssembler.SagaException as e:
        print("Saga failed:", e)

    assert capsys.readouterr().out == "Creating resource 42\nSaga succeeded: [42]\n"


@pytest.mark.parametrize("mode", ["orchestrated", "choreographed"])
def test_readme_multiple_operations(mode: Mode) -> None:
    op1 = Operation(create_resource, 1).add_compensation(delete_resource, 1)
    op2 = Operation(create_resource, 2).add_compensation(delete_resource, 2)

    saga = SagaAssembler.saga()
    chained = saga.operation(op1).operation(op2)

    assert chained is saga
    assert execute(saga, mode, "sync") == [1, 2]


def test_readme_saga_exception(capsys: pytest.CaptureFixture[str]) -> None:
    op1 = Operation(create_resource, 1).add_compensation(delete_resource, 1)
    op2 = Operation(fail_resource, 2).add_compensation(delete_resource, 2)

    saga = SagaAssembler.saga(retry_attempts=2)
    saga.operation(op1).operation(op2)
    try:
        results = saga.orchestrator_execute()
        print("Saga succeeded:", results)
    except SagaAssembler.SagaException as e:
        print("Saga failed:", e)

    assert capsys.readouterr().out.splitlines() == [
        "Creating resource 1",
        "Failing resource 2",
        "Failing resource 2",
        "Deleting resource 1",
        "Saga failed: resource 2 is unavailable",
    ]


# -- the exception ------------------------------------------------------------------------


def test_saga_exception_is_importable_from_both_places() -> None:
    assert SagaAssembler.SagaException is micro_saga.SagaException
    assert issubclass(micro_saga.SagaException, micro_saga.SagaError)


def test_saga_exception_reports_the_operation_error() -> None:
    saga = SagaAssembler.saga().operation(Operation(fail_resource, 7))

    with pytest.raises(SagaAssembler.SagaException) as caught:
        saga.orchestrator_execute()

    e = caught.value
    assert isinstance(e.operation_error, RuntimeError)
    assert str(e) == str(e.operation_error) == "resource 7 is unavailable"
    assert e.operation_name == "fail_resource"
    assert e.compensation_success_result is None
    assert e.compensation_errors is None


def test_saga_exception_keeps_the_original_positional_signature() -> None:
    error = KeyError("k")

    e = micro_saga.SagaException(error, "op", ["undone"], ["undo broke"])

    assert e.operation_error is error
    assert e.operation_name == "op"
    assert e.compensation_success_result == ["undone"]
    assert e.compensation_errors == ["undo broke"]
    assert str(e) == str(error)


@pytest.mark.parametrize("mode", ["orchestrated", "choreographed"])
@pytest.mark.parametrize("runner", ["sync", "async"])
def test_an_empty_saga_raises_saga_exception(mode: Mode, runner: Runner) -> None:
    with pytest.raises(SagaAssembler.SagaException, match="Set operation first"):
        execute(SagaAssembler.saga(), mode, runner)


# -- retry_attempts is the total number of attempts ---------------------------------------


@pytest.mark.parametrize(
    ("retry_attempts", "failures", "calls", "succeeds"),
    [
        (None, 1, 1, False),
        (None, 0, 1, True),
        (0, 1, 1, False),
        (1, 1, 1, False),
        (2, 1, 2, True),
        (2, 2, 2, False),
        (3, 2, 3, True),
        (3, 3, 3, False),
    ],
)
@pytest.mark.parametrize("mode", ["orchestrated", "choreographed"])
def test_retry_attempts_is_the_total_number_of_attempts(
    log: Log, mode: Mode, retry_attempts: int | None, failures: int, calls: int, succeeds: bool
) -> None:
    saga = SagaAssembler.saga(retry_attempts).operation(
        Operation(log.failing("flaky", times=failures, result="ok"))
    )

    if succeeds:
        assert execute(saga, mode, "sync") == ["ok"]
    else:
        with pytest.raises(SagaAssembler.SagaException, match="flaky broke"):
            execute(saga, mode, "sync")
    assert log.count("flaky") == calls


# -- Operation(func, *args, **kwargs) passes everything on --------------------------------


def test_operation_passes_every_argument_to_its_function() -> None:
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def record(*args: Any, **kwargs: Any) -> str:
        seen.append((args, kwargs))
        return "done"

    kwargs = {"name": "n", "retry": "r", "func": "f", "self": "s", "compensation": "c", "call": 1}
    op = Operation(record, 1, 2, **kwargs).add_compensation(record, 3, **kwargs)
    saga = SagaAssembler.saga().operation(op).operation(Operation(fail_resource, 0))

    with pytest.raises(SagaAssembler.SagaException):
        saga.orchestrator_execute()

    assert seen == [((1, 2), kwargs), ((3,), kwargs)]
    assert op.name == "record"
    assert op.retry is None


def test_results_come_in_operation_order_when_steps_finish_out_of_order() -> None:
    async def slow() -> str:
        await second_done.wait()
        return "first"

    async def fast() -> str:
        second_done.set()
        return "second"

    async def main() -> list[Any]:
        saga = SagaAssembler.saga()
        saga.operation(micro_saga.AsyncOperation(slow)).operation(micro_saga.AsyncOperation(fast))
        return await saga.choreography_execute_async()

    second_done = asyncio.Event()

    assert asyncio.run(main()) == ["first", "second"]

"""SagaAssembler: the original library's entry point, with names, ids, policies and a journal."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar, Self

from . import core
from .async_runner import AsyncSleep, run_async
from .checks import is_text, is_whole, loop_running
from .errors import SagaDefinitionError, SagaException
from .journal import Journal, NullJournal
from .operation import Operation
from .plan import CrashPolicy, Mode, SagaPlan, StepPlan, new_saga_id
from .retry import RetryPolicy
from .runner import Sleep, run

__all__ = ["SagaAssembler"]

_NO_OPERATIONS = "Set operation first to execute the saga."


class SagaAssembler:
    """Assemble operations into a saga and execute it, orchestrated or choreographed.

    ``retry_attempts`` is the total number of attempts per operation (None means 1); ``retry``
    is a full saga-wide :class:`RetryPolicy` instead. Operations may override it, and their
    compensations retry by ``compensation_retry`` (default: the saga-wide policy).
    """

    SagaException: ClassVar[type[SagaException]] = SagaException

    def __init__(
        self,
        retry_attempts: int | None = None,
        *,
        name: str | None = None,
        saga_id: str | None = None,
        retry: RetryPolicy | None = None,
        compensation_retry: RetryPolicy | None = None,
        journal: Journal | None = None,
        on_crash: CrashPolicy = "resume",
        max_interruptions: int = 3,
        sleep: Sleep = time.sleep,
        async_sleep: AsyncSleep = asyncio.sleep,
    ) -> None:
        if retry is not None and retry_attempts is not None:
            raise SagaDefinitionError("pass either retry_attempts or retry=RetryPolicy(...)")
        self.retry = retry if retry is not None else RetryPolicy(attempts=_attempts(retry_attempts))
        self.compensation_retry = compensation_retry or self.retry
        if saga_id is not None and not is_text(saga_id):
            raise SagaDefinitionError(f"saga_id must be a non-empty str, got {saga_id!r}")
        if saga_id is not None and saga_id != saga_id.strip():
            # databases disagree on whether "a " equals "a": an id must not depend on that
            raise SagaDefinitionError(
                f"saga_id {saga_id!r} has leading or trailing white space: strip it"
            )
        if on_crash not in ("resume", "compensate"):
            raise SagaDefinitionError(
                f"on_crash must be 'resume' or 'compensate', got {on_crash!r}"
            )
        if not is_whole(max_interruptions) or max_interruptions < 0:
            raise SagaDefinitionError(
                f"max_interruptions must be an int >= 0, got {max_interruptions!r}"
            )
        self.name = name
        self.saga_id = saga_id
        self.journal: Journal = journal if journal is not None else NullJournal()
        self.on_crash: CrashPolicy = on_crash
        self.max_interruptions = max_interruptions
        self.sleep = sleep
        self.async_sleep = async_sleep
        self.operations: list[Operation] = []

    @staticmethod
    def saga(retry_attempts: int | None = None, **options: Any) -> SagaAssembler:
        """Create a saga (options as for the constructor)."""
        return SagaAssembler(retry_attempts, **options)

    def operation(self, operation: Operation) -> Self:
        """Add an operation; returns the saga, so calls chain."""
        if not isinstance(operation, Operation):
            raise SagaDefinitionError(
                f"expected an Operation, got {operation!r}: wrap it as Operation(func, *args)"
            )
        self.operations.append(operation)
        return self

    def plan(self, mode: Mode) -> SagaPlan:
        """The plan this saga would run (a journal records it when the saga starts)."""
        if not self.operations:
            raise SagaException(Exception(_NO_OPERATIONS))
        steps = tuple(
            StepPlan(
                index=i,
                name=op.name,
                action=op.call,
                compensation=op.compensation_call,
                retry=op.retry or self.retry,
                compensation_retry=op.compensation_retry or self.compensation_retry,
            )
            for i, op in enumerate(self.operations)
        )
        return SagaPlan(
            saga_id=self.saga_id or new_saga_id(),
            fresh=self.saga_id is None,
            name=self.name,
            mode=mode,
            steps=steps,
            on_crash=self.on_crash,
            max_interruptions=self.max_interruptions,
        )

    def orchestrator_execute(self) -> list[Any]:
        """Run the operations one after another; on failure compensate the completed ones in
        reverse order and raise SagaException. Returns the results in operation order."""
        return self._execute("orchestrated")

    def choreography_execute(self) -> list[Any]:
        """Run the operations concurrently; on failure wait for all in flight, compensate every
        one that completed and raise SagaException. Returns the results in operation order."""
        return self._execute("choreographed")

    async def orchestrator_execute_async(self) -> list[Any]:
        """``orchestrator_execute`` inside an event loop."""
        return await self._execute_async("orchestrated")

    async def choreography_execute_async(self) -> list[Any]:
        """``choreography_execute`` inside an event loop (coroutines run as tasks)."""
        return await self._execute_async("choreographed")

    def _execute(self, mode: Mode) -> list[Any]:
        plan = self.plan(mode)
        if plan.is_async:
            if loop_running():
                raise SagaDefinitionError(
                    "this saga has coroutine functions and an event loop is running: "
                    f"await saga.{_async_name(mode)}() instead"
                )
            return asyncio.run(self._run_async(plan))
        return run(plan, self.journal, sleep=self.sleep, rand=core.default_rand)

    async def _execute_async(self, mode: Mode) -> list[Any]:
        return await self._run_async(self.plan(mode))

    async def _run_async(self, plan: SagaPlan) -> list[Any]:
        return await run_async(plan, self.journal, sleep=self.async_sleep, rand=core.default_rand)


def _attempts(retry_attempts: int | None) -> int:
    if retry_attempts is None:
        return 1
    if not is_whole(retry_attempts):
        raise SagaDefinitionError(
            f"retry_attempts must be an int (total attempts per operation), got {retry_attempts!r}"
        )
    if retry_attempts < 0:
        raise SagaDefinitionError(f"retry_attempts must be >= 1, got {retry_attempts}")
    return retry_attempts or 1  # the original library treats 0 as 1


def _async_name(mode: Mode) -> str:
    return "orchestrator_execute_async" if mode == "orchestrated" else "choreography_execute_async"

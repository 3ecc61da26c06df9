"""The one exception tree of micro_saga.

::

    SagaError                      root: catch this to catch everything we raise
    ├── SagaException              a saga failed; carries the compensation report
    ├── SagaDefinitionError        bad input, refused before any step runs (also a ValueError)
    │   └── ResultNotStored        a step returned what the journal cannot store
    ├── SagaAlreadyRunning         the saga id is being executed by another owner
    ├── StepContextError           current_step() called outside a running step
    ├── JournalError               the journal could not record or read
    │   └── LeaseLostError         fencing: another worker owns this saga now
    └── RecordedError              an error read back from the journal (the live one is gone)
        ├── StepInterruptedError   a step's process died too often while running it
        └── SagaCrashedError       rolled back because on_crash="compensate"
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "JournalError",
    "LeaseLostError",
    "RecordedError",
    "ResultNotStored",
    "SagaAlreadyRunning",
    "SagaCrashedError",
    "SagaDefinitionError",
    "SagaError",
    "SagaException",
    "StepContextError",
    "StepInterruptedError",
]


class SagaError(Exception):
    """Root of every exception micro_saga raises."""


class SagaException(SagaError):
    """A saga failed: an operation gave up and the completed ones were compensated.

    The positional signature and attribute names are the original library's.
    ``str(e)`` is ``str(e.operation_error)``.
    """

    def __init__(
        self,
        operation_error: BaseException,
        operation_name: str | None = None,
        compensation_success_result: list[Any] | None = None,
        compensation_error: list[str] | None = None,
        *,
        saga_id: str | None = None,
        status: str | None = None,
    ) -> None:
        self.operation_error = operation_error
        self.operation_name = operation_name
        self.compensation_success_result = compensation_success_result
        self.compensation_errors = compensation_error
        self.saga_id = saga_id
        #: final status: "compensated" (clean rollback) or "failed" (a compensation gave up)
        self.status = status
        super().__init__(str(operation_error))


class SagaDefinitionError(SagaError, ValueError):
    """The saga, an operation or an argument is invalid; nothing has run."""


class ResultNotStored(SagaDefinitionError):
    """A step returned a value the journal cannot store: the step gives up (its action ran,
    so it is compensated on rollback, never retried)."""


class SagaAlreadyRunning(SagaError):
    """The saga id is being executed by another owner; it was not started twice."""


class StepContextError(SagaError, LookupError):
    """``current_step()`` was called outside a running saga step."""


class JournalError(SagaError):
    """The journal could not record or read a saga's history."""


class LeaseLostError(JournalError):
    """Another worker took this saga over (our lease expired); we must not touch it."""


class RecordedError(SagaError):
    """An operation error read back from the journal, where the live exception is gone."""

    def __init__(self, error_type: str, message: str, traceback: str | None = None) -> None:
        self.error_type = error_type
        self.message = message
        self.traceback = traceback
        super().__init__(message)


class StepInterruptedError(RecordedError):
    """A step was interrupted (its process died) more often than its budget allows."""


class SagaCrashedError(RecordedError):
    """The saga's process died and its policy is to roll back after a crash."""

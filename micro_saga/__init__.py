"""micro_saga: sagas with retries and compensations, orchestrated or choreographed.

Standard library only. A :class:`Journal` (such as ``saga_store.SagaStore``) makes them durable.
"""

from __future__ import annotations

from .assembler import SagaAssembler
from .context import StepContext, current_step, idempotency_key
from .errors import (
    JournalError,
    LeaseLostError,
    RecordedError,
    ResultNotStored,
    SagaAlreadyRunning,
    SagaCrashedError,
    SagaDefinitionError,
    SagaError,
    SagaException,
    StepContextError,
    StepInterruptedError,
)
from .journal import InMemoryJournal, Journal, NullJournal
from .operation import ACTION_RESULT, AsyncOperation, Call, Operation
from .plan import SagaPlan, StepPlan
from .retry import RetryPolicy
from .state import (
    Attempt,
    AttemptFinished,
    AttemptStarted,
    ErrorInfo,
    Event,
    SagaFinished,
    SagaStarted,
    SagaState,
    StatusChanged,
)

__all__ = [
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
]

__version__ = "0.1.0"

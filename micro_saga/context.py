"""What a running step can know about itself: saga id, step, attempt, idempotency key."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

from .errors import StepContextError

__all__ = ["StepContext", "StepKind", "current_step", "idempotency_key"]

StepKind = Literal["action", "compensation"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StepContext:
    """The saga step being run in this context."""

    saga_id: str
    saga_name: str | None
    step: int
    step_name: str
    kind: StepKind
    attempt: int

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts and recoveries: pass it to the services the step calls."""
        return step_key(self.saga_id, self.step, self.kind)


def step_key(saga_id: str, step: int, kind: StepKind) -> str:
    base = f"{saga_id}:{step}"
    return base if kind == "action" else f"{base}:compensation"


CURRENT: ContextVar[StepContext | None] = ContextVar("micro_saga_step", default=None)


def current_step() -> StepContext:
    """The step running in this context; raises StepContextError outside a saga step."""
    ctx = CURRENT.get()
    if ctx is None:
        raise StepContextError(
            "current_step() was called outside a saga step: call it from an operation "
            "or compensation while the saga runs"
        )
    return ctx


def idempotency_key() -> str:
    """Shorthand for ``current_step().idempotency_key``."""
    return current_step().idempotency_key

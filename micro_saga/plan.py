"""The immutable plan of a saga: what a journal records when the saga starts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from . import clock
from .context import StepKind
from .operation import Call
from .retry import RetryPolicy

__all__ = ["CrashPolicy", "Mode", "SagaPlan", "StepPlan", "new_saga_id"]

Mode = Literal["orchestrated", "choreographed"]
CrashPolicy = Literal["resume", "compensate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StepPlan:
    """One operation of a saga, with its retry policies resolved."""

    index: int
    name: str
    action: Call
    compensation: Call | None
    retry: RetryPolicy
    compensation_retry: RetryPolicy

    def call(self, kind: StepKind) -> Call | None:
        return self.action if kind == "action" else self.compensation

    def policy(self, kind: StepKind) -> RetryPolicy:
        return self.retry if kind == "action" else self.compensation_retry


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaPlan:
    """Everything needed to run (or rebuild) a saga."""

    saga_id: str
    name: str | None
    mode: Mode
    steps: tuple[StepPlan, ...]
    on_crash: CrashPolicy = "resume"
    #: interrupted attempts (process died mid-step) tolerated per step before giving up
    max_interruptions: int = 3
    #: the saga id was generated for this run, so no journal can know it yet: a journal may
    #: skip looking it up (not journaled; a rebuilt plan is never fresh)
    fresh: bool = field(default=False, compare=False)

    @property
    def is_async(self) -> bool:
        return any(
            call.is_async
            for step in self.steps
            for call in (step.action, step.compensation)
            if call is not None
        )


_MS_BITS = 48
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_RAND_B_BITS = 62


def new_saga_id() -> str:
    """A generated saga id: a UUID of version 7 (RFC 9562), as 32 hex digits.

    Its first 48 bits are the Unix time in milliseconds, so ids made later sort later and the
    journal's indexes take a new saga at their end (a random uuid4 lands anywhere in them, each
    insert on another page); the other 74 bits are random.
    """
    ms = ((clock.utcnow() - _EPOCH) // _MS) & ((1 << _MS_BITS) - 1)  # the one time seam
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, of which 74 are used
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << _RAND_B_BITS) - 1)
    value = ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << _RAND_B_BITS | rand_b
    return f"{value:032x}"

"""Retry policies: how many attempts, how long to wait between them, which errors retry.

The math is pure (:meth:`RetryPolicy.delay_for`); runners do the sleeping through a seam.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .checks import is_whole
from .errors import SagaDefinitionError

__all__ = ["LONGEST_DELAY", "Backoff", "ErrorSpec", "RetryPolicy", "error_name"]

#: no single wait is longer than a year, whatever the policy's math says
LONGEST_DELAY = 365 * 24 * 3600.0

Backoff = Literal["fixed", "exponential"]
#: an exception class, or its "module.QualName" as recorded in a journal
ErrorSpec = type[BaseException] | str


def error_name(cls: type[BaseException]) -> str:
    """The stable name of an exception class: ``module.QualName`` (``ValueError`` for builtins)."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _matches(exc: BaseException, specs: tuple[ErrorSpec, ...]) -> bool:
    # Names match along the MRO, so a policy rebuilt from the journal needs no import.
    for cls in type(exc).__mro__:
        for spec in specs:
            if spec is cls or spec == error_name(cls):
                return True
    return False


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When to try an operation (or a compensation) again.

    ``attempts`` is the total number of attempts (1 means no retry). The wait before attempt
    ``k + 1`` after ``k`` failures is ``delay`` (fixed) or ``delay * multiplier ** (k - 1)``
    (exponential), capped at ``max_delay``, plus up to ``jitter`` random seconds. An error
    retries when it matches ``retry_on`` and not ``never_retry_on``.
    """

    attempts: int = 1
    backoff: Backoff = "fixed"
    delay: float = 0.0
    multiplier: float = 2.0
    max_delay: float | None = None
    jitter: float = 0.0
    retry_on: tuple[ErrorSpec, ...] = (Exception,)
    never_retry_on: tuple[ErrorSpec, ...] = ()

    def __post_init__(self) -> None:
        if not is_whole(self.attempts):
            raise SagaDefinitionError(
                f"retry attempts must be an int, got {self.attempts!r}: pass e.g. attempts=3"
            )
        if self.attempts < 1:
            raise SagaDefinitionError(
                f"retry attempts must be at least 1 (the total number of tries), "
                f"got {self.attempts}"
            )
        if self.backoff not in ("fixed", "exponential"):
            raise SagaDefinitionError(
                f"backoff must be 'fixed' or 'exponential', got {self.backoff!r}"
            )
        for field, value in (("delay", self.delay), ("jitter", self.jitter)):
            if not _finite_non_negative(value):
                raise SagaDefinitionError(
                    f"{field} must be a finite number of seconds >= 0, got {value!r}"
                )
        if self.max_delay is not None and not _finite_non_negative(self.max_delay):
            raise SagaDefinitionError(
                f"max_delay must be None or a number of seconds >= 0, got {self.max_delay!r}"
            )
        if not _finite_non_negative(self.multiplier) or self.multiplier < 1:
            raise SagaDefinitionError(f"multiplier must be >= 1, got {self.multiplier!r}")
        for field, specs in (("retry_on", self.retry_on), ("never_retry_on", self.never_retry_on)):
            if not _is_specs(specs):
                raise SagaDefinitionError(
                    f"{field} must be a tuple of exception classes, got {specs!r}"
                )

    def delay_for(self, failures: int, rand: float = 0.0) -> float:
        """Seconds to wait after ``failures`` failed attempts; ``rand`` in [0, 1) scales jitter."""
        if self.backoff == "fixed" or failures < 1:
            base = self.delay
        else:
            try:
                base = self.delay * self.multiplier ** (failures - 1)
            except OverflowError:  # a policy that retries (nearly) for ever
                base = math.inf
        cap = LONGEST_DELAY if self.max_delay is None else min(self.max_delay, LONGEST_DELAY)
        return min(base, cap) + self.jitter * rand

    def retries(self, exc: BaseException) -> bool:
        """Whether this error may be retried at all (attempts left aside)."""
        return _matches(exc, self.retry_on) and not _matches(exc, self.never_retry_on)

    def retry_after(self, failures: int, exc: BaseException, rand: float = 0.0) -> float | None:
        """Seconds until the next attempt after the ``failures``-th failure, or None: give up."""
        if failures >= self.attempts or not self.retries(exc):
            return None
        return self.delay_for(failures, rand)


def _finite_non_negative(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _is_specs(specs: object) -> bool:
    return isinstance(specs, tuple) and all(_is_spec(s) for s in specs)


def _is_spec(spec: object) -> bool:
    return isinstance(spec, str) or (isinstance(spec, type) and issubclass(spec, BaseException))

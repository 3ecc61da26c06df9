"""Operations: an action, an optional compensation, and how to retry each."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Final, Self, final

from .checks import is_text
from .errors import SagaDefinitionError
from .retry import RetryPolicy

__all__ = ["ACTION_RESULT", "AsyncOperation", "Call", "Operation"]


@final
class _ActionResult:
    """Placeholder for the action's result among a compensation's arguments."""

    _instance: _ActionResult | None = None

    def __new__(cls) -> _ActionResult:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ACTION_RESULT"

    def __reduce__(self) -> str:
        return "ACTION_RESULT"


#: Put this among a compensation's arguments to receive what the action returned
#: (as recorded in the journal when the compensation runs after a crash).
ACTION_RESULT: Final = _ActionResult()


class Call:
    """A function with the arguments to call it with."""

    __slots__ = ("args", "func", "is_async", "kwargs")

    def __init__(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]):
        if not callable(func):
            raise SagaDefinitionError(f"expected a callable, got {func!r}")
        self.func = func
        self.args = args
        self.kwargs = kwargs
        #: asked for every call of a saga each time it runs: inspect once, here
        self.is_async: bool = inspect.iscoroutinefunction(func)

    def bind(self, action_result: Any = None) -> functools.partial[Any]:
        """The call as a partial, with ACTION_RESULT replaced by ``action_result``."""
        args = tuple(action_result if a is ACTION_RESULT else a for a in self.args)
        kwargs = {k: action_result if v is ACTION_RESULT else v for k, v in self.kwargs.items()}
        return functools.partial(self.func, *args, **kwargs)

    def __repr__(self) -> str:
        return (
            f"Call({getattr(self.func, '__qualname__', self.func)!r}, {self.args}, {self.kwargs})"
        )


class Operation:
    """An action to run, with an optional compensation that undoes it.

    ``Operation(func, *args, **kwargs)`` passes every argument to ``func``; the fluent
    methods (``add_compensation``, ``named``, ``with_retry``, ``with_compensation_retry``)
    configure the rest and return the operation.
    """

    def __init__(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        self.call = Call(func, args, kwargs)
        self.compensation_call: Call | None = None
        self.name: str = getattr(func, "__name__", type(func).__name__)
        self.retry: RetryPolicy | None = None
        self.compensation_retry: RetryPolicy | None = None

    @property
    def action(self) -> functools.partial[Any]:
        """The action as a partial (as in the original library)."""
        return self.call.bind()

    @property
    def compensation(self) -> functools.partial[Any] | None:
        """The compensation as a partial, or None (as in the original library)."""
        return None if self.compensation_call is None else self.compensation_call.bind()

    def add_compensation(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Self:
        """Undo the action with ``func(*args, **kwargs)``; pass ACTION_RESULT to get its result."""
        self.compensation_call = Call(func, args, kwargs)
        return self

    def named(self, name: str) -> Self:
        """Name the step (shown in history and in ``SagaException.operation_name``)."""
        if not is_text(name):
            raise SagaDefinitionError(f"an operation name must be a non-empty str, got {name!r}")
        self.name = name
        return self

    def with_retry(self, policy: RetryPolicy | None = None, /, **options: Any) -> Self:
        """Retry the action by ``policy`` or by RetryPolicy options (``attempts=3, delay=1``)."""
        self.retry = _policy(policy, options)
        return self

    def with_compensation_retry(self, policy: RetryPolicy | None = None, /, **options: Any) -> Self:
        """Retry the compensation by ``policy`` or by RetryPolicy options."""
        self.compensation_retry = _policy(policy, options)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class AsyncOperation(Operation):
    """An operation whose action (and compensation) are coroutine functions."""


def _policy(policy: RetryPolicy | None, options: dict[str, Any]) -> RetryPolicy:
    if policy is not None and options:
        raise SagaDefinitionError("pass either a RetryPolicy or its options, not both")
    if policy is not None:
        if not isinstance(policy, RetryPolicy):
            raise SagaDefinitionError(f"expected a RetryPolicy, got {policy!r}")
        return policy
    try:
        return RetryPolicy(**options)
    except TypeError as exc:
        raise SagaDefinitionError(f"unknown retry option: {exc}") from None

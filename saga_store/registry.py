"""The function registry: the only way code is found again from what the database says.

Nothing read from the database is imported or called unless it was registered here.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar, overload

from micro_saga.checks import is_text

from .errors import UnregisteredFunction

__all__ = ["Registry", "default_registry"]

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """Stable names to functions, and back."""

    def __init__(self) -> None:
        self._by_name: dict[str, Callable[..., Any]] = {}
        self._names: dict[Callable[..., Any], str] = {}
        self._lock = threading.Lock()

    @overload
    def register(self, func: F, /, *, name: str | None = None) -> F: ...

    @overload
    def register(self, func: None = None, /, *, name: str | None = None) -> Callable[[F], F]: ...

    def register(
        self, func: Callable[..., Any] | None = None, /, *, name: str | None = None
    ) -> Any:
        """Decorator: make ``func`` findable as ``name`` (default ``module:qualname``)."""
        if func is None:
            return lambda f: self.add(f, name)
        return self.add(func, name)

    def add(self, func: F, name: str | None = None) -> F:
        _check_registrable(func)
        stable = name if name is not None else default_name(func)
        if not is_text(stable):
            raise UnregisteredFunction(f"a registered name must be a non-empty str, got {name!r}")
        with self._lock:
            known = self._by_name.get(stable)
            if (
                known is not None
                and known is not func
                and default_name(known) != default_name(func)
            ):
                raise UnregisteredFunction(
                    f"the name {stable!r} is already registered for {default_name(known)}: "
                    "pass register(name=...) with a different name"
                )
            self._by_name[stable] = func
            self._names[func] = stable
        return func

    def name_of(self, func: Callable[..., Any]) -> str:
        """The registered name of ``func``; refuses anything not registered."""
        try:
            return self._names[func]  # what is here passed _check_registrable when registered
        except (KeyError, TypeError):
            pass
        _check_registrable(func)  # the more telling error first
        raise UnregisteredFunction(
            f"{default_name(func)} is not registered: decorate it with @store.register "
            "(durable sagas may only call registered functions)"
        )

    def resolve(self, name: str) -> Callable[..., Any]:
        """The function registered as ``name``."""
        try:
            return self._by_name[name]
        except KeyError:
            raise UnregisteredFunction(
                f"no function is registered as {name!r}: import the module that registers it "
                "(saga-store recover --import MODULE) or register it under that name"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name


def default_name(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or repr(func)
    return f"{module}:{qualname}"


def _check_registrable(func: Callable[..., Any]) -> None:
    if not (inspect.isfunction(func) or inspect.isbuiltin(func)):
        raise UnregisteredFunction(
            f"{func!r} is not a plain function: durable sagas call module-level functions "
            "registered with @store.register (wrap methods or partials in one)"
        )
    qualname = func.__qualname__
    if func.__name__ == "<lambda>":
        raise UnregisteredFunction(
            f"a lambda ({default_name(func)}) cannot be found again after a restart: "
            "define a module-level function and register it"
        )
    if "<locals>" in qualname:
        raise UnregisteredFunction(
            f"{default_name(func)} is defined inside a function (a closure) and cannot be found "
            "again after a restart: move it to module level and register it"
        )


#: the registry every store uses unless given another
default_registry = Registry()

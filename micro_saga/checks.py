"""Runtime checks of what callers pass in (type hints do not stop a wrong value at run time)."""

from __future__ import annotations

import asyncio

__all__ = ["is_text", "is_whole", "loop_running"]


def is_whole(value: object) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_text(value: object) -> bool:
    """A str with something besides white space."""
    return isinstance(value, str) and bool(value.strip())


def loop_running() -> bool:
    """Whether an asyncio event loop runs in this thread (asyncio.run would refuse)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True

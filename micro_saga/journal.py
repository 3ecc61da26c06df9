"""The journal protocol: where the engine reports every transition and asks what happened.

A journal that does I/O (the SQL store) implements the same three calls as the in-memory one:

* ``open(plan)`` before anything runs: the saga's prior state, or None if it is new. It may
  refuse (``SagaAlreadyRunning``) when another owner is executing that saga id.
* ``record(events, durable=...)``: append events. With ``durable=True`` everything recorded so
  far for that saga must be committed before the call returns (the engine asks for this before
  it calls a step); with ``durable=False`` the journal may hold the events until the next
  durable write, so "step i finished" and "step i+1 started" share one commit.
* ``release(saga_id)`` when this process stops executing the saga, finished or not.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .errors import SagaAlreadyRunning
from .plan import SagaPlan
from .state import Event, SagaStarted, SagaState

__all__ = ["InMemoryJournal", "Journal", "NullJournal"]


@runtime_checkable
class Journal(Protocol):
    """What the engine needs from a journal."""

    #: True when calls do blocking I/O: the async runner then calls them in a worker thread
    blocks: bool

    def open(self, plan: SagaPlan) -> SagaState | None: ...

    def record(self, events: Sequence[Event], *, durable: bool) -> None: ...

    def release(self, saga_id: str) -> None: ...


class NullJournal:
    """Remembers nothing: the engine runs in memory, exactly like the original library."""

    blocks = False

    def open(self, plan: SagaPlan) -> SagaState | None:
        return None

    def record(self, events: Sequence[Event], *, durable: bool) -> None:
        return None

    def release(self, saga_id: str) -> None:
        return None


class InMemoryJournal:
    """Keeps every event in memory: for tests, and for sagas that must not run twice per process.

    ``events`` is every event in order; ``batches`` is each ``record`` call with its durability,
    so tests can check what would have shared a commit.
    """

    blocks = False

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.batches: list[tuple[tuple[Event, ...], bool]] = []
        self._states: dict[str, SagaState] = {}
        self._open: set[str] = set()
        self._lock = threading.Lock()

    def open(self, plan: SagaPlan) -> SagaState | None:
        with self._lock:
            if plan.saga_id in self._open:
                raise SagaAlreadyRunning(
                    f"saga {plan.saga_id!r} is already being executed; wait for it to finish"
                )
            self._open.add(plan.saga_id)
            state = self._states.get(plan.saga_id)
            return None if state is None else _copy(state)

    def record(self, events: Sequence[Event], *, durable: bool) -> None:
        with self._lock:
            self.batches.append((tuple(events), durable))
            for event in events:
                self.events.append(event)
                if isinstance(event, SagaStarted):
                    self._states[event.plan.saga_id] = SagaState.new(event)
                else:
                    self._states[event.saga_id].apply(event)

    def release(self, saga_id: str) -> None:
        with self._lock:
            self._open.discard(saga_id)

    def state(self, saga_id: str) -> SagaState | None:
        """A copy of what the journal knows of one saga."""
        with self._lock:
            state = self._states.get(saga_id)
            return None if state is None else _copy(state)


def _copy(state: SagaState) -> SagaState:
    return SagaState(
        saga_id=state.saga_id,
        name=state.name,
        status=state.status,
        created_at=state.created_at,
        finished_at=state.finished_at,
        attempts=list(state.attempts),
    )

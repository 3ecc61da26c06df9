"""Recovery keeps going: backoffs begun during a pass, sagas that break the engine, renamed
functions, and the journal's view while a heartbeat runs between writes."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import pytest
from freezegun import freeze_time

from micro_saga import (
    AsyncOperation,
    Event,
    Operation,
    RetryPolicy,
    SagaDefinitionError,
    SagaException,
)
from saga_store import Registry, SagaStore, claims
from tests.integration.recovery_support import START, Crash, dying_process

CALLS: dict[str, int] = {}
FAIL_ONCE: set[str] = set()


def step(label: str) -> str:
    CALLS[label] = CALLS.get(label, 0) + 1
    if label in FAIL_ONCE:
        FAIL_ONCE.discard(label)
        raise ConnectionError(f"{label}: try later")
    return label


def crash(label: str) -> str:
    CALLS[label] = CALLS.get(label, 0) + 1
    raise Crash(label)


async def later(label: str) -> str:
    return label


@pytest.fixture(autouse=True)
def _clean() -> None:
    CALLS.clear()
    FAIL_ONCE.clear()


@contextlib.contextmanager
def restarted(db_url: str, worker_id: str = "restarted") -> Iterator[SagaStore]:
    """The service after the restart: the step that killed its process works now."""
    registry = Registry()
    registry.register(step)
    registry.register(later)
    registry.register(step, name=f"{crash.__module__}:{crash.__qualname__}")
    with SagaStore(db_url, worker_id=worker_id, registry=registry, heartbeat=False) as store:
        yield store


def _abandon(db_url: str, saga_id: str, *ops: Operation) -> None:
    """Start a saga in a 'process' that dies in its last step, leaving a live lease."""
    with dying_process(db_url, lease_seconds=1) as dead:
        for func in (step, crash, later):
            dead.register(func)
        saga = dead.saga("robust", saga_id=saga_id, retry=RetryPolicy(attempts=3, delay=60))
        for op in ops:
            saga.operation(op)
        with pytest.raises(Crash):
            saga.orchestrator_execute()


def test_a_backoff_that_begins_during_a_pass_defers_that_saga_not_the_others(
    store: SagaStore, db_url: str
) -> None:
    # `store` (the fixture) made the schema; the restarted service recovers
    with freeze_time(START) as frozen:
        _abandon(db_url, "slow", Operation(step, "a"), Operation(crash, "x"))
        _abandon(db_url, "fast", Operation(step, "b"), Operation(crash, "y"))
        frozen.tick(timedelta(seconds=2))
        FAIL_ONCE.add("x")  # the re-run of x during recovery fails and must wait 60 s
        with restarted(db_url) as service:
            report = service.recover()
            assert report.waiting == ["slow"]
            assert report.succeeded == ["fast"]
            assert service.get("slow").wake_at == START + timedelta(seconds=62)
            assert service.recover().waiting == ["slow"]  # not due yet: left alone
            frozen.tick(timedelta(seconds=61))
            assert service.recover().succeeded == ["slow"]
    assert CALLS["x"] == 3  # the crashed attempt, the failure during recovery, the success


def test_a_saga_that_breaks_the_engine_is_parked_and_the_pass_goes_on(
    store: SagaStore, db_url: str
) -> None:
    with freeze_time(START) as frozen:
        _abandon(db_url, "broken", Operation(step, "a"), Operation(crash, "x"))
        _abandon(db_url, "fine", Operation(step, "b"), Operation(crash, "y"))
        frozen.tick(timedelta(seconds=2))
        with restarted(db_url) as service, pytest.MonkeyPatch.context() as patch:
            original = service.journal.record

            def failing_record(events: Sequence[Event], *, durable: bool) -> None:
                if any(getattr(e, "saga_id", None) == "broken" for e in events):
                    raise KeyError("an engine bug")
                original(events, durable=durable)

            patch.setattr(service.journal, "record", failing_record)
            report = service.recover()
    assert report.succeeded == ["fine"]
    assert list(report.parked) == ["broken"]
    assert "KeyError" in report.parked["broken"]
    assert store.get("broken").parked_at is not None


def test_an_old_name_kept_for_a_renamed_function_still_names_the_same_saga(db_url: str) -> None:
    old = Registry()
    old.register(step, name="payments.charge")
    with SagaStore(db_url, registry=old, heartbeat=False) as first:
        first.upgrade()
        saga = first.saga("checkout", saga_id="order-1").operation(Operation(step, "charge-1"))
        assert saga.orchestrator_execute() == ["charge-1"]
    renamed = Registry()
    renamed.register(step, name="billing.charge")
    renamed.register(step, name="payments.charge")  # kept so old sagas resolve
    with SagaStore(db_url, registry=renamed, heartbeat=False) as second:
        again = second.saga("checkout", saga_id="order-1").operation(Operation(step, "charge-1"))
        assert again.orchestrator_execute() == ["charge-1"]
    assert CALLS["charge-1"] == 1


SEEN: list[str] = []
HEARTBEAT_STORE: list[SagaStore] = []


def renew_then_look(saga_id: str) -> None:
    """A compensation during which the heartbeat fires, while the saga's switch to
    'compensating' is still held back for the next commit."""
    store = HEARTBEAT_STORE[0]
    store.journal.renew_leases()
    SEEN.append(store.get(saga_id).status)


def test_a_heartbeat_between_writes_keeps_the_pending_status(store: SagaStore) -> None:
    store.register(step)
    store.register(renew_then_look)
    HEARTBEAT_STORE[:] = [store]
    SEEN.clear()
    saga = store.saga("checkout", saga_id="order-2")
    saga.operation(Operation(step, "a").add_compensation(renew_then_look, "order-2"))
    saga.operation(Operation(step, "boom"))
    FAIL_ONCE.add("boom")
    with pytest.raises(SagaException):
        saga.orchestrator_execute()
    assert SEEN == ["compensating"]
    assert store.get("order-2").status == "compensated"


def test_names_longer_than_the_journal_holds_are_refused_before_anything_runs(
    store: SagaStore,
) -> None:
    store.register(step)
    saga = store.saga("x" * 201).operation(Operation(step, "a"))
    with pytest.raises(SagaDefinitionError, match="at most 200"):
        saga.orchestrator_execute()
    long_step = store.saga("ok").operation(Operation(step, "a").named("s" * 201))
    with pytest.raises(SagaDefinitionError, match="name of step 0"):
        long_step.orchestrator_execute()
    assert CALLS == {}
    assert store.list().items == ()


def test_sync_recover_inside_an_event_loop_says_to_use_recover_async(
    store: SagaStore, db_url: str
) -> None:
    with freeze_time(START, real_asyncio=True) as frozen:
        _abandon(
            db_url,
            "async-one",
            Operation(step, "a"),
            AsyncOperation(later, "l"),
            Operation(crash, "x"),
        )
        frozen.tick(timedelta(seconds=2))
        with restarted(db_url) as service:

            async def wrong() -> None:
                service.recover()

            with pytest.raises(SagaDefinitionError, match="recover_async"):
                asyncio.run(wrong())
            assert service.recover().succeeded == ["async-one"]


def test_cancelling_an_async_pass_while_it_claims_gives_the_claimed_sagas_back(
    store: SagaStore, db_url: str
) -> None:
    with freeze_time(START, real_asyncio=True) as frozen:
        _abandon(db_url, "claimed", Operation(step, "a"), Operation(crash, "x"))
        frozen.tick(timedelta(seconds=2))
        claiming, go_on = threading.Event(), threading.Event()
        real_claim = claims.claim

        def slow_claim(*args: Any, **kwargs: Any) -> Any:
            won = real_claim(*args, **kwargs)
            claiming.set()
            go_on.wait(10)
            return won

        with restarted(db_url) as first, pytest.MonkeyPatch.context() as patch:
            patch.setattr(claims, "claim", slow_claim)

            async def cancel_mid_claim() -> None:
                task = asyncio.ensure_future(first.recover_async())
                await asyncio.to_thread(claiming.wait, 10)
                task.cancel()
                await asyncio.sleep(0)
                go_on.set()
                with pytest.raises(asyncio.CancelledError):
                    await task

            asyncio.run(cancel_mid_claim())
        with restarted(db_url, worker_id="second") as second:  # only a given-back lease is free
            assert second.recover().succeeded == ["claimed"]

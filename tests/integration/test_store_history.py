"""The history API: get, list (filters, newest first, cursor pages), stats, unreadable values."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import update

from micro_saga import Operation, SagaException
from saga_store import SagaStore, StoreError, Undecodable
from saga_store.tables import attempts

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class Declined(Exception):
    """The payment provider said no."""


def reserve(order: int) -> str:
    return f"R-{order}"


def charge(order: int) -> str:
    if order % 3 == 0:
        raise Declined(f"card of order {order} declined")
    return f"C-{order}"


def release(reservation: str) -> None:
    return None


@pytest.fixture
def history(store: SagaStore) -> SagaStore:
    """Nine checkout sagas a minute apart (every third compensated) and three refunds."""
    for func in (reserve, charge, release):
        store.register(func)
    with freeze_time(START) as frozen:
        for order in range(1, 10):
            saga = store.saga("checkout", saga_id=f"order-{order:02}")
            saga.operation(Operation(reserve, order).add_compensation(release, f"R-{order}"))
            saga.operation(Operation(charge, order))
            with contextlib.suppress(SagaException):
                saga.orchestrator_execute()
            frozen.tick(timedelta(minutes=1))
        for order in range(1, 4):
            store.saga("refund", saga_id=f"refund-{order}").operation(
                Operation(reserve, order)
            ).orchestrator_execute()
            frozen.tick(timedelta(minutes=1))
    return store


def test_list_is_newest_first_and_filters_combine(history: SagaStore) -> None:
    everything = history.list(limit=100)
    assert [s.id for s in everything][:4] == ["refund-3", "refund-2", "refund-1", "order-09"]
    assert len(everything) == 12
    assert everything.next_cursor is None

    compensated = history.list(status="compensated")
    assert [s.id for s in compensated] == ["order-09", "order-06", "order-03"]
    assert all(s.error_type and s.error_type.endswith("Declined") for s in compensated)

    both = history.list(status=["compensated", "succeeded"], name="checkout")
    assert len(both) == 9
    window = history.list(
        name="checkout", since=START + timedelta(minutes=2), until=START + timedelta(minutes=5)
    )
    assert [s.id for s in window] == ["order-05", "order-04", "order-03"]
    assert history.list(parked=True).items == ()


def test_pages_follow_the_cursor_without_gaps_or_repeats(history: SagaStore) -> None:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = history.list(limit=5, cursor=cursor)
        seen += [s.id for s in page]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3
    assert seen == [s.id for s in history.list(limit=100)]
    assert len(set(seen)) == 12


def test_bad_list_arguments_are_refused_with_the_fix(history: SagaStore) -> None:
    with pytest.raises(ValueError, match="limit must be an int from 1 to 10000"):
        history.list(limit=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        history.list(since=datetime(2025, 1, 1))  # noqa: DTZ001  (the naive time is the point)
    with pytest.raises(StoreError, match="invalid cursor"):
        history.list(cursor="not-a-cursor")


def test_stats_count_by_status_and_name(history: SagaStore) -> None:
    stats = history.stats()
    assert stats.by_status == {"succeeded": 9, "compensated": 3}
    assert stats.by_name == {
        "checkout": {"succeeded": 6, "compensated": 3},
        "refund": {"succeeded": 3},
    }
    assert stats.total == 12
    assert stats.oldest_running is None
    assert stats.parked == ()
    assert stats.unresolved_failed == 0


def test_get_returns_every_attempt_with_times_and_durations(history: SagaStore) -> None:
    record = history.get("order-03")
    assert record.status == "compensated"
    assert record.created_at == START + timedelta(minutes=2)
    assert [(a.step_name, a.kind, a.attempt, a.status) for a in record.attempts] == [
        ("reserve", "action", 1, "succeeded"),
        ("charge", "action", 1, "failed"),
        ("reserve", "compensation", 1, "succeeded"),
    ]
    failed = record.attempts[1]
    assert failed.error_message == "card of order 3 declined"
    assert failed.error_traceback is not None
    assert "Declined" in failed.error_traceback
    assert all(a.duration == timedelta(0) for a in record.attempts)  # the clock was frozen
    assert record.duration == timedelta(0)


def test_a_value_that_cannot_be_read_back_is_still_shown(history: SagaStore) -> None:
    with history.engine.begin() as conn:
        conn.execute(
            update(attempts)
            .where(attempts.c.saga_id == "order-01", attempts.c.step == 0)
            .values(result="{not json")
        )
    record = history.get("order-01")
    shown = record.attempts[0].result
    assert isinstance(shown, Undecodable)
    assert shown.text == "{not json"
    assert "not valid JSON" in shown.error
    assert record.attempts[1].result == "C-1"

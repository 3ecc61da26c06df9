"""The pure formatting behind the command line: records in, text and JSON out (no database)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from saga_store.history import Progress
from saga_store.records import AttemptRecord, EventRecord, SagaRecord, Stats
from saga_store.recovery import RecoveryReport
from saga_store.render import (
    duration,
    page_json,
    recovery_lines,
    revision_label,
    saga_json,
    saga_list,
    stats_json,
    stats_text,
    status_label,
    table,
    when,
)
from saga_store.timeline import timeline

T0 = datetime(2025, 3, 14, 9, 26, 53, 589000, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def saga(**changes: Any) -> SagaRecord:
    base = SagaRecord(
        id="order-1",
        name="checkout",
        mode="orchestrated",
        status="succeeded",
        on_crash="resume",
        created_at=T0,
        updated_at=at(2),
        finished_at=at(1.5),
        results=["R-1", "PAY-1"],
        error_type=None,
        error_message=None,
        owner=None,
        lease_expires_at=None,
        wake_at=None,
        parked_at=None,
        parked_error=None,
        resolved_at=None,
        resolution_note=None,
    )
    return replace(base, **changes)


def attempt(step: int, name: str, start: float, end: float | None, **changes: Any) -> AttemptRecord:
    base = AttemptRecord(
        step=step,
        step_name=name,
        kind="action",
        attempt=1,
        status="succeeded" if end is not None else "started",
        worker="w1",
        started_at=at(start),
        finished_at=None if end is None else at(end),
        result=None,
        error_type=None,
        error_message=None,
        error_traceback=None,
        retry_at=None,
    )
    return replace(base, **changes)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0 ms"),
        (0.0125, "12 ms"),
        (0.9994, "999 ms"),
        (1.25, "1.25 s"),
        (59.994, "59.99 s"),
        (185, "3m 05s"),
        (3 * 3600 + 7 * 60 + 30, "3h 07m"),
        (2 * 86400 + 5 * 3600, "2d 05h"),
    ],
)
def test_duration_is_short_and_readable(seconds: float | None, text: str) -> None:
    assert duration(None if seconds is None else timedelta(seconds=seconds)) == text


def test_when_is_utc_to_the_second_or_millisecond() -> None:
    assert when(T0) == "2025-03-14 09:26:53"
    assert when(T0, ms=True) == "2025-03-14 09:26:53.589"
    assert when(None) == "-"


def test_table_aligns_columns_and_trims_trailing_spaces() -> None:
    assert table(("A", "LONG HEADER", "C"), [("xyz", "1", ""), ("", "22", "end")]) == [
        "A    LONG HEADER  C",
        "xyz  1",
        "     22           end",
    ]


def test_saga_list_shows_progress_and_the_next_cursor() -> None:
    running = saga(id="order-2", status="running", finished_at=None, parked_at=at(9))
    text = saga_list(
        [running, saga()],
        {
            "order-1": Progress(steps=2, done=2, attempts=3),
            "order-2": Progress(steps=None, done=0, attempts=1),
        },
        "CURSOR",
    )
    assert text.splitlines() == [
        "ID       NAME      STATUS            CREATED (UTC)        DURATION  STEPS  ATTEMPTS",
        "order-2  checkout  running (parked)  2025-03-14 09:26:53  -         0/?    1",
        "order-1  checkout  succeeded         2025-03-14 09:26:53  1.50 s    2/2    3",
        "",
        "more sagas: add --cursor CURSOR",
    ]
    assert saga_list([], {}, None) == "no sagas match"
    assert status_label(saga(status="failed", resolved_at=at(5), parked_at=at(4))) == (
        "failed (parked, resolved)"
    )


def test_timeline_orders_attempts_and_events_and_explains_each_outcome() -> None:
    record = saga(
        status="compensated",
        error_type="shop.CardDeclined",
        error_message="insufficient funds",
        results=None,
        attempts=(
            attempt(0, "reserve stock", 0.0, 0.012, result="R-1"),
            attempt(1, "charge card", 0.02, 0.9, status="interrupted"),
            attempt(
                1,
                "charge card",
                0.91,
                0.95,
                attempt=2,
                status="failed",
                error_type="shop.CardDeclined",
                error_message="insufficient\nfunds",
                error_traceback="Traceback (most recent call last):\n  boom\n",
                retry_at=at(1.95),
            ),
            attempt(
                1,
                "charge card",
                1.96,
                1.97,
                attempt=3,
                status="failed",
                error_type="shop.CardDeclined",
                error_message="insufficient funds",
            ),
            attempt(0, "reserve stock", 2.0, 2.001, kind="compensation"),
        ),
        events=(EventRecord(at=at(1.0), kind="retried", worker="alice", detail="re-driven"),),
    )
    text = timeline(record)
    lines = text.splitlines()
    assert lines[:6] == [
        "saga order-1  (checkout)",
        "  status    compensated",
        "  mode      orchestrated, on crash: resume",
        "  created   2025-03-14 09:26:53.589",
        "  finished  2025-03-14 09:26:55.089 (after 1.50 s)",
        "  error     shop.CardDeclined: insufficient funds",
    ]
    assert lines[7] == "timeline (UTC, 2025-03-14)"
    rows = lines[9:]
    assert [row.split()[0] for row in rows] == [
        "09:26:53.589",
        "09:26:53.609",
        "09:26:54.499",
        "09:26:54.589",  # the event, between the attempts, by time
        "09:26:55.549",
        "09:26:55.589",
    ]
    assert rows[0].endswith('reserve stock  action        1  succeeded    12 ms     -> "R-1"')
    assert (
        "interrupted  880 ms    its process died during the attempt (found by recovery at 09:26:54.489)"
        in rows[1]
    )
    assert rows[2].endswith("CardDeclined: insufficient funds; retry at 09:26:55.539")
    assert re.search(r"\(saga\) +event +retried +by alice; re-driven$", rows[3]), rows[3]
    assert rows[4].endswith("CardDeclined: insufficient funds; gave up")
    assert "reserve stock  compensation  1  succeeded" in rows[5]
    assert "Traceback" not in text
    with_tracebacks = timeline(record, tracebacks=True)
    assert "      Traceback (most recent call last):\n        boom\n" in with_tracebacks


def test_timeline_header_shows_lease_backoff_parking_and_resolution() -> None:
    record = saga(
        status="failed",
        finished_at=None,
        results=None,
        owner="worker-7",
        lease_expires_at=at(30),
        wake_at=at(12.5),
        parked_at=at(3),
        parked_error="no function is registered as 'shop:charge'",
        resolved_at=at(60),
        resolution_note="refunded by hand",
    )
    text = timeline(record)
    assert "  owner     worker-7, lease until 2025-03-14 09:27:23\n" in text
    assert "  waiting   next attempt due at 2025-03-14 09:27:06.089\n" in text
    assert (
        "  parked    at 2025-03-14 09:26:56: no function is registered as 'shop:charge'\n" in text
    )
    assert "  resolved  at 2025-03-14 09:27:53: refunded by hand\n" in text
    assert "finished" not in text
    assert text.endswith("\n\nno attempts yet")


def test_timeline_in_flight_attempt_days_apart_and_duplicate_step_names() -> None:
    record = saga(
        status="running",
        finished_at=None,
        attempts=(
            attempt(0, "notify", 0, 1),
            attempt(1, "notify", 86400, None),
        ),
    )
    rows = timeline(record).splitlines()
    assert "timeline (UTC)" in rows
    assert rows[-2].startswith("  2025-03-14 09:26:53.589  notify [0]  action  1  succeeded")
    assert rows[-1].startswith("  2025-03-15 09:26:53.589  notify [1]  action  1  started    -")
    assert rows[-1].endswith("in flight (or its process died: recovery will mark it interrupted)")


def test_long_details_are_cut_to_one_line() -> None:
    record = saga(attempts=(attempt(0, "big", 0, 1, result={"text": "x" * 500}),))
    row = timeline(record).splitlines()[-1]
    assert row.endswith("...")
    assert len(row) < 200


def test_stats_text_counts_and_who_needs_a_person() -> None:
    oldest = saga(id="order-9", status="running", finished_at=None)
    stats = Stats(
        by_status={"running": 1, "failed": 2, "succeeded": 5},
        by_name={"checkout": {"succeeded": 5, "failed": 1}, "": {"running": 1, "failed": 1}},
        oldest_running=oldest,
        parked=("order-3",),
        unresolved_failed=1,
    )
    text = stats_text(stats, now=T0 + timedelta(minutes=3, seconds=5))
    assert text.splitlines() == [
        "sagas: 8",
        "  by status: 1 running, 5 succeeded, 2 failed",
        "",
        "  NAME       RUNNING  SUCCEEDED  FAILED  TOTAL",
        "  (no name)  1        0          1       2",
        "  checkout   0        5          1       6",
        "",
        "oldest running: order-9 (checkout, running), started 2025-03-14 09:26:53 UTC, 3m 05s ago",
        "parked: 1: order-3",
        "failed and unresolved: 1",
        "  these need a person: saga-store show ID, then retry ID or resolve ID --note TEXT",
    ]
    empty = Stats(by_status={}, by_name={}, oldest_running=None, parked=(), unresolved_failed=0)
    assert stats_text(empty, T0).splitlines() == [
        "sagas: 0",
        "",
        "oldest running: none",
        "parked: 0",
        "failed and unresolved: 0",
    ]
    data = json.loads(json.dumps(stats_json(stats)))
    assert data["oldest_running"]["id"] == "order-9"
    assert (data["total"], data["parked"], data["unresolved_failed"]) == (8, ["order-3"], 1)


def test_json_has_iso_times_seconds_and_every_attempt() -> None:
    record = saga(attempts=(attempt(0, "reserve stock", 0, 0.25, result={"id": "R-1"}),))
    data = json.loads(json.dumps(saga_json(record, full=True)))
    assert data["created_at"] == "2025-03-14T09:26:53.589000+00:00"
    assert data["duration"] == 1.5
    assert data["attempts"][0]["duration"] == 0.25
    assert data["attempts"][0]["result"] == {"id": "R-1"}
    assert data["events"] == []
    assert "attempts" not in saga_json(record)
    page = page_json([record], {"order-1": Progress(steps=1, done=1, attempts=1)}, None)
    assert page["next_cursor"] is None
    assert (page["items"][0]["steps"], page["items"][0]["attempt_count"]) == (1, 1)


def test_recovery_lines_and_revision_labels() -> None:
    report = RecoveryReport(succeeded=["a"], parked={"b": "no function"}, errors={"c": "db gone"})
    assert recovery_lines(report, T0) == [
        "09:26:53 recovery: 1 succeeded, 1 parked, 1 errored",
        "  parked b: no function",
        "  error on c: db gone",
    ]
    assert recovery_lines(RecoveryReport()) == ["recovery: nothing to recover"]
    assert revision_label(None, "0002").startswith(
        "none (no saga tables: run `saga-store upgrade`)"
    )
    assert revision_label("0002", "0002") == "0002 (head)"
    assert revision_label("0001", "0002") == "0001 (head is 0002)"

"""When a journal write extends its saga's lease: ``saga_store.leases.renewal_due``.

A write extends the lease once a tenth of it has passed since it was last extended (that
instant counts), and whenever the lease's end is not known; otherwise it leaves the lease alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from saga_store.leases import RENEW_AFTER, renewal_due

EXTENDED = datetime(2024, 1, 1, 12, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

#: lease length, and a tenth of it as written out by hand
LEASES = [
    (timedelta(seconds=30), timedelta(seconds=3)),
    (timedelta(seconds=10), timedelta(seconds=1)),
    (timedelta(seconds=7), timedelta(milliseconds=700)),
    (timedelta(seconds=0.5), timedelta(milliseconds=50)),
    (timedelta(minutes=5), timedelta(seconds=30)),
]
LEASE_IDS = [f"{lease.total_seconds():g}s" for lease, _ in LEASES]


def test_a_tenth_of_the_lease() -> None:
    assert RENEW_AFTER == 0.1


def test_a_lease_whose_end_is_not_known_is_renewed_at_once() -> None:
    assert renewal_due(EXTENDED, None, timedelta(seconds=30)) is True
    assert renewal_due(EXTENDED, None, timedelta(microseconds=1)) is True


@pytest.mark.parametrize(("lease", "tenth"), LEASES, ids=LEASE_IDS)
def test_within_the_first_tenth_the_lease_is_left_alone(lease: timedelta, tenth: timedelta) -> None:
    until = EXTENDED + lease
    assert renewal_due(EXTENDED, until, lease) is False  # just extended
    assert renewal_due(EXTENDED + tenth / 2, until, lease) is False
    assert renewal_due(EXTENDED + tenth - MICROSECOND, until, lease) is False


@pytest.mark.parametrize(("lease", "tenth"), LEASES, ids=LEASE_IDS)
def test_from_a_tenth_on_the_lease_is_renewed(lease: timedelta, tenth: timedelta) -> None:
    until = EXTENDED + lease
    assert renewal_due(EXTENDED + tenth, until, lease) is True  # the boundary counts
    assert renewal_due(EXTENDED + tenth + MICROSECOND, until, lease) is True
    assert renewal_due(EXTENDED + lease * 0.8, until, lease) is True
    assert renewal_due(EXTENDED + lease - MICROSECOND, until, lease) is True


@pytest.mark.parametrize(("lease", "tenth"), LEASES, ids=LEASE_IDS)
def test_a_lease_that_ran_out_is_renewed(lease: timedelta, tenth: timedelta) -> None:
    until = EXTENDED + lease
    assert renewal_due(until, until, lease) is True
    assert renewal_due(until + tenth, until, lease) is True
    assert renewal_due(until + timedelta(days=1), until, lease) is True


def test_it_is_the_time_left_that_counts_not_how_the_lease_was_set() -> None:
    # an end further off than one lease (say, set by a longer-leased worker) is not due
    lease = timedelta(seconds=30)
    assert renewal_due(EXTENDED, EXTENDED + 2 * lease, lease) is False
    assert renewal_due(EXTENDED + lease, EXTENDED + 2 * lease, lease) is False
    assert renewal_due(EXTENDED + timedelta(seconds=33), EXTENDED + 2 * lease, lease) is True


@pytest.mark.parametrize(("lease", "tenth"), LEASES, ids=LEASE_IDS)
def test_a_write_that_leaves_the_lease_alone_finds_nine_tenths_of_it_still_held(
    lease: timedelta, tenth: timedelta
) -> None:
    # so a step of up to nine tenths of a lease after any write still ends inside its lease
    until = EXTENDED + lease
    for hundredth in range(101):
        now = EXTENDED + lease * (hundredth / 100)
        left = until - now
        assert renewal_due(now, until, lease) is (left <= lease - tenth), hundredth

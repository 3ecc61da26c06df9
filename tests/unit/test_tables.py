"""The schema's own types: UTC times bind as each database keeps them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import DateTime
from sqlalchemy.dialects import sqlite

from saga_store.tables import UTCDateTime

TIMES = [
    datetime(2026, 12, 4, 2, 30, 15, 123456, tzinfo=UTC),
    datetime(2026, 12, 4, 2, 30, 15, tzinfo=UTC),  # no microseconds: still six digits
    datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    datetime(2026, 6, 1, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-7))),
]


@pytest.mark.parametrize("value", TIMES, ids=str)
def test_sqlite_binds_the_text_sqlalchemys_datetime_writes(value: datetime) -> None:
    dialect = sqlite.dialect()
    ours = UTCDateTime().bind_processor(dialect)
    theirs = DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert ours is not None
    assert theirs is not None
    # the same text, so that SQL comparisons of stored and bound times agree
    assert ours(value) == theirs(value.astimezone(UTC).replace(tzinfo=None))


def test_sqlite_binds_none_and_refuses_naive_times() -> None:
    process = UTCDateTime().bind_processor(sqlite.dialect())
    assert process is not None
    assert process(None) is None
    with pytest.raises(ValueError, match="naive datetime"):
        process(datetime(2026, 1, 1))  # noqa: DTZ001 - the naive time under test

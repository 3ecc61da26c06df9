"""The `db_url` fixture gives each test its own fresh, empty, writable database, then drops it."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from tests import dbs

# URLs handed out by `db_url` so far in this module: later tests check that earlier ones were
# distinct and are gone (function-scoped teardown finishes before the next test starts).
_seen: list[str] = []


def _table_names(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_database_is_empty_and_writable(db_url: str, backend: dbs.Backend) -> None:
    assert db_url not in _seen
    _seen.append(db_url)
    assert dbs.backend_of(db_url) == backend
    assert _table_names(db_url) == []

    engine = sa.create_engine(db_url)
    try:
        table = sa.Table(
            "probe",
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("v", sa.Text),
        )
        with engine.begin() as conn:
            table.create(conn)
            conn.execute(table.insert(), [{"v": "é"}, {"v": "x" * 1000}])
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 2
            assert conn.execute(sa.select(table.c.v).where(table.c.id == 1)).scalar_one() == "é"
    finally:
        engine.dispose()
    assert _table_names(db_url) == ["probe"]


def test_next_database_is_a_new_one(db_url: str, backend: dbs.Backend) -> None:
    # The previous test left a table behind; this database must not have it.
    assert db_url not in _seen
    assert _table_names(db_url) == []
    for earlier in [u for u in _seen if dbs.backend_of(u) == backend]:
        assert not dbs.database_exists(earlier), f"{earlier} was not dropped"
    _seen.append(db_url)


def test_database_is_gone_after_the_block(backend: dbs.Backend, tmp_path: Path) -> None:
    with dbs.fresh_database(backend, tmp_path) as url:
        assert dbs.database_exists(url)
        # An open, idle session must not keep the database alive.
        engine = sa.create_engine(url)
        conn = engine.connect()
        conn.execute(sa.text("SELECT 1"))
    try:
        assert not dbs.database_exists(url)
    finally:
        conn.invalidate()
        engine.dispose()


def test_databases_made_together_are_independent(backend: dbs.Backend, tmp_path: Path) -> None:
    base = dbs.base_url(backend, tmp_path)
    first, second = dbs.create_database(base), dbs.create_database(base)
    try:
        assert first != second
        engine = sa.create_engine(first)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("CREATE TABLE only_in_first (id INTEGER PRIMARY KEY)"))
        finally:
            engine.dispose()
        assert _table_names(first) == ["only_in_first"]
        assert _table_names(second) == []
    finally:
        dbs.drop_database(first)
        dbs.drop_database(second)
    assert not dbs.database_exists(first)
    assert not dbs.database_exists(second)
    dbs.drop_database(first)  # dropping twice is harmless


def test_refuses_to_drop_a_database_it_did_not_make(backend: dbs.Backend, tmp_path: Path) -> None:
    base = dbs.base_url(backend, tmp_path)
    with pytest.raises(ValueError, match="not made by create_database"):
        dbs.drop_database(base)

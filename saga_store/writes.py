"""The journal's writes: each commit of a running saga is one fenced transaction, in as few
statements as the database allows.

A commit updates the saga row by compare-and-set on its version (the fence, which also extends
the lease), finishes an attempt and starts the next. On PostgreSQL the three travel as one
statement (data-modifying CTEs; the attempts are written only if the fence holds), so a step
costs the round trips of a one-row INSERT; elsewhere they are up to three statements in the
transaction.

The statements are SQLAlchemy Core, compiled once per dialect and shape and run as the driver
SQL they compile to: the compiled-cache path of ``Connection.execute`` spends tens of
microseconds per statement assembling parameters, which is most of a step's cost on SQLite.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, bindparam, func, insert, select, update
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from .tables import attempts, sagas

__all__ = ["ATTEMPT_KEYS", "fenced_update", "insert_saga"]

#: the keys of a started attempt's row, as the journal builds it
ATTEMPT_KEYS = ("saga_id", "step", "step_name", "kind", "attempt", "status", "worker", "started_at")
#: the keys of a finished attempt's parameters: where (b_*) and what
FINISH_KEYS = (
    "b_saga",
    "b_kind",
    "b_step",
    "b_attempt",
    "status",
    "finished_at",
    "result",
    "error_type",
    "error_message",
    "error_traceback",
    "retry_at",
)
_FINISH_WHERE = {"b_saga": "saga_id", "b_kind": "kind", "b_step": "step", "b_attempt": "attempt"}

Row = Mapping[str, Any]


def insert_saga(conn: Connection, row: Row, finishes: Sequence[Row], starts: Sequence[Row]) -> None:
    """Insert a new saga's row with the attempts it starts (and finishes) with."""
    if conn.dialect.name == "postgresql" and len(starts) == 1 and not finishes:
        keys = tuple(sorted(row))
        prepared = _prepared(conn.dialect, ("insert_saga_cte", keys), _insert_saga_cte, keys)
        conn.exec_driver_sql(prepared.sql, prepared.params({**row, **_prefixed("i_", starts[0])}))
        return
    keys = tuple(sorted(row))
    prepared = _prepared(conn.dialect, ("insert_saga", keys), _insert_saga, keys)
    conn.exec_driver_sql(prepared.sql, prepared.params(row))
    _write_attempts(conn, finishes, starts)


def fenced_update(
    conn: Connection,
    saga_id: str,
    version: int,
    values: Row,
    *,
    finishes: Sequence[Row] = (),
    starts: Sequence[Row] = (),
) -> bool:
    """Update the saga row if its version is still ``version``, and write the attempts.

    False (and nothing written) when the version moved: another worker holds the saga.
    """
    columns = tuple(sorted(values))
    where = {"b_id": saga_id, "b_version": version}
    one_each = len(finishes) <= 1 and len(starts) <= 1 and bool(finishes or starts)
    if conn.dialect.name == "postgresql" and one_each:
        shape = ("fenced_cte", columns, bool(finishes), bool(starts))
        prepared = _prepared(conn.dialect, shape, _fenced_cte, *shape[1:])
        params = {**values, **where}
        if finishes:
            params.update(_prefixed("f_", finishes[0]))
        if starts:
            params.update(_prefixed("i_", starts[0]))
        won = conn.exec_driver_sql(prepared.sql, prepared.params(params)).scalar_one()
        return bool(won)
    prepared = _prepared(conn.dialect, ("fenced", columns), _fenced, columns)
    result = conn.exec_driver_sql(prepared.sql, prepared.params({**values, **where}))
    if result.rowcount != 1:
        return False
    _write_attempts(conn, finishes, starts)
    return True


def _write_attempts(conn: Connection, finishes: Sequence[Row], starts: Sequence[Row]) -> None:
    # One row is executed as such: an executemany of one row costs more on every driver.
    if finishes:
        prepared = _prepared(conn.dialect, ("finish",), _finish)
        many = [prepared.params(row) for row in finishes]
        conn.exec_driver_sql(prepared.sql, many[0] if len(many) == 1 else many)
    if starts:
        prepared = _prepared(conn.dialect, ("start",), _start)
        many = [prepared.params(row) for row in starts]
        conn.exec_driver_sql(prepared.sql, many[0] if len(many) == 1 else many)


def _prefixed(prefix: str, row: Row) -> dict[str, Any]:
    return {f"{prefix}{key}": value for key, value in row.items()}


# -- the statements ----------------------------------------------------------------------


def _fenced(columns: tuple[str, ...]) -> ClauseElement:
    return (
        update(sagas)
        .where(sagas.c.id == bindparam("b_id"), sagas.c.version == bindparam("b_version"))
        .values({column: bindparam(column) for column in columns})
    )


def _finish() -> ClauseElement:
    return (
        update(attempts)
        .where(*(attempts.c[column] == bindparam(key) for key, column in _FINISH_WHERE.items()))
        .values({key: bindparam(key) for key in FINISH_KEYS if key not in _FINISH_WHERE})
    )


def _start() -> ClauseElement:
    # inline: no RETURNING of the new id, which nobody reads
    return insert(attempts).inline().values({key: bindparam(key) for key in ATTEMPT_KEYS})


def _insert_saga(columns: tuple[str, ...]) -> ClauseElement:
    return insert(sagas).inline().values({column: bindparam(column) for column in columns})


def _fenced_cte(columns: tuple[str, ...], finish: bool, start: bool) -> ClauseElement:
    """PostgreSQL: the fenced update, and the attempts written only if it matched a row."""
    fence = (
        update(sagas)
        .where(sagas.c.id == bindparam("b_id"), sagas.c.version == bindparam("b_version"))
        .values({column: bindparam(column) for column in columns})
        .returning(sagas.c.id)
        .cte("fence")
    )
    ctes = []
    if finish:
        where = [attempts.c.saga_id == select(fence.c.id).scalar_subquery()]
        where += [
            attempts.c[column] == bindparam(f"f_{key}")
            for key, column in _FINISH_WHERE.items()
            if key != "b_saga"
        ]
        values: dict[str, Any] = {
            key: bindparam(f"f_{key}") for key in FINISH_KEYS if key not in _FINISH_WHERE
        }
        ctes.append(update(attempts).where(*where).values(values).cte("finish"))
    if start:
        ctes.append(_start_from(fence, "start"))
    return select(func.count()).select_from(fence).add_cte(*ctes)


def _insert_saga_cte(columns: tuple[str, ...]) -> ClauseElement:
    """PostgreSQL: the new saga row and its first attempt, in one statement."""
    new = (
        insert(sagas)
        .values({column: bindparam(column) for column in columns})
        .returning(sagas.c.id)
        .cte("new_saga")
    )
    return select(func.count()).select_from(new).add_cte(_start_from(new, "start"))


def _start_from(source: Any, name: str) -> Any:
    values = [
        bindparam(f"i_{key}", type_=attempts.c[key].type)
        for key in ATTEMPT_KEYS
        if key != "saga_id"
    ]
    rows = select(source.c.id, *values)
    return insert(attempts).from_select(list(ATTEMPT_KEYS), rows).cte(name)


# -- compiled once, run as driver SQL ----------------------------------------------------


class _Prepared:
    """A statement compiled for one dialect, and the bind processors of its parameters."""

    __slots__ = ("names", "positional", "processors", "sql")

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if not isinstance(compiled, SQLCompiler):
            raise TypeError(f"not a SQL statement: {statement!r}")
        self.sql = compiled.string
        self.positional = bool(compiled.positional)
        names = compiled.positiontup if compiled.positional else list(compiled.binds)
        self.names: tuple[str, ...] = tuple(names or ())
        self.processors: tuple[Callable[[Any], Any] | None, ...] = tuple(
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in self.names
        )

    def params(self, values: Row) -> Any:
        """The driver's parameters (a tuple or a dict, as its paramstyle wants) for ``values``."""
        converted = [
            value if process is None else process(value)
            for process, value in zip(
                self.processors, map(values.__getitem__, self.names), strict=True
            )
        ]
        if self.positional:
            return tuple(converted)
        return dict(zip(self.names, converted, strict=True))


_PREPARED: weakref.WeakKeyDictionary[Dialect, dict[Hashable, _Prepared]] = (
    weakref.WeakKeyDictionary()
)


def _prepared(
    dialect: Dialect, shape: Hashable, build: Callable[..., ClauseElement], *args: Any
) -> _Prepared:
    """The statement ``build(*args)`` for ``dialect``, compiled on first use."""
    cache = _PREPARED.get(dialect)
    if cache is None:
        cache = _PREPARED.setdefault(dialect, {})
    prepared = cache.get(shape)
    if prepared is None:
        prepared = cache[shape] = _Prepared(build(*args), dialect)
    return prepared

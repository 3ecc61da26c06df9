"""The journal's writes: each commit of a running saga is one fenced transaction, in as few
statements as the database allows.

A commit updates the saga row by compare-and-set on its version (the fence, which also extends
the lease when it is due), finishes an attempt and starts the next. On PostgreSQL the three
travel as one statement (data-modifying CTEs; the attempts are written only if the fence
holds), which the journal runs as its own transaction; elsewhere they are up to three
statements in the transaction.

The statements are SQLAlchemy Core, compiled once per dialect and shape, and run as the driver
SQL they compile to on whatever offers :class:`Statements`: the journal's driver transactions
(``saga_store.driver``), or a SQLAlchemy ``Connection`` through :class:`OnConnection`.
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, Dialect, bindparam, func, insert, select, update
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from .tables import attempts, sagas

__all__ = [
    "ATTEMPT_KEYS",
    "OnConnection",
    "Statements",
    "fenced_update",
    "insert_saga",
    "one_statement",
]

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


class Statements(Protocol):
    """Where the writes run: driver SQL with driver parameters, in one transaction."""

    @property
    def dialect(self) -> Dialect: ...

    def execute(self, sql: str, params: Any) -> int: ...

    def scalar(self, sql: str, params: Any) -> Any: ...

    def executemany(self, sql: str, many: Sequence[Any]) -> None: ...


class OnConnection:
    """:class:`Statements` on a SQLAlchemy ``Connection`` (inside its transaction)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    @property
    def dialect(self) -> Dialect:
        return self.conn.dialect

    def execute(self, sql: str, params: Any) -> int:
        return self.conn.exec_driver_sql(sql, params).rowcount

    def scalar(self, sql: str, params: Any) -> Any:
        return self.conn.exec_driver_sql(sql, params).scalar_one()

    def executemany(self, sql: str, many: Sequence[Any]) -> None:
        self.conn.exec_driver_sql(sql, list(many))


def one_statement(
    dialect: Dialect, finishes: Sequence[Row], starts: Sequence[Row], *, new_saga: bool = False
) -> bool:
    """Whether :func:`fenced_update` (or, ``new_saga``, :func:`insert_saga`) with these attempts
    runs exactly one statement on ``dialect``."""
    if dialect.name != "postgresql":
        return False
    if new_saga:
        return not finishes and len(starts) <= 1
    return len(finishes) <= 1 and len(starts) <= 1


def insert_saga(conn: Statements, row: Row, finishes: Sequence[Row], starts: Sequence[Row]) -> None:
    """Insert a new saga's row with the attempts it starts (and finishes) with."""
    keys = tuple(sorted(row))
    if one_statement(conn.dialect, finishes, starts, new_saga=True) and starts:
        prepared = _prepared(conn.dialect, ("insert_saga_cte", keys), _insert_saga_cte, keys)
        conn.scalar(prepared.sql, prepared.params({**row, **_prefixed("i_", starts[0])}))
        return
    prepared = _prepared(conn.dialect, ("insert_saga", keys), _insert_saga, keys)
    conn.execute(prepared.sql, prepared.params(row))
    _write_attempts(conn, finishes, starts)


def fenced_update(
    conn: Statements,
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
    if one_statement(conn.dialect, finishes, starts) and (finishes or starts):
        shape = ("fenced_cte", columns, bool(finishes), bool(starts))
        prepared = _prepared(conn.dialect, shape, _fenced_cte, *shape[1:])
        params = {**values, **where}
        if finishes:
            params.update(_prefixed("f_", finishes[0]))
        if starts:
            params.update(_prefixed("i_", starts[0]))
        return bool(conn.scalar(prepared.sql, prepared.params(params)))
    prepared = _prepared(conn.dialect, ("fenced", columns), _fenced, columns)
    if conn.execute(prepared.sql, prepared.params({**values, **where})) != 1:
        return False
    _write_attempts(conn, finishes, starts)
    return True


def _write_attempts(conn: Statements, finishes: Sequence[Row], starts: Sequence[Row]) -> None:
    for rows, shape, build in ((finishes, "finish", _finish), (starts, "start", _start)):
        if not rows:
            continue
        prepared = _prepared(conn.dialect, (shape,), build)
        # One row is executed as such: an executemany of one row costs more on every driver.
        if len(rows) == 1:
            conn.execute(prepared.sql, prepared.params(rows[0]))
        else:
            conn.executemany(prepared.sql, [prepared.params(row) for row in rows])


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

    __slots__ = ("_convert", "_pick", "names", "positional", "sql")

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if not isinstance(compiled, SQLCompiler):
            raise TypeError(f"not a SQL statement: {statement!r}")
        self.sql = compiled.string
        self.positional = bool(compiled.positional)
        names = compiled.positiontup if compiled.positional else list(compiled.binds)
        self.names: tuple[str, ...] = tuple(names or ())
        processors = [
            compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in self.names
        ]
        #: the values in the statement's order, as one tuple (picked in C)
        self._pick: Callable[[Row], tuple[Any, ...]] = (
            operator.itemgetter(*self.names) if len(self.names) > 1 else _pick_few(self.names)
        )
        #: where a value needs its type's bind processor (times, on SQLite and MySQL)
        self._convert = tuple(
            (position, process)
            for position, process in enumerate(processors)
            if process is not None
        )

    def params(self, values: Row) -> Any:
        """The driver's parameters (a tuple or a dict, as its paramstyle wants) for ``values``."""
        picked = self._pick(values)
        if self._convert:
            converted = list(picked)
            for position, process in self._convert:
                converted[position] = process(converted[position])
            picked = tuple(converted)
        if self.positional:
            return picked
        return dict(zip(self.names, picked, strict=True))


def _pick_few(names: tuple[str, ...]) -> Callable[[Row], tuple[Any, ...]]:
    """As ``itemgetter``, as a tuple, for no name or one (where ``itemgetter`` gives no tuple)."""
    return lambda values: tuple(values[name] for name in names)


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

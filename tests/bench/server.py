"""Commits as the database server counts them: a check on the counts taken in the process.

PostgreSQL hands each writing transaction a transaction id, so the next id to be handed out
moves by one per commit; MySQL/MariaDB count COMMIT statements (``Com_commit``). Both are
server-wide, and the benchmark's databases are its own. SQLite has no server to ask (None).
"""

from __future__ import annotations

from sqlalchemy import Engine

__all__ = ["server_commits"]


def server_commits(engine: Engine) -> int | None:
    """The server's running count of write transactions, or None where there is none."""
    name = engine.dialect.name
    if name == "postgresql":
        sql = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
    elif name in ("mysql", "mariadb"):
        sql = "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'COM_COMMIT'"
    else:
        return None
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(sql).scalar_one())

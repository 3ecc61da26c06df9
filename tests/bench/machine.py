"""What the figures ran on: CPU, cores, memory, Python, SQLAlchemy, drivers and database servers."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from saga_store.db import make_engine

__all__ = ["database_info", "machine_info", "peak_rss_bytes", "rss_bytes"]

_PROC_STATUS = Path("/proc/self/status")


def machine_info() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlalchemy": sa.__version__,
        "sqlite": sqlite3.sqlite_version,
        "psycopg": _version("psycopg"),
        "pymysql": _version("PyMySQL"),
        "commit": _git_commit(),
        #: 1, 5 and 15 minute load averages when the run started (others share the machine)
        "load_average": os.getloadavg(),
    }


def database_info(url: str) -> dict[str, Any]:
    """The server's version and the settings that decide what a commit costs."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            name = conn.dialect.name
            if name == "sqlite":
                return {"server": f"SQLite {sqlite3.sqlite_version}"}
            if name == "postgresql":
                version = conn.exec_driver_sql("SHOW server_version").scalar()
                settings = {
                    s: conn.exec_driver_sql(f"SHOW {s}").scalar()
                    for s in ("fsync", "synchronous_commit", "wal_sync_method")
                }
                return {"server": f"PostgreSQL {version}", **settings}
            version = conn.exec_driver_sql("SELECT VERSION()").scalar()
            flush = conn.exec_driver_sql("SELECT @@innodb_flush_log_at_trx_commit").scalar()
            kind = "MariaDB" if "mariadb" in str(version).lower() else "MySQL"
            return {
                "server": f"{kind} {str(version).split('-')[0]}",
                "innodb_flush_log_at_trx_commit": flush,
            }
    finally:
        engine.dispose()


def rss_bytes() -> int:
    """Resident memory of this process now (VmRSS)."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (VmHWM)."""
    return _status_kib("VmHWM") * 1024


def _status_kib(field: str) -> int:
    for line in _PROC_STATUS.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} is not in {_PROC_STATUS} (the memory figures need Linux)")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH is the point
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}{'+changes' if dirty else ''}"

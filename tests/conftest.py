"""Fixtures shared by the whole suite: the database backends (see `tests.dbs`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import dbs

_BACKENDS = pytest.StashKey[tuple[dbs.Backend, ...]]()


def pytest_configure(config: pytest.Config) -> None:
    try:
        config.stash[_BACKENDS] = dbs.active_backends()
    except dbs.BackendConfigError as exc:
        raise pytest.UsageError(str(exc)) from exc


def pytest_report_header(config: pytest.Config) -> str:
    backends: tuple[dbs.Backend, ...] = config.stash[_BACKENDS]
    return f"saga test backends: {', '.join(backends)}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every test that uses `backend`, directly or through `db_url`, runs once per active backend
    # (unless it parametrizes an argument called `backend` itself).
    if "backend" in metafunc.fixturenames and not _parametrizes(metafunc, "backend"):
        backends = metafunc.config.stash[_BACKENDS]
        metafunc.parametrize("backend", backends, ids=backends, indirect=True)


def _parametrizes(metafunc: pytest.Metafunc, name: str) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        argnames = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if isinstance(argnames, str):
            argnames = [arg.strip() for arg in argnames.split(",")]
        if name in argnames:
            return True
    return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that takes `backend` (db_url does) talks to a database: `-m "not integration"`
    # leaves it out.
    for item in items:
        if "backend" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> dbs.Backend:
    """The backend of this parametrization: "sqlite", "postgresql" or "mysql"."""
    name: dbs.Backend = request.param
    return name


@pytest.fixture
def db_url(backend: dbs.Backend, tmp_path: Path) -> Iterator[str]:
    """The SQLAlchemy URL of a fresh, empty database of `backend`, dropped after the test."""
    with dbs.fresh_database(backend, tmp_path) as url:
        yield url

"""How SAGA_TEST_* variables choose the database backends (tests/dbs.py)."""

from __future__ import annotations

import pytest

from tests import dbs

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MY = "mysql+pymysql://root@127.0.0.1:3306/test"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, ("sqlite",)),
        ({"SAGA_TEST_POSTGRES_URL": PG}, ("sqlite", "postgresql")),
        (
            {"SAGA_TEST_MYSQL_URL": MY, "SAGA_TEST_POSTGRES_URL": PG},
            ("sqlite", "postgresql", "mysql"),
        ),
        ({"SAGA_TEST_POSTGRES_URL": PG, "SAGA_TEST_BACKENDS": "postgresql"}, ("postgresql",)),
        (
            {"SAGA_TEST_MYSQL_URL": MY, "SAGA_TEST_BACKENDS": " mysql , sqlite "},
            ("sqlite", "mysql"),
        ),
        ({"SAGA_TEST_POSTGRES_URL": "", "SAGA_TEST_BACKENDS": ""}, ("sqlite",)),
    ],
)
def test_active_backends(environ: dict[str, str], expected: tuple[str, ...]) -> None:
    assert dbs.active_backends(environ) == expected


def test_asking_for_a_backend_without_its_url_is_an_error() -> None:
    with pytest.raises(dbs.BackendConfigError, match="SAGA_TEST_MYSQL_URL is not set"):
        dbs.active_backends({"SAGA_TEST_BACKENDS": "mysql"})


def test_unknown_backend_is_an_error() -> None:
    with pytest.raises(dbs.BackendConfigError, match="unknown backends"):
        dbs.active_backends({"SAGA_TEST_BACKENDS": "oracle"})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:////tmp/x.db", "sqlite"),
        (PG, "postgresql"),
        (MY, "mysql"),
        ("mariadb+pymysql://root@127.0.0.1/test", "mysql"),
    ],
)
def test_backend_of(url: str, expected: str) -> None:
    assert dbs.backend_of(url) == expected

"""``saga-store`` run for real in a subprocess: help, bad arguments, the database's errors, the
schema commands. Variants of one case run in-process through ``main`` (``main_run``)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from saga_store.migrate import head
from tests.cli.conftest import (
    CliRunner,
    Run,
    cli_env,
    one_error_line,
    sqlite_pass,
    usage_error,
)

COMMANDS = [
    "upgrade",
    "current",
    "downgrade",
    "list",
    "show",
    "stats",
    "recover",
    "retry",
    "resolve",
    "demo",
]
NOT_MIGRATED = "run `saga-store upgrade`"


@sqlite_pass
def test_help_lists_every_command(cli: CliRunner, main_run: CliRunner) -> None:
    module = subprocess.run(
        [sys.executable, "-m", "saga_store", "--help"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    for run in (cli("--help"), Run(module.returncode, module.stdout, module.stderr, 0)):
        assert (run.code, run.err) == (0, ""), run
        assert run.out.startswith("usage: saga-store [-h] [--url URL] [-v] COMMAND ...")
        listed = run.out.split("commands:")[1]
        for command in COMMANDS:
            assert re.search(rf"^    {command}\b", listed, re.MULTILINE), (command, run.out)
    demo = main_run("demo", "--help")
    assert demo.code == 0
    assert "./saga-demo.db, removed at the end unless --keep" in " ".join(demo.out.split())
    assert "--fail" in demo.out


@sqlite_pass
def test_bad_arguments_are_usage_errors(cli: CliRunner, main_run: CliRunner) -> None:
    usage_error(cli("list", "--limit", "0"), "argument --limit: must be a whole number from 1")
    cases = {
        (): "a command is required",
        ("list", "--since", "yesterday"): "not an ISO 8601 time: 'yesterday'",
        ("list", "--status", "lost"): "invalid choice: 'lost'",
        ("list", "--limit", "10001"): "must be a whole number from 1 to 10000, got '10001'",
        ("recover",): "the following arguments are required: --import",
        ("recover", "--import", "m", "--interval", "-1"): "must be a number > 0, got '-1'",
        ("resolve", "x"): "the following arguments are required: --note",
        ("resolve", "x", "--note", "  "): "say what was done",
        ("show",): "the following arguments are required: ID",
        ("frobnicate",): "invalid choice: 'frobnicate'",
    }
    for argv, message in cases.items():
        usage_error(main_run(*argv), message)


@sqlite_pass
def test_unreachable_database_is_one_line_without_the_password(cli: CliRunner) -> None:
    hidden = "Sup3r-Hidden"
    postgres = f"postgresql+psycopg://alice:{hidden}@127.0.0.1:1/orders"
    mysql = f"mysql+pymysql://bob:{hidden}@127.0.0.1:1/orders"
    runs = [cli("list", url=postgres), cli("upgrade", env={"SAGA_STORE_URL": mysql})]
    for run, url in zip(runs, (postgres, mysql), strict=True):
        message = one_error_line(run)
        assert hidden not in run.out + run.err
        redacted = make_url(url).render_as_string(hide_password=True)
        assert message.startswith(f"cannot reach the database at {redacted}: "), message
        assert "***" in message
        assert run.seconds < 20, run.seconds  # refused at once: no hang


@sqlite_pass
def test_invalid_url_is_one_line_without_the_password(cli: CliRunner, main_run: CliRunner) -> None:
    message = one_error_line(cli("stats", url="nosuchdb://carol:hunter2@db/x"))
    assert message.startswith("invalid database URL nosuchdb://carol:***@db/x: "), message
    assert "hunter2" not in message
    unparseable = main_run("list", url="carol:hunter2 is not a URL")
    assert "hunter2" not in unparseable.err
    assert one_error_line(unparseable).startswith("invalid database URL <unparseable URL>")


@sqlite_pass
def test_default_database_is_sagas_db_in_the_current_directory(
    cli: CliRunner, main_run: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = one_error_line(cli("list"))
    assert message == (
        "no saga database at sagas.db: run `saga-store upgrade` to create it, or pass --url "
        "(or set $SAGA_STORE_URL)"
    )
    assert not (tmp_path / "sagas.db").exists()  # reading leaves no empty file behind
    upgraded = cli("upgrade")
    assert upgraded.code == 0, upgraded
    assert upgraded.out == f"sqlite:///sagas.db: schema at {head()} (head)\n"
    assert (tmp_path / "sagas.db").exists()
    listed = cli("list")
    assert (listed.code, listed.out, listed.err) == (0, "no sagas match\n", ""), listed
    elsewhere = main_run("list", env={"SAGA_STORE_URL": f"sqlite:///{tmp_path / 'other.db'}"})
    assert one_error_line(elsewhere).startswith(f"no saga database at {tmp_path / 'other.db'}")
    driverless = main_run("list", url="postgresql+nosuchdriver://u@127.0.0.1/x")
    assert one_error_line(driverless).startswith("invalid database URL ")
    monkeypatch.setitem(sys.modules, "pymysql", None)  # as if the extra was not installed
    missing = main_run("list", url="mysql+pymysql://u@127.0.0.1:1/x")
    assert one_error_line(missing) == (
        "the database driver pymysql is missing: pip install 'micro-saga[mysql]'"
    )


@contextmanager
def _revision_set_to(revision: str, url: str) -> Iterator[None]:
    """Pretend the database is at another revision (as after installing a newer saga-store)."""
    engine = sa.create_engine(url, poolclass=NullPool)
    table = sa.table("saga_alembic_version", sa.column("version_num"))
    try:
        with engine.begin() as conn:
            was = conn.execute(sa.select(table.c.version_num)).scalar_one()
            conn.execute(sa.update(table).values(version_num=revision))
        yield
        with engine.begin() as conn:
            conn.execute(sa.update(table).values(version_num=was))
    finally:
        engine.dispose()


def test_schema_commands_and_unmigrated_schema(
    cli: CliRunner, main_run: CliRunner, db_url: str, backend: str
) -> None:
    hidden = "NeverShown"
    url = db_url
    if backend == "postgresql":  # the test server trusts local users: a password is not checked
        url = make_url(db_url).set(password=hidden).render_as_string(hide_password=False)
    redacted = make_url(url).render_as_string(hide_password=True)
    current = cli("current", url=url)
    assert (current.code, current.out) == (0, f"none (no saga tables: {NOT_MIGRATED})\n")
    message = one_error_line(cli("list", url=url))
    assert message == f"the saga tables are missing in {redacted}: {NOT_MIGRATED} (or SagaStore.upgrade()) first"  # fmt: skip
    for args in (("stats",), ("resolve", "x", "--note", "y"), ("recover", "--import", "json")):
        assert NOT_MIGRATED in one_error_line(main_run(*args, url=url)), args

    upgraded = cli("upgrade", url=url)
    assert (upgraded.code, upgraded.out) == (0, f"{redacted}: schema at {head()} (head)\n")
    assert cli("current", url=url).out == f"{head()} (head)\n"
    with _revision_set_to("0000-older", url):
        older = one_error_line(main_run("stats", url=url))
        assert older.startswith(
            f"the saga tables in {redacted} are at revision 0000-older, this version needs "
            f"{head()}: run `saga-store upgrade`"
        ), older
        assert main_run("current", url=url).out == f"0000-older (head is {head()})\n"
    down = cli("downgrade", "base", url=url)
    assert down.code == 0, down
    assert down.out == f"{redacted}: schema at none (no saga tables: {NOT_MIGRATED})\n"
    assert NOT_MIGRATED in one_error_line(cli("show", "order-1", url=url))
    assert hidden not in "".join(r.out + r.err for r in (current, upgraded, down))
    unknown = one_error_line(cli("upgrade", "nonesuch", url=url))
    assert "Can't locate revision identified by 'nonesuch'" in unknown, unknown

"""The wheel holds every package, and the Alembic migrations ship as saga_store.migrations."""

from __future__ import annotations

import importlib
import importlib.resources
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _listed_packages() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(config["tool"]["setuptools"]["packages"])


def test_every_package_on_disk_is_listed_in_pyproject() -> None:
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("micro_saga", "saga_store")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk <= _listed_packages()


def test_migrations_are_importable_as_saga_store_migrations() -> None:
    source = ROOT / "migrations"
    if not source.is_dir():
        pytest.skip("no migrations/ folder yet")
    assert (source / "__init__.py").is_file(), (
        "migrations/__init__.py is required: without it `pip install -e .` cannot map the folder"
        " to the saga_store.migrations package"
    )
    shipped = importlib.resources.files(importlib.import_module("saga_store.migrations"))
    assert shipped.joinpath("env.py").is_file()
    versions = shipped.joinpath("versions")
    assert versions.is_dir()
    assert {p.name for p in versions.iterdir() if p.name.endswith(".py")} == {
        p.name for p in (source / "versions").glob("*.py")
    }

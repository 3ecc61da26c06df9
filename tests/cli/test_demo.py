"""``saga-store demo``: a child killed with SIGKILL inside "charge card", recovered, shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from saga_store import SagaStore
from tests.cli.conftest import CliRunner, Run


def _saga_id(run: Run) -> str:
    found = re.search(r"^saga {6}(order-[0-9a-f]{6}): reserve stock", run.out, re.MULTILINE)
    assert found, run
    return found.group(1)


def _told_the_story(run: Run, final: str) -> None:
    assert run.code == 0, run
    assert run.err == "", run
    out = run.out
    assert re.search(r"^1\. A child process \(pid \d+, worker id 'saga-demo'\)", out, re.M), out
    assert "2. The child is inside step 'charge card' (attempt 1): killing it with SIGKILL." in out
    assert "The child is gone (killed by SIGKILL)." in out
    assert "'charge card' attempt 1: never finished" in out
    assert "3. Recovering in this process" in out
    assert "same worker id 'saga-demo'" in out
    assert "wait for the 30 s lease to expire" in out
    assert re.search(r"charge card +action +1 +interrupted .*its process died", out), out
    assert re.search(r"charge card +action +2 +succeeded", out), out
    assert f"Final status: {final}." in out
    ledger = out.split("Ledger: every side effect")[1]
    charged = [line for line in ledger.splitlines() if "payments  charged" in line]
    assert len(charged) == 1, ledger  # the card was charged once, by the killed child
    assert "child, killed" in charged[0]
    assert re.search(r"this process +payments +key order-\w+:1 already charged", ledger), ledger


@pytest.mark.parametrize("fail", [False, True], ids=["succeeds", "fails-shipping"])
def test_demo_against_a_database_url(cli: CliRunner, db_url: str, fail: bool) -> None:
    run = cli("demo", *(["--fail"] if fail else []), url=db_url)
    _told_the_story(run, "compensated" if fail else "succeeded")
    saga_id = _saga_id(run)
    assert "database removed" not in run.out  # a --url database is never removed
    with SagaStore(db_url, heartbeat=False) as store:
        record = store.get(saga_id)
    steps = [(a.step_name, a.kind, a.attempt, a.status) for a in record.attempts]
    assert steps[:3] == [
        ("reserve stock", "action", 1, "succeeded"),
        ("charge card", "action", 1, "interrupted"),
        ("charge card", "action", 2, "succeeded"),
    ]
    if fail:
        assert record.status == "compensated"
        assert steps[3:] == [
            ("ship", "action", 1, "failed"),
            ("ship", "action", 2, "failed"),
            ("charge card", "compensation", 1, "succeeded"),
            ("reserve stock", "compensation", 1, "succeeded"),
        ]
        assert record.error_type == "saga_store.demo.ShippingError"
        assert "payments  refunded 49.90 EUR" in run.out
        assert "stock     released 2 x WIDGET-42" in run.out
    else:
        assert record.status == "succeeded"
        assert steps[3:] == [("ship", "action", 1, "succeeded")]
        assert record.results is not None
        reservation, payment, shipment = record.results
        assert (reservation, shipment) == (f"R-{saga_id[-6:]}", f"SHP-{saga_id[-6:]}")
        assert f"charged 49.90 EUR ({payment}, key {saga_id}:1)" in run.out


def test_demo_on_its_own_sqlite_file(cli: CliRunner, tmp_path: Path, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("the default database is SQLite: once is enough")
    demo_file = tmp_path / "saga-demo.db"
    kept = cli("demo", "--keep")
    _told_the_story(kept, "succeeded")
    assert "database  sqlite:///saga-demo.db (schema upgraded to " in kept.out
    assert demo_file.exists()
    assert f"saga-store --url sqlite:///saga-demo.db show {_saga_id(kept)}" in kept.out
    listed = cli("list", url="sqlite:///saga-demo.db")
    assert re.search(rf"^{_saga_id(kept)} +demo-order +succeeded ", listed.out, re.M), listed

    again = cli("demo")
    _told_the_story(again, "succeeded")
    assert "The demo database saga-demo.db was removed (--keep keeps it)." in again.out
    assert not demo_file.exists()
    assert not (tmp_path / "sagas.db").exists()  # the user's default database is left alone

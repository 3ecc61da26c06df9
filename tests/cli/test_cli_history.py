"""``saga-store list``, ``show`` and ``stats`` on sagas that succeeded, rolled back, failed and
crashed, through the real console script (variants in-process through ``main``)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

from saga_store import SagaStore
from tests.cli.conftest import CliRunner, Orders, one_error_line

NEWEST_FIRST = ["lost", "stuck", "rolled", "ok"]


def four_orders(orders: Orders) -> None:
    """succeeded, compensated, failed (a compensation gave up) and running (crashed)."""
    assert orders.run("ok") == "succeeded"
    assert orders.run("rolled", broken=["ship"]) == "compensated"
    assert orders.run("stuck", broken=["ship", "refund"]) == "failed"
    assert orders.run("lost", broken=["charge-crash"], name="refill") == "crashed"


def test_list_table_filters_pages_and_json(
    cli: CliRunner, main_run: CliRunner, orders: Orders, store: SagaStore, db_url: str
) -> None:
    four_orders(orders)

    table = cli("list", url=db_url)
    assert (table.code, table.err) == (0, ""), table
    lines = table.out.splitlines()
    header = ["ID", "NAME", "STATUS", "CREATED", "(UTC)", "DURATION", "STEPS", "ATTEMPTS"]
    assert lines[0].split() == header
    assert [line.split()[0] for line in lines[1:]] == NEWEST_FIRST
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["ok"][1:3] == ["checkout", "succeeded"]
    assert rows["ok"][-2:] == ["3/3", "3"]
    assert rows["rolled"][2] == "compensated"
    assert rows["rolled"][-2:] == ["2/3", "5"]  # 3 actions, then refund and release
    assert rows["stuck"][2] == "failed"
    assert rows["lost"][1:3] == ["refill", "running"]
    assert rows["lost"][-3:] == ["-", "1/3", "2"]  # still running: no duration yet
    status_column = lines[0].index("STATUS")
    assert all(line[status_column - 2 : status_column] == "  " for line in lines[1:])

    page = json.loads(cli("list", "--json", url=db_url).out)
    assert [item["id"] for item in page["items"]] == NEWEST_FIRST
    assert page["next_cursor"] is None
    ok = page["items"][3]
    assert (ok["status"], ok["steps"], ok["steps_done"], ok["attempt_count"]) == (
        "succeeded", 3, 3, 3
    )  # fmt: skip
    assert ok["results"] == ["R-ok", "PAY-ok", "SHP-ok"]
    assert datetime.fromisoformat(ok["created_at"]) == store.get("ok").created_at
    assert ok["duration"] >= 0

    def ids(*args: str, real: bool = False) -> list[str]:
        run = (cli if real else main_run)("list", "--json", *args, url=db_url)
        assert run.code == 0, run
        return [item["id"] for item in json.loads(run.out)["items"]]

    assert ids("--status", "failed", "--status", "compensated", real=True) == ["stuck", "rolled"]
    assert ids("--status", "running", "--name", "refill") == ["lost"]
    assert ids("--name", "checkout", "--status", "running") == []
    first, third = store.get("ok").created_at, store.get("stuck").created_at
    naive_utc = first.astimezone(UTC).replace(tzinfo=None).isoformat()
    plus_two = third.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert ids("--since", naive_utc, "--until", plus_two, real=True) == ["rolled", "ok"]
    assert ids("--since", "2999-01-01") == []
    assert ids("--until", "2000-01-01T00:00:00+02:00") == []

    paged = cli("list", "--limit", "3", url=db_url)
    assert [line.split()[0] for line in paged.out.splitlines()[1:4]] == NEWEST_FIRST[:3]
    cursor = paged.out.splitlines()[-1].removeprefix("more sagas: add --cursor ")
    assert ids("--limit", "3", "--cursor", cursor, real=True) == NEWEST_FIRST[3:]
    invalid = one_error_line(main_run("list", "--cursor", "nonsense", url=db_url))
    assert invalid == "invalid cursor 'nonsense': pass a next_cursor from a page"
    parked = main_run("list", "--parked", url=db_url)
    assert (parked.code, parked.out) == (0, "no sagas match\n")


def test_show_timeline_and_json(
    cli: CliRunner, main_run: CliRunner, orders: Orders, db_url: str
) -> None:
    four_orders(orders)
    shown = cli("show", "ok", url=db_url)
    assert (shown.code, shown.err) == (0, ""), shown
    assert shown.out.startswith("saga ok  (checkout)\n  status    succeeded\n")
    assert "  mode      orchestrated, on crash: resume\n" in shown.out
    assert '  results   ["R-ok", "PAY-ok", "SHP-ok"]\n' in shown.out
    steps = shown.out.split("TIME")[1].splitlines()[1:]
    assert len(steps) == 3, shown.out
    for line, step, result in zip(
        steps, ("reserve stock", "charge card", "ship"), ("R-ok", "PAY-ok", "SHP-ok"), strict=True
    ):
        assert re.search(rf"{step} +action +1 +succeeded +\d.* -> \"{result}\"$", line), line

    failed = cli("show", "stuck", "--traceback", url=db_url)
    assert failed.code == 0, failed
    assert "  status    failed\n" in failed.out
    assert "  error     ValueError: no carrier for stuck\n" in failed.out
    assert re.search(
        r"ship +action +1 +failed .* ValueError: no carrier for stuck; gave up", failed.out
    )
    assert re.search(
        r"charge card +compensation +1 +failed .* RuntimeError: the refund service is down; gave up",
        failed.out,
    )
    assert re.search(r"reserve stock +compensation +1 +succeeded", failed.out)  # release ran
    assert "Traceback (most recent call last)" in failed.out  # --traceback
    assert "Traceback" not in main_run("show", "stuck", url=db_url).out

    running = main_run("show", "lost", url=db_url).out
    assert "  status    running\n" in running
    assert re.search(
        r"charge card +action +1 +started +- +in flight \(or its process died", running
    )

    data = json.loads(cli("show", "rolled", "--json", url=db_url).out)
    assert data["status"] == "compensated"
    assert [(a["step_name"], a["kind"], a["status"]) for a in data["attempts"]] == [
        ("reserve stock", "action", "succeeded"),
        ("charge card", "action", "succeeded"),
        ("ship", "action", "failed"),
        ("charge card", "compensation", "succeeded"),
        ("reserve stock", "compensation", "succeeded"),
    ]
    assert data["attempts"][2]["error_type"] == "ValueError"
    assert data["error_message"] == "no carrier for rolled"
    assert data["events"] == []

    missing = cli("show", "nope", url=db_url)
    assert (missing.out, missing.err) == ("", "saga-store: error: no saga with id 'nope'\n")
    assert missing.code == 1


def test_stats_text_and_json(cli: CliRunner, orders: Orders, db_url: str) -> None:
    four_orders(orders)
    stats = cli("stats", url=db_url)
    assert (stats.code, stats.err) == (0, ""), stats
    assert stats.out.startswith(
        "sagas: 4\n  by status: 1 running, 1 succeeded, 1 compensated, 1 failed\n"
    )
    assert re.search(r"^  checkout +0 +1 +1 +1 +3$", stats.out, re.MULTILINE), stats.out
    assert re.search(r"^  refill +1 +0 +0 +0 +1$", stats.out, re.MULTILINE), stats.out
    assert "oldest running: lost (refill, running), started " in stats.out
    assert "parked: 0\nfailed and unresolved: 1\n  these need a person:" in stats.out
    numbers = json.loads(cli("stats", "--json", url=db_url).out)
    assert numbers["by_status"] == {"running": 1, "succeeded": 1, "compensated": 1, "failed": 1}
    assert numbers["by_name"]["checkout"] == {"succeeded": 1, "compensated": 1, "failed": 1}
    assert numbers["oldest_running"]["id"] == "lost"
    assert (numbers["total"], numbers["parked"], numbers["unresolved_failed"]) == (4, [], 1)

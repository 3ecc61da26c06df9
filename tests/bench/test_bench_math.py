"""The benchmark's arithmetic and tables (pure: no database, no clock)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.bench.bench_sagas import render
from tests.bench.report import (
    format_number,
    median,
    percentile,
    pooled,
    rate,
    ratio,
    render_table,
    targets,
)
from tests.bench.support import classify


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 25) == pytest.approx(1.75)
    assert percentile([7.0], 99) == 7.0


def test_p99_of_a_hundred_values_sits_between_the_two_largest() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == pytest.approx(99.01)
    assert median(values) == 50.5


@pytest.mark.parametrize("q", [-1, 100.5])
def test_percentile_refuses_what_is_not_a_percentage(q: float) -> None:
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile([1.0], q)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)


def test_rates_and_ratios_do_not_divide_by_zero() -> None:
    assert rate(30, 2.0) == 15.0
    assert rate(30, 0.0) == 0.0
    assert ratio(3, 4) == 0.75
    assert ratio(3, 0) == 0.0


def test_pooled_rate_weighs_each_run_by_its_time() -> None:
    runs = [{"commits": 100, "seconds": 1.0}, {"commits": 300, "seconds": 3.0}]
    assert pooled(runs, "commits") == 100.0
    # a mean of the two rates would say 100 too; unequal rates show the difference
    runs = [{"commits": 100, "seconds": 1.0}, {"commits": 100, "seconds": 3.0}]
    assert pooled(runs, "commits") == 50.0


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "-"),
        (True, "yes"),
        (False, "NO"),
        (12345, "12,345"),
        (1234.5, "1,234"),
        (12.345, "12.3"),
        (0.6049, "0.60"),
        (float("nan"), "-"),
        ("text", "text"),
    ],
)
def test_numbers_are_shown_for_reading(value: Any, shown: str) -> None:
    assert format_number(value) == shown


def test_table_aligns_text_left_and_numbers_right() -> None:
    table = render_table(["db", "commits/s"], [["sqlite", 1234.0], ["postgresql", 98.7]])
    assert table.splitlines() == [
        "db          commits/s",
        "----------  ---------",
        "sqlite          1,234",
        "postgresql       98.7",
    ]


def test_table_refuses_a_row_of_the_wrong_width() -> None:
    with pytest.raises(ValueError, match="2 headers"):
        render_table(["a", "b"], [[1]])


def test_claims_are_told_apart_from_the_journals_own_writes() -> None:
    claim = "UPDATE saga_sagas SET owner=?, parked_at=NULL, parked_by=NULL WHERE id IN (?)"
    assert classify(claim) == "claim"
    assert classify("UPDATE saga_sagas SET version=? WHERE id = ? AND version = ?") == "update"
    assert classify("  select id from saga_sagas") == "select"
    assert classify("WITH fence AS (UPDATE saga_sagas ...) SELECT count(*) FROM fence") == "with"
    assert classify("") == ""


def _results(**overrides: Any) -> dict[str, Any]:
    durable = {
        "orchestrated": {
            "sagas_per_s": 200.0,
            "steps_per_s": 1000.0,
            "commits_per_saga": 6.0,
            "commits_per_s": 1200.0,
            "efficiency": 0.62,
        },
        "choreographed": {
            "sagas_per_s": 100.0,
            "steps_per_s": 500.0,
            "commits_per_saga": 7.0,
            "commits_per_s": 700.0,
            "efficiency": 0.36,
        },
    }
    results: dict[str, Any] = {
        "machine": {
            "cpu": "Test CPU",
            "cores": 2,
            "memory_gib": 4.0,
            "python": "3.11.7",
            "sqlalchemy": "2.0",
            "psycopg": "3.2",
            "pymysql": None,
            "commit": "abc1234",
        },
        "databases": {"sqlite": {"server": "SQLite 3.40.1"}},
        "backends": {
            "sqlite-full": {
                "backend": "sqlite",
                "floor": {"commits_per_s": 2000.0},
                "durable": durable,
                "concurrency": [
                    {
                        "threads": 4,
                        "sagas_per_s": 150.0,
                        "steps_per_s": 750.0,
                        "p50_ms": 20.0,
                        "p99_ms": 80.0,
                    }
                ],
            }
        },
        "recovery": {
            "postgresql": {
                "one_worker": _recovery_run(workers=1, seconds=10.0),
                "four_workers": _recovery_run(workers=4, seconds=4.0),
            }
        },
        "memory": {
            "backend": "sqlite-normal",
            "sagas": 1000,
            "sagas_per_s": 250.0,
            "rss_bytes": {"start": 50 * 2**20, "10%": 60 * 2**20, "100%": 65 * 2**20},
            "peak_rss_bytes": 66 * 2**20,
            "growth_bytes": 5 * 2**20,
        },
    }
    results.update(overrides)
    return results


def _recovery_run(*, workers: int, seconds: float) -> dict[str, Any]:
    return {
        "workers": workers,
        "recovered": 1000,
        "seconds": seconds,
        "sagas_per_s": 1000 / seconds,
        "per_worker": [1000 // workers] * workers,
        "claim_queries_per_saga": 0.2,
        "statements_per_saga": 7.0,
        "commits_per_saga": 6.1,
    }


def test_targets_are_checked_against_the_figures() -> None:
    found = {(t.name, t.where): t for t in targets(_results(), steps=5)}
    orchestrated = found["commits per orchestrated saga", "sqlite-full"]
    assert (orchestrated.measured, orchestrated.goal, orchestrated.holds) == (6.0, "<= 6", True)
    choreographed = found["commits per choreographed saga", "sqlite-full"]
    assert (choreographed.goal, choreographed.holds) == ("<= 12", True)
    assert found["journal efficiency, orchestrated", "sqlite-full"].holds is True
    assert found["journal efficiency, choreographed", "sqlite-full"].holds is False
    speedup = found["recovery speed-up, 4 workers / 1", "postgresql"]
    assert (speedup.measured, speedup.holds) == (2.5, True)
    assert found["queries to find+claim per saga", "postgresql"].holds is True
    memory = found["memory growth over the run (MiB)", "sqlite-normal, 1,000 sagas"]
    assert (memory.measured, memory.holds) == (5.0, False)


def test_a_seventh_commit_breaks_the_orchestrated_budget() -> None:
    results = _results()
    results["backends"]["sqlite-full"]["durable"]["orchestrated"]["commits_per_saga"] = 7.0
    found = {(t.name, t.where): t for t in targets(results, steps=5)}
    assert found["commits per orchestrated saga", "sqlite-full"].holds is False


def test_efficiency_has_no_target_where_the_issue_sets_none() -> None:
    results = _results()
    results["backends"]["sqlite-full"]["backend"] = "mysql"
    names = {t.name for t in targets(results, steps=5)}
    assert "journal efficiency, orchestrated" not in names
    assert "commits per orchestrated saga" in names


def test_the_printout_has_every_section_it_has_figures_for() -> None:
    results = _results()
    results["targets"] = [t.as_dict() for t in targets(results, steps=5)]
    text = render(results)
    assert "machine: Test CPU, 2 cores" in text
    assert "sqlite-full" in text
    for section in ("Single thread", "Concurrency", "Recovery", "Memory", "Targets"):
        assert section in text
    assert "250/250/250/250" in text  # sagas recovered by each of the four workers


def test_the_printout_leaves_out_what_was_not_measured() -> None:
    results = _results(recovery={}, memory=None, targets=[])
    results["backends"]["sqlite-full"].pop("concurrency")
    text = render(results)
    assert "Single thread" in text
    for section in ("Concurrency", "Recovery", "Memory", "Targets"):
        assert section not in text

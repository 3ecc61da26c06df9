"""Pure figures for the benchmark: percentiles, rates, ratios, the targets, and the tables.

No I/O and no clock here, so `tests/bench/test_bench_math.py` can check every number the
benchmark prints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Target",
    "format_number",
    "median",
    "percentile",
    "pooled",
    "rate",
    "ratio",
    "render_table",
    "targets",
]

#: journal efficiency the issue asks for: commits/s while running sagas over the floor's
EFFICIENCY_TARGETS: Mapping[str, float] = {"sqlite": 0.60, "postgresql": 0.85}
#: resident memory that may come and go over a long run without counting as growth (allocator
#: arenas, SQLAlchemy's statement cache filling up)
MEMORY_SLACK_BYTES = 4 * 1024 * 1024


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def pooled(runs: Sequence[Mapping[str, Any]], key: str) -> float:
    """A rate over several timed runs: the sum of ``key`` over the sum of their ``seconds``."""
    return rate(sum(r[key] for r in runs), sum(r["seconds"] for r in runs))


def rate(count: float, seconds: float) -> float:
    """Events per second; 0 when nothing was timed."""
    return count / seconds if seconds > 0 else 0.0


def ratio(part: float, whole: float) -> float:
    """``part / whole``; 0 when the whole is 0 (nothing measured)."""
    return part / whole if whole else 0.0


def format_number(value: Any) -> str:
    """Numbers as a table shows them: thousands separated, ratios as percentages."""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int):
        return f"{value:,}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2
        return f"{value:,.{digits}f}"
    return str(value)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: text left-aligned, numbers right-aligned, a rule under the header."""
    cells = [[format_number(v) for v in row] for row in rows]
    for row in cells:
        if len(row) != len(headers):
            raise ValueError(f"row {row} has {len(row)} cells for {len(headers)} headers")
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows) and bool(rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in cells)])


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One target of the issue, checked against the measured figure."""

    name: str
    where: str
    measured: float
    goal: str
    holds: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "where": self.where,
            "measured": self.measured,
            "goal": self.goal,
            "holds": self.holds,
        }


def targets(results: Mapping[str, Any], steps: int) -> list[Target]:
    """Every target of the issue that ``results`` (the benchmark's JSON) has a figure for."""
    found: list[Target] = []
    for label, figures in results.get("backends", {}).items():
        found.extend(_journal_targets(label, figures, steps))
    for label, figures in results.get("recovery", {}).items():
        found.extend(_recovery_targets(label, figures))
    memory = results.get("memory")
    if memory:
        growth = float(memory["growth_bytes"])
        found.append(
            Target(
                name="memory growth over the run (MiB)",
                where=f"{memory['backend']}, {memory['sagas']:,} sagas",
                measured=growth / 2**20,
                goal=f"<= {MEMORY_SLACK_BYTES / 2**20:.0f}",
                holds=growth <= MEMORY_SLACK_BYTES,
            )
        )
    return found


def _journal_targets(label: str, figures: Mapping[str, Any], steps: int) -> list[Target]:
    found: list[Target] = []
    durable = figures.get("durable", {})
    orchestrated = durable.get("orchestrated")
    if orchestrated:
        found.append(
            Target(
                name="commits per orchestrated saga",
                where=label,
                measured=orchestrated["commits_per_saga"],
                goal=f"<= {steps + 1}",
                holds=orchestrated["commits_per_saga"] <= steps + 1,
            )
        )
    choreographed = durable.get("choreographed")
    if choreographed:
        found.append(
            Target(
                name="commits per choreographed saga",
                where=label,
                measured=choreographed["commits_per_saga"],
                goal=f"<= {2 * steps + 2}",
                holds=choreographed["commits_per_saga"] <= 2 * steps + 2,
            )
        )
    goal = EFFICIENCY_TARGETS.get(figures.get("backend", ""))
    if goal is not None:
        for mode, measured in (
            ("orchestrated", orchestrated),
            ("choreographed", choreographed),
        ):
            if measured:
                found.append(
                    Target(
                        name=f"journal efficiency, {mode}",
                        where=label,
                        measured=measured["efficiency"],
                        goal=f">= {goal:.2f}",
                        holds=measured["efficiency"] >= goal,
                    )
                )
    return found


def _recovery_targets(label: str, figures: Mapping[str, Any]) -> list[Target]:
    one = figures.get("one_worker")
    four = figures.get("four_workers")
    found: list[Target] = []
    if one:
        found.append(
            Target(
                name="queries to find+claim per saga",
                where=label,
                measured=one["claim_queries_per_saga"],
                goal="< 1 (batched)",
                holds=one["claim_queries_per_saga"] < 1,
            )
        )
    if one and four:
        speedup = ratio(one["seconds"], four["seconds"])
        found.append(
            Target(
                name="recovery speed-up, 4 workers / 1",
                where=label,
                measured=speedup,
                goal="> 1",
                holds=speedup > 1,
            )
        )
    return found

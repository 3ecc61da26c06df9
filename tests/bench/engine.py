"""The engine alone: 5-step sagas with no journal (``micro_saga`` only), sagas per second."""

from __future__ import annotations

from typing import Any

from .report import median
from .support import MODES, STEPS, in_memory_saga, repeatedly, run_for

__all__ = ["measure_in_memory"]


def measure_in_memory(seconds: float, rounds: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for mode in MODES:
        rates = []
        for _ in range(rounds):
            sagas, elapsed = run_for(seconds, repeatedly(in_memory_saga, mode))
            rates.append(sagas / elapsed)
        sagas_per_s = median(rates)
        figures[mode] = {
            "sagas_per_s": sagas_per_s,
            "steps_per_s": sagas_per_s * STEPS,
            "rounds": rates,
        }
    return figures

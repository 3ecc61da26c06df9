"""Resident memory while one store runs many durable sagas back to back: it must stay flat.

The sagas have two steps: their three commits take every path of the journal that the
benchmark's 5-step saga takes (the saga's first commit, a step finished with the next one
started, the last step finished with the saga), in 40% of the time, so 100,000 of them fit in
a full run. RSS is read from ``/proc/self/status`` (VmRSS now, VmHWM the peak), so no extra
package is needed; the growth is RSS at the end minus RSS after the first 10% (caches are warm
by then).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from saga_store.db import SqliteSync

from .machine import peak_rss_bytes, rss_bytes
from .support import BenchDb, durable_saga, fresh_database, open_store

__all__ = ["CHECKPOINTS", "STEPS", "measure_memory", "measure_memory_in_child"]

#: steps per saga here (see above)
STEPS = 2

#: fractions of the run at which RSS is sampled
CHECKPOINTS = (0.1, 0.5, 1.0)


def measure_memory_in_child(db: BenchDb, *, sagas: int) -> dict[str, Any]:
    """``measure_memory`` in a fresh process (so the peak is the run's own) on a fresh database."""
    with fresh_database(db.backend) as url, tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "memory.json"
        command = [sys.executable, "-m", "tests.bench.memory", url, db.sqlite_synchronous]
        subprocess.run([*command, str(sagas), str(out)], check=True, timeout=3600)
        figures: dict[str, Any] = json.loads(out.read_text())
    figures["backend"] = db.label
    return figures


def measure_memory(url: str, db: BenchDb, *, sagas: int) -> dict[str, Any]:
    """Run ``sagas`` durable sagas one after another, sampling RSS along the way."""
    store = open_store(url, db, upgrade=True)
    try:
        marks = {max(1, round(sagas * f)): f for f in CHECKPOINTS}
        samples: dict[str, int] = {"start": rss_bytes()}
        began = time.perf_counter()
        for done in range(1, sagas + 1):
            durable_saga(store, steps=STEPS).orchestrator_execute()
            if done in marks:
                samples[f"{marks[done]:.0%}"] = rss_bytes()
        elapsed = time.perf_counter() - began
        first = samples[f"{CHECKPOINTS[0]:.0%}"]
        last = samples[f"{CHECKPOINTS[-1]:.0%}"]
        return {
            "backend": db.label,
            "sagas": sagas,
            "steps_per_saga": STEPS,
            "seconds": elapsed,
            "sagas_per_s": sagas / elapsed,
            "rss_bytes": samples,
            "peak_rss_bytes": peak_rss_bytes(),
            "growth_bytes": last - first,
        }
    finally:
        store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the memory section of the benchmark")
    parser.add_argument("url")
    parser.add_argument("synchronous", choices=["FULL", "NORMAL"])
    parser.add_argument("sagas", type=int)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    synchronous = cast(SqliteSync, args.synchronous)
    db = BenchDb(label="memory", backend="sqlite", sqlite_synchronous=synchronous)
    args.out.write_text(json.dumps(measure_memory(args.url, db, sagas=args.sagas)))


if __name__ == "__main__":
    main()

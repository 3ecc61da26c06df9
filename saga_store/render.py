"""Saga history as text and JSON: pure functions from records to what the command line prints.

No I/O here: ``saga_store.cli`` reads the records and prints what these functions return.
Times are shown in UTC, as the journal keeps them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from .history import Progress
from .records import AttemptRecord, SagaRecord, Stats
from .recovery import RecoveryReport

__all__ = [
    "STATUSES",
    "duration",
    "page_json",
    "recovery_lines",
    "revision_label",
    "saga_json",
    "saga_list",
    "stats_json",
    "stats_text",
    "status_label",
    "table",
    "when",
]

#: saga statuses in the order of their life
STATUSES = ("running", "compensating", "succeeded", "compensated", "failed")

_MINUTE, _HOUR, _DAY = 60, 3600, 86400


def when(moment: datetime | None, *, ms: bool = False) -> str:
    """``2025-01-31 12:00:00`` (UTC), with milliseconds if asked; ``-`` for None."""
    if moment is None:
        return "-"
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if ms else f"{moment:%Y-%m-%d %H:%M:%S}"


def duration(span: timedelta | None) -> str:
    """A short human duration: ``850 ms``, ``1.25 s``, ``3m 05s``, ``2h 03m``, ``4d 01h``."""
    if span is None:
        return "-"
    seconds = span.total_seconds()
    if seconds < 1:
        return f"{max(seconds, 0) * 1000:.0f} ms"
    if seconds < _MINUTE:
        return f"{seconds:.2f} s"
    whole = int(seconds)
    if whole < _HOUR:
        return f"{whole // _MINUTE}m {whole % _MINUTE:02d}s"
    if whole < _DAY:
        return f"{whole // _HOUR}h {whole % _HOUR // _MINUTE:02d}m"
    return f"{whole // _DAY}d {whole % _DAY // _HOUR:02d}h"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; trailing spaces trimmed."""
    body = [list(headers), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in body) for i in range(len(headers))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in body
    ]


# -- list ---------------------------------------------------------------------------------------


def saga_list(
    sagas: Sequence[SagaRecord], progress: Mapping[str, Progress], next_cursor: str | None
) -> str:
    """The ``list`` table, newest first, with how to get the next page."""
    if not sagas:
        return "no sagas match"
    rows = [
        (
            saga.id,
            saga.name or "-",
            status_label(saga),
            when(saga.created_at),
            duration(saga.duration),
            _steps(progress.get(saga.id)),
            str(progress[saga.id].attempts) if saga.id in progress else "-",
        )
        for saga in sagas
    ]
    lines = table(("ID", "NAME", "STATUS", "CREATED (UTC)", "DURATION", "STEPS", "ATTEMPTS"), rows)
    if next_cursor is not None:
        lines += ["", f"more sagas: add --cursor {next_cursor}"]
    return "\n".join(lines)


def status_label(saga: SagaRecord) -> str:
    """The status, with ``(parked)`` or ``(resolved)`` when they apply."""
    marks = [m for m, on in (("parked", saga.parked), ("resolved", saga.resolved_at)) if on]
    return f"{saga.status} ({', '.join(marks)})" if marks else saga.status


def _steps(progress: Progress | None) -> str:
    if progress is None:
        return "-"
    return f"{progress.done}/{'?' if progress.steps is None else progress.steps}"


# -- stats --------------------------------------------------------------------------------------


def stats_text(stats: Stats, now: datetime) -> str:
    """The ``stats`` view: counts by status and by name, what is old and what needs a person."""
    lines = [f"sagas: {stats.total}"]
    if stats.total:
        counts = ", ".join(f"{stats.by_status[s]} {s}" for s in _statuses(stats.by_status))
        lines.append(f"  by status: {counts}")
        columns = _statuses(stats.by_status)
        rows = [
            (name or "(no name)", *(str(per.get(s, 0)) for s in columns), str(sum(per.values())))
            for name, per in sorted(stats.by_name.items())
        ]
        lines += [
            "",
            *(
                "  " + line
                for line in table(("NAME", *(c.upper() for c in columns), "TOTAL"), rows)
            ),
        ]
    lines.append("")
    oldest = stats.oldest_running
    if oldest is None:
        lines.append("oldest running: none")
    else:
        age = duration(now - oldest.created_at)
        lines.append(
            f"oldest running: {oldest.id} ({oldest.name or 'no name'}, {oldest.status}), "
            f"started {when(oldest.created_at)} UTC, {age} ago"
        )
    lines.append(
        f"parked: {len(stats.parked)}" + (f": {', '.join(stats.parked)}" if stats.parked else "")
    )
    lines.append(f"failed and unresolved: {stats.unresolved_failed}")
    if stats.parked or stats.unresolved_failed:
        lines.append(
            "  these need a person: saga-store show ID, then retry ID or resolve ID --note TEXT"
        )
    return "\n".join(lines)


def _statuses(counts: Mapping[str, int]) -> list[str]:
    return [s for s in STATUSES if s in counts] + sorted(set(counts) - set(STATUSES))


# -- recovery -----------------------------------------------------------------------------------


def recovery_lines(report: RecoveryReport, stamp: datetime | None = None) -> list[str]:
    """``summary()`` (after the time, if given), then one line per parked saga or error."""
    lines = [f"{'' if stamp is None else f'{stamp:%H:%M:%S} '}recovery: {report.summary()}"]
    lines += [f"  parked {saga_id}: {error}" for saga_id, error in report.parked.items()]
    lines += [f"  error on {saga_id}: {error}" for saga_id, error in report.errors.items()]
    return lines


def revision_label(revision: str | None, head: str) -> str:
    """A schema revision as ``current`` prints it."""
    if revision is None:
        return "none (no saga tables: run `saga-store upgrade`)"
    return f"{revision} (head)" if revision == head else f"{revision} (head is {head})"


# -- JSON ---------------------------------------------------------------------------------------


def saga_json(
    saga: SagaRecord, progress: Progress | None = None, *, full: bool = False
) -> dict[str, Any]:
    """A saga as JSON-ready data (``full``: with attempts and events); times in ISO 8601,
    durations in seconds."""
    data: dict[str, Any] = {
        "id": saga.id,
        "name": saga.name,
        "status": saga.status,
        "mode": saga.mode,
        "on_crash": saga.on_crash,
        "created_at": _iso(saga.created_at),
        "updated_at": _iso(saga.updated_at),
        "finished_at": _iso(saga.finished_at),
        "duration": _seconds(saga.duration),
        "results": saga.results,
        "error_type": saga.error_type,
        "error_message": saga.error_message,
        "owner": saga.owner,
        "lease_expires_at": _iso(saga.lease_expires_at),
        "wake_at": _iso(saga.wake_at),
        "parked": saga.parked,
        "parked_at": _iso(saga.parked_at),
        "parked_error": saga.parked_error,
        "resolved_at": _iso(saga.resolved_at),
        "resolution_note": saga.resolution_note,
    }
    if progress is not None:
        data.update(steps=progress.steps, steps_done=progress.done, attempt_count=progress.attempts)
    if full:
        data["attempts"] = [_attempt_json(a) for a in saga.attempts]
        data["events"] = [
            {"at": _iso(e.at), "kind": e.kind, "worker": e.worker, "detail": e.detail}
            for e in saga.events
        ]
    return data


def _attempt_json(attempt: AttemptRecord) -> dict[str, Any]:
    return {
        "step": attempt.step,
        "step_name": attempt.step_name,
        "kind": attempt.kind,
        "attempt": attempt.attempt,
        "status": attempt.status,
        "worker": attempt.worker,
        "started_at": _iso(attempt.started_at),
        "finished_at": _iso(attempt.finished_at),
        "duration": _seconds(attempt.duration),
        "result": attempt.result,
        "error_type": attempt.error_type,
        "error_message": attempt.error_message,
        "error_traceback": attempt.error_traceback,
        "retry_at": _iso(attempt.retry_at),
    }


def page_json(
    sagas: Sequence[SagaRecord], progress: Mapping[str, Progress], next_cursor: str | None
) -> dict[str, Any]:
    """A ``list`` page as JSON-ready data, with the cursor of the next page."""
    return {
        "items": [saga_json(s, progress.get(s.id)) for s in sagas],
        "next_cursor": next_cursor,
    }


def stats_json(stats: Stats) -> dict[str, Any]:
    oldest = stats.oldest_running
    return {
        "total": stats.total,
        "by_status": stats.by_status,
        "by_name": stats.by_name,
        "oldest_running": None if oldest is None else saga_json(oldest),
        "parked": list(stats.parked),
        "unresolved_failed": stats.unresolved_failed,
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _seconds(span: timedelta | None) -> float | None:
    return None if span is None else round(span.total_seconds(), 6)

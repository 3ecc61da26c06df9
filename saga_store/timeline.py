"""The ``show`` view: a saga's header, then its attempts and events in time order.

Pure formatting, like ``render``: records in, text out. Times are UTC.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .records import AttemptRecord, EventRecord, SagaRecord
from .render import duration, table, when

__all__ = ["timeline"]

_WIDTH = 80  # longest result or error message shown on one timeline line


@dataclass(frozen=True, slots=True)
class _Line:
    at: datetime
    cells: tuple[str, ...]
    extra: tuple[str, ...] = ()


def timeline(saga: SagaRecord, *, tracebacks: bool = False) -> str:
    """The ``show`` view: the saga's header, then every attempt and event in time order."""
    lines = _header(saga)
    steps_named: dict[str, set[int]] = {}
    for a in saga.attempts:
        steps_named.setdefault(a.step_name, set()).add(a.step)
    shared = {name for name, steps in steps_named.items() if len(steps) > 1}
    entries = sorted(
        [_attempt_line(a, a.step_name in shared, tracebacks) for a in saga.attempts]
        + [_event_line(e) for e in saga.events],
        key=lambda line: line.at,
    )
    lines.append("")
    if not entries:
        lines.append("no attempts yet")
        return "\n".join(lines)
    days = {line.at.date() for line in entries}
    lines.append(
        f"timeline (UTC{'' if len(days) > 1 else ', ' + entries[0].at.strftime('%Y-%m-%d')})"
    )
    rows = [(_clock(line.at, len(days) > 1), *line.cells) for line in entries]
    headers = ("TIME", "STEP", "KIND", "#", "OUTCOME", "DURATION", "DETAIL")
    rendered = table(headers, rows)
    lines.append("  " + rendered[0])
    for text, line in zip(rendered[1:], entries, strict=True):
        lines.append("  " + text)
        lines.extend("      " + extra for extra in line.extra)
    return "\n".join(lines)


def _header(saga: SagaRecord) -> list[str]:
    fields: list[tuple[str, str]] = [
        ("status", saga.status),
        ("mode", f"{saga.mode}, on crash: {saga.on_crash}"),
        ("created", when(saga.created_at, ms=True)),
    ]
    if saga.finished_at is not None:
        fields.append(
            ("finished", f"{when(saga.finished_at, ms=True)} (after {duration(saga.duration)})")
        )
    if saga.owner is not None:
        fields.append(("owner", f"{saga.owner}, lease until {when(saga.lease_expires_at)}"))
    if saga.wake_at is not None:
        fields.append(("waiting", f"next attempt due at {when(saga.wake_at, ms=True)}"))
    if saga.error_type is not None:
        fields.append(("error", f"{saga.error_type}: {saga.error_message or ''}".rstrip()))
    if saga.results is not None:
        fields.append(("results", _short(saga.results, 200)))
    if saga.parked_at is not None:
        fields.append(("parked", f"at {when(saga.parked_at)}: {saga.parked_error or ''}".rstrip()))
    if saga.resolved_at is not None:
        fields.append(("resolved", f"at {when(saga.resolved_at)}: {saga.resolution_note or ''}"))
    title = f"saga {saga.id}" + (f"  ({saga.name})" if saga.name else "")
    return [title, *(f"  {label:<9} {value}" for label, value in fields)]


def _attempt_line(attempt: AttemptRecord, shared_name: bool, tracebacks: bool) -> _Line:
    """One attempt; ``shared_name``: another step has the same name, so show the index too."""
    extra: tuple[str, ...] = ()
    if tracebacks and attempt.error_traceback:
        extra = tuple(attempt.error_traceback.rstrip().splitlines())
    return _Line(
        attempt.started_at,
        (
            f"{attempt.step_name} [{attempt.step}]" if shared_name else attempt.step_name,
            attempt.kind,
            str(attempt.attempt),
            attempt.status,
            duration(attempt.duration) if attempt.status != "started" else "-",
            _detail(attempt),
        ),
        extra,
    )


def _detail(attempt: AttemptRecord) -> str:
    if attempt.status == "started":
        return "in flight (or its process died: recovery will mark it interrupted)"
    if attempt.status == "interrupted":
        return f"its process died during the attempt (found by recovery at {_clock(attempt.finished_at)})"
    if attempt.status == "succeeded":
        return "" if attempt.result is None else f"-> {_short(attempt.result, _WIDTH)}"
    kind = (attempt.error_type or "error").rpartition(".")[2]  # the header has the full name
    error = f"{kind}: {attempt.error_message or ''}".rstrip(": ")
    then = "gave up" if attempt.retry_at is None else f"retry at {_clock(attempt.retry_at)}"
    return f"{_cut(error, _WIDTH)}; {then}"


def _event_line(event: EventRecord) -> _Line:
    by = f"by {event.worker}" if event.worker else ""
    detail = "; ".join(part for part in (by, _cut(event.detail or "", _WIDTH)) if part)
    return _Line(event.at, ("(saga)", "event", "", event.kind, "", detail))


def _clock(moment: datetime | None, with_date: bool = False) -> str:
    if moment is None:
        return "-"
    text = moment.strftime("%H:%M:%S.%f")[:-3]
    return f"{moment:%Y-%m-%d} {text}" if with_date else text


def _short(value: Any, width: int) -> str:
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except ValueError:
        text = repr(value)
    return _cut(text, width)


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."

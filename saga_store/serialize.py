"""Serializers: how arguments, results and plans become text in the journal.

JSON by default (readable in SQL), with tags for a few common types. Pickle is never the
default: the database is not trusted to choose code.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from micro_saga.operation import ACTION_RESULT

from .errors import SerializationError

__all__ = ["JsonSerializer", "Serializer"]

_TAG = "__saga__"


@runtime_checkable
class Serializer(Protocol):
    """Turns values into journal text and back; raise SerializationError on what you can't."""

    def dumps(self, value: Any) -> str: ...

    def loads(self, text: str) -> Any: ...


class JsonSerializer:
    """JSON, plus tagged Decimal, datetime, date, UUID and the ACTION_RESULT placeholder.

    Tuples come back as lists and dict keys as strings (as JSON has it). A dict of exactly
    ``{"__saga__": TAG, "v": TEXT}`` is read back as a tagged value: that shape is reserved.
    Anything else is refused with an error naming its type.
    """

    def dumps(self, value: Any) -> str:
        try:
            return _ENCODER.encode(value)
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"cannot store {_describe(value)} as JSON ({exc}): use JSON types (str, int, "
                "float, bool, None, list, dict), Decimal, datetime, date or UUID, or pass "
                "SagaStore(serializer=...) that handles it"
            ) from None

    def loads(self, text: str) -> Any:
        try:
            return _DECODER.decode(text)
        except Exception as exc:  # any decoder's error (e.g. decimal.InvalidOperation) is ours
            raise SerializationError(f"journal text is not valid JSON: {exc}") from None


def _encode(value: Any) -> Any:
    if value is ACTION_RESULT:
        return {_TAG: "action_result"}
    if isinstance(value, Decimal):
        return {_TAG: "decimal", "v": str(value)}
    if isinstance(value, dt.datetime):
        return {_TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {_TAG: "date", "v": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {_TAG: "uuid", "v": str(value)}
    if isinstance(value, set | frozenset):
        raise TypeError(f"a {type(value).__name__} has no JSON form (use a list)")
    raise TypeError(f"{type(value).__module__}.{type(value).__qualname__} is not JSON")


def _decode(obj: dict[str, Any]) -> Any:
    # Only the exact shapes _encode writes are tags: any other dict is the caller's data,
    # even if it happens to have a "__saga__" key.
    tag = obj.get(_TAG)
    if not isinstance(tag, str):
        return obj
    if tag == "action_result" and len(obj) == 1:
        return ACTION_RESULT
    text = obj.get("v")
    if len(obj) != 2 or not isinstance(text, str):  # noqa: PLR2004  (the tag and its text)
        return obj
    decoders: dict[str, Callable[[str], Any]] = {
        "decimal": Decimal,
        "datetime": dt.datetime.fromisoformat,
        "date": dt.date.fromisoformat,
        "uuid": uuid.UUID,
    }
    decoder = decoders.get(tag)
    return obj if decoder is None else decoder(text)


def _describe(value: Any) -> str:
    return f"a {type(value).__name__}" if not isinstance(value, dict | list) else "a value"


# Made once: json.dumps and json.loads build a new encoder or decoder on every call that passes
# options, which costs more than encoding a step's result.
_ENCODER = json.JSONEncoder(default=_encode, allow_nan=False, separators=(",", ":"))
_DECODER = json.JSONDecoder(object_hook=_decode)

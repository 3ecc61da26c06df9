"""The default JSON serializer: tagged types round-trip, and only their exact shapes are tags."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest

from micro_saga import ACTION_RESULT
from saga_store import JsonSerializer, SerializationError

S = JsonSerializer()


@pytest.mark.parametrize(
    "value",
    [
        Decimal("9.99"),
        dt.datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
        dt.date(2025, 1, 2),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        {"nested": [Decimal("1.5"), None, True, "x"]},
    ],
)
def test_tagged_types_round_trip(value: Any) -> None:
    assert S.loads(S.dumps(value)) == value


def test_the_action_result_placeholder_round_trips() -> None:
    assert S.loads(S.dumps([1, ACTION_RESULT]))[1] is ACTION_RESULT


@pytest.mark.parametrize(
    "data",
    [
        {"__saga__": "date", "v": "2024-01-01", "note": "x"},
        {"__saga__": "action_result", "x": 1},
        {"__saga__": "no-such-tag", "v": "1"},
        {"__saga__": 3, "v": "1"},
    ],
)
def test_a_callers_dict_that_only_looks_like_a_tag_is_left_alone(data: dict[str, Any]) -> None:
    assert S.loads(S.dumps(data)) == data


def test_a_tag_whose_text_is_bad_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError, match="not valid JSON"):
        S.loads('{"__saga__":"decimal","v":"not a number"}')


@pytest.mark.parametrize("value", [object(), {1, 2}, float("nan")])
def test_what_json_cannot_hold_is_refused_with_the_fix(value: Any) -> None:
    with pytest.raises(SerializationError, match=r"SagaStore\(serializer=\.\.\.\)"):
        S.dumps(value)

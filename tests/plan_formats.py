"""Plans as earlier versions wrote them, for the tests that read them back."""

from __future__ import annotations

import json


def as_format_1(text: str) -> str:
    """The same plan as format 1 had it: both full policies in every step, no ``policies``."""
    data = json.loads(text)
    policies = data.pop("policies")
    for step in data["steps"]:
        step["retry"] = policies[step["retry"]]
        step["compensation_retry"] = policies[step["compensation_retry"]]
    data["format"] = 1
    return json.dumps(data)

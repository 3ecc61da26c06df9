"""Generated saga ids: UUIDs of version 7, so that ids made later sort later."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from freezegun import freeze_time

from micro_saga import Operation, SagaAssembler
from micro_saga.plan import new_saga_id

AT = datetime(2026, 12, 4, 20, 0, 0, tzinfo=UTC)


def test_a_generated_id_is_a_version_7_uuid_carrying_the_milliseconds() -> None:
    with freeze_time(AT):
        text = new_saga_id()
    assert len(text) == 32
    value = uuid.UUID(hex=text)
    assert value.hex == text
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert int(text[:12], 16) == int(AT.timestamp() * 1000)


def test_ids_made_later_sort_later_and_ids_of_one_millisecond_differ() -> None:
    with freeze_time(AT) as frozen:
        same_moment = {new_saga_id() for _ in range(10_000)}
        later = []
        for _ in range(5):
            frozen.tick(0.002)
            later.append(new_saga_id())
    assert len(same_moment) == 10_000
    assert max(same_moment) < later[0]
    assert later == sorted(later)


def test_a_saga_without_an_id_gets_a_generated_one() -> None:
    def step() -> int:
        return 1

    plan = SagaAssembler.saga().operation(Operation(step)).plan("orchestrated")
    assert uuid.UUID(hex=plan.saga_id).version == 7
    assert plan.fresh is True
    named = SagaAssembler.saga(saga_id="order-42").operation(Operation(step))
    assert named.plan("orchestrated").saga_id == "order-42"

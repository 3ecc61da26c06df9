"""A saga id names one saga, byte for byte, on every backend."""

from __future__ import annotations

import pytest

from micro_saga import Operation, SagaDefinitionError
from saga_store import SagaStore


def echo(value: str) -> str:
    return value


def test_ids_that_differ_in_case_are_different_sagas(store: SagaStore) -> None:
    store.register(echo)
    ids = ["order-42", "Order-42", "ORDER-42"]
    results = [
        store.saga("checkout", saga_id=saga_id)
        .operation(Operation(echo, saga_id))
        .orchestrator_execute()
        for saga_id in ids
    ]
    assert results == [[saga_id] for saga_id in ids]
    assert sorted(s.id for s in store.list()) == sorted(ids)
    assert [store.get(saga_id).results for saga_id in ids] == [[saga_id] for saga_id in ids]


def test_an_id_with_surrounding_white_space_is_refused_before_anything_runs(
    store: SagaStore,
) -> None:
    store.register(echo)
    with pytest.raises(SagaDefinitionError, match="leading or trailing white space"):
        store.saga("checkout", saga_id="order-42 ")
    assert store.list().items == ()

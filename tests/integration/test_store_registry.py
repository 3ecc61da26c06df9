"""The registry and the serializer of durable sagas, on every active backend.

A saga that could not be rebuilt after a restart is refused before anything happens: before any
step runs and before any row is written. Values round-trip through JSON with their types; the
database never chooses code; pickle is nowhere.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import micro_saga
import saga_store
from micro_saga import (
    Operation,
    ResultNotStored,
    SagaAssembler,
    SagaDefinitionError,
    SagaException,
)
from saga_store import (
    JsonSerializer,
    Registry,
    SagaStore,
    SerializationError,
    UnregisteredFunction,
    default_registry,
)
from saga_store.codec import decode_plan
from saga_store.tables import attempts, sagas

_calls: Counter[str] = Counter()
_lock = threading.Lock()
#: arguments as the steps received them
_received: list[tuple[Any, ...]] = []


def _hit(name: str) -> None:
    with _lock:
        _calls[name] += 1


@pytest.fixture(autouse=True)
def _fresh_counters() -> Iterator[None]:
    _calls.clear()
    _received.clear()
    yield
    _calls.clear()
    _received.clear()


class Interrupted(BaseException):
    """Stands for Ctrl-C in the middle of a step: the runner lets it through, the saga stays
    running in the journal (its lease released), and recovery finishes it."""


def debit(account: str, amount: Decimal) -> str:
    _hit("debit")
    return f"debited {amount} from {account}"


def credit(account: str, amount: Decimal) -> str:
    _hit("credit")
    return f"credited {amount} to {account}"


def not_registered(account: str) -> str:  # never registered, on purpose
    _hit("not_registered")
    return account


def not_registered_undo(account: str) -> str:  # never registered, on purpose
    _hit("not_registered_undo")
    return account


def echo(amount: Decimal, when: datetime, day: date, token: uuid.UUID, nested: Any) -> Any:
    _hit("echo")
    with _lock:
        _received.append((amount, when, day, token, nested))
    return {"amount": amount, "when": when, "day": day, "token": token, "nested": nested}


def unstorable_result(account: str) -> object:
    _hit("unstorable_result")
    return object()


def capture_before_rename(amount: Decimal, token: uuid.UUID) -> str:
    _hit("capture_before_rename")
    raise Interrupted


def capture_after_rename(amount: Decimal, token: uuid.UUID) -> str:
    _hit("capture_after_rename")
    with _lock:
        _received.append((amount, token))
    return f"captured {amount}"


def touch(path: str) -> str:
    _hit("touch")
    raise Interrupted


class Payments:
    def charge(self, account: str) -> str:
        _hit("Payments.charge")
        return account


for _func in (debit, credit, echo, unstorable_result, touch):
    default_registry.register(_func)


def _count(store: SagaStore, table: sa.Table) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


# -- refused before any step runs and before any row is written ------------------------------


def _closure() -> Callable[[str], str]:
    def inner(account: str) -> str:
        _hit("inner")
        return account

    return inner


Case = tuple[Callable[[], Operation], type[SagaDefinitionError], tuple[str, ...]]

CASES: dict[str, Case] = {
    "lambda": (
        lambda: Operation(lambda account: account, "acc-1"),
        UnregisteredFunction,
        ("lambda", "<lambda>", "module-level function and register it"),
    ),
    "closure": (
        lambda: Operation(_closure(), "acc-1"),
        UnregisteredFunction,
        ("_closure.<locals>.inner", "closure", "move it to module level and register it"),
    ),
    "unregistered function": (
        lambda: Operation(not_registered, "acc-1"),
        UnregisteredFunction,
        (f"{__name__}:not_registered is not registered", "@store.register"),
    ),
    "bound method": (
        lambda: Operation(Payments().charge, "acc-1"),
        UnregisteredFunction,
        ("Payments.charge", "not a plain function", "register"),
    ),
    "unregistered compensation": (
        lambda: Operation(credit, "acc-1", Decimal(1)).add_compensation(
            not_registered_undo, "acc-1"
        ),
        UnregisteredFunction,
        (f"{__name__}:not_registered_undo is not registered", "@store.register"),
    ),
    "object() argument": (
        lambda: Operation(credit, "acc-1", object()),
        SerializationError,
        ("argument 2 of the action of step 1 ('credit')", "object", "serializer="),
    ),
    "set argument": (
        lambda: Operation(credit, "acc-1", {1, 2}),
        SerializationError,
        ("argument 2 of the action of step 1 ('credit')", "set", "use a list"),
    ),
    "keyword argument": (
        lambda: Operation(credit, "acc-1", amount=object()),
        SerializationError,
        ("argument amount= of the action of step 1 ('credit')", "object", "serializer="),
    ),
    "compensation argument": (
        lambda: Operation(credit, "acc-1", Decimal(1)).add_compensation(debit, "acc-1", {3}),
        SerializationError,
        ("argument 2 of the compensation of step 1 ('credit')", "set"),
    ),
}

RUNS: dict[str, Callable[[SagaAssembler], list[Any]]] = {
    "orchestrator_execute": lambda saga: saga.orchestrator_execute(),
    "choreography_execute_async": lambda saga: asyncio.run(saga.choreography_execute_async()),
}


def test_a_saga_that_cannot_be_rebuilt_is_refused_before_anything_happens(
    store: SagaStore,
) -> None:
    # One database for every case: each must leave it as empty as it found it.
    for case_name, case in CASES.items():
        for run_name, run in RUNS.items():
            try:
                _refused(store, case, run)
            except AssertionError as error:
                error.add_note(f"(while checking a saga with a {case_name}, by {run_name})")
                raise


def _refused(store: SagaStore, case: Case, run: Callable[[SagaAssembler], list[Any]]) -> None:
    make_bad, error_class, fragments = case
    saga = store.saga("refused", saga_id="refused-1")
    saga.operation(Operation(debit, "acc-0", Decimal("1.00")).add_compensation(credit, "acc-0", 1))
    saga.operation(make_bad())

    with pytest.raises(error_class) as caught:
        run(saga)

    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert isinstance(caught.value, SagaDefinitionError)
    assert isinstance(caught.value, micro_saga.SagaError)
    assert not isinstance(caught.value, SagaException)  # nothing ran, nothing to compensate
    assert sum(_calls.values()) == 0
    assert _count(store, sagas) == 0
    assert _count(store, attempts) == 0
    with pytest.raises(saga_store.SagaNotFound):
        store.get("refused-1")


def test_register_refuses_what_cannot_be_found_again(tmp_path: Path) -> None:
    store = SagaStore(f"sqlite:///{tmp_path / 'unused.db'}", heartbeat=False)  # never connects
    with pytest.raises(UnregisteredFunction, match="lambda"):
        store.register(lambda: None)
    with pytest.raises(UnregisteredFunction, match="closure"):
        store.register(_closure())
    with pytest.raises(UnregisteredFunction, match="not a plain function"):
        store.register(Payments().charge)
    with pytest.raises(UnregisteredFunction, match="non-empty"):
        store.register(name=" ")(not_registered)


# -- values round-trip -----------------------------------------------------------------------

AMOUNT = Decimal("9.990")
WHEN = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
DAY = date(2024, 5, 1)
TOKEN = uuid.UUID("12345678-1234-5678-1234-567812345678")
NESTED = {"lines": [Decimal("1.10"), Decimal("2.20")], "at": [WHEN], "ids": {"a": TOKEN}}
EXPECTED = {"amount": AMOUNT, "when": WHEN, "day": DAY, "token": TOKEN, "nested": NESTED}


def _assert_typed(value: Any) -> None:
    assert value == EXPECTED
    assert type(value["amount"]) is Decimal
    assert str(value["amount"]) == "9.990"  # the exact decimal, not a float
    assert type(value["when"]) is datetime
    assert value["when"].tzinfo is not None
    assert type(value["day"]) is date
    assert type(value["token"]) is uuid.UUID
    assert [type(v) for v in value["nested"]["lines"]] == [Decimal, Decimal]


def test_decimal_datetime_date_and_uuid_round_trip(store: SagaStore) -> None:
    def build() -> SagaAssembler:
        saga = store.saga("typed", saga_id="typed-1")
        return saga.operation(Operation(echo, AMOUNT, WHEN, DAY, TOKEN, nested=NESTED))

    assert build().orchestrator_execute() == [EXPECTED]

    # The result read back from the journal keeps its types...
    record = store.get("typed-1")
    assert record.results is not None
    _assert_typed(record.results[0])
    _assert_typed(record.attempts[0].result)
    # ...and so do the results of running the same saga id again (from the journal only).
    again = build().orchestrator_execute()
    _assert_typed(again[0])
    assert _calls == Counter(echo=1)
    # The arguments rebuilt from the plan (as recovery does) are the ones we passed.
    with store.engine.connect() as conn:
        text = conn.execute(sa.select(sagas.c.plan).where(sagas.c.id == "typed-1")).scalar_one()
    call = decode_plan(text, store.registry, store.serializer).steps[0].action
    assert call.func is echo
    assert call.args == (AMOUNT, WHEN, DAY, TOKEN)
    assert call.kwargs == {"nested": NESTED}
    assert [type(a) for a in call.args] == [Decimal, datetime, date, uuid.UUID]
    # The plan is plain, readable JSON.
    assert json.loads(text)["steps"][0]["action"]["args"][0] == {
        "__saga__": "decimal",
        "v": "9.990",
    }


def test_a_result_that_cannot_be_stored_fails_its_attempt_and_the_saga_compensates(
    store: SagaStore,
) -> None:
    saga = store.saga("unstorable", retry_attempts=3, saga_id="unstorable-1")
    saga.operation(Operation(debit, "acc-1", Decimal("5")).add_compensation(credit, "acc-1", 5))
    saga.operation(Operation(unstorable_result, "acc-1").add_compensation(credit, "acc-1", 6))

    with pytest.raises(SagaException) as caught:
        saga.orchestrator_execute()

    error = caught.value.operation_error
    assert isinstance(error, ResultNotStored)
    assert isinstance(error, SagaDefinitionError)
    assert "step 1 (action)" in str(error)
    assert "cannot store a object" in str(error)
    assert caught.value.operation_name == "unstorable_result"
    # The action did run, so it is not run again, and it is compensated with the others.
    assert sorted(caught.value.compensation_success_result or []) == [
        "credited 5 to acc-1",
        "credited 6 to acc-1",
    ]
    assert _calls == Counter(debit=1, unstorable_result=1, credit=2)
    record = store.get("unstorable-1")
    assert record.status == "compensated"
    assert record.error_type == "micro_saga.errors.ResultNotStored"
    rows = {(a.kind, a.step, a.attempt): a for a in record.attempts}
    assert set(rows) == {
        ("action", 0, 1),
        ("action", 1, 1),
        ("compensation", 1, 1),
        ("compensation", 0, 1),
    }
    # What was journaled before the refusal is all there.
    assert rows["action", 0, 1].status == "succeeded"
    assert rows["action", 0, 1].result == "debited 5 from acc-1"
    failed = rows["action", 1, 1]
    assert failed.status == "failed"
    assert failed.result is None
    assert failed.error_type == "micro_saga.errors.ResultNotStored"
    assert failed.error_message is not None
    assert "cannot store a object" in failed.error_message
    assert failed.finished_at is not None
    assert rows["compensation", 1, 1].result == "credited 6 to acc-1"
    assert rows["compensation", 0, 1].result == "credited 5 to acc-1"


# -- names: stable across renames; the database never chooses code ---------------------------


def test_an_explicit_name_survives_a_rename(store: SagaStore, db_url: str) -> None:
    # Before the deploy: the function is registered under an explicit name...
    before = Registry()
    before.register(name="payments.capture")(capture_before_rename)
    with SagaStore(db_url, worker_id="old-release", registry=before, heartbeat=False) as old:
        saga = old.saga("capture", saga_id="rename-1")
        saga.operation(Operation(capture_before_rename, AMOUNT, TOKEN))
        with pytest.raises(Interrupted):
            saga.orchestrator_execute()
    with store.engine.connect() as conn:
        plan = json.loads(
            conn.execute(sa.select(sagas.c.plan).where(sagas.c.id == "rename-1")).scalar_one()
        )
    assert plan["steps"][0]["action"]["fn"] == "payments.capture"
    assert store.get("rename-1").status == "running"

    # ...after it: a different function object (another qualname) under the same name.
    after = Registry()
    after.register(name="payments.capture")(capture_after_rename)
    with SagaStore(db_url, worker_id="new-release", registry=after, heartbeat=False) as new:
        report = new.recover()

    assert report.succeeded == ["rename-1"]
    assert report.parked == {}
    assert _calls == Counter(capture_before_rename=1, capture_after_rename=1)
    assert _received == [(AMOUNT, TOKEN)]
    assert [type(v) for v in _received[0]] == [Decimal, uuid.UUID]
    record = store.get("rename-1")
    assert record.status == "succeeded"
    assert record.results == ["captured 9.990"]
    assert [(a.attempt, a.status, a.worker) for a in record.attempts] == [
        (1, "interrupted", "old-release"),
        (2, "succeeded", "new-release"),
    ]


def test_one_registry_never_rebinds_a_name_to_another_function() -> None:
    registry = Registry()
    registry.register(name="payments.capture")(capture_before_rename)
    with pytest.raises(UnregisteredFunction, match=r"already registered"):
        registry.register(name="payments.capture")(capture_after_rename)
    assert registry.resolve("payments.capture") is capture_before_rename


def test_a_function_named_by_the_database_alone_is_never_called(
    store: SagaStore, tmp_path: Path
) -> None:
    sentinel = tmp_path / "keep-me"
    sentinel.write_text("precious")
    saga = store.saga("tampered", saga_id="tampered-1").operation(Operation(touch, str(sentinel)))
    with pytest.raises(Interrupted):
        saga.orchestrator_execute()
    # Someone with write access to the database points the step at another function.
    with store.engine.begin() as conn:
        text = conn.execute(sa.select(sagas.c.plan).where(sagas.c.id == "tampered-1")).scalar_one()
        plan = json.loads(text)
        plan["steps"][0]["action"]["fn"] = "os:remove"
        conn.execute(
            sa.update(sagas).where(sagas.c.id == "tampered-1").values(plan=json.dumps(plan))
        )

    report = store.recover()

    assert list(report.parked) == ["tampered-1"]
    assert "'os:remove'" in report.parked["tampered-1"]
    assert sentinel.read_text() == "precious"
    assert _calls == Counter(touch=1)
    record = store.get("tampered-1")
    assert record.parked
    assert record.status == "running"  # kept, listed, never deleted


# -- no pickle -------------------------------------------------------------------------------

_PICKLE_IMPORT = re.compile(
    r"^\s*(?:import|from)\s+(?:c?pickle|_pickle|dill|cloudpickle|shelve|marshal)\b"
    r"|import_module\(\s*['\"](?:c?pickle|dill|cloudpickle|shelve|marshal)['\"]",
    re.MULTILINE,
)


def test_pickle_is_not_used_anywhere_by_default(tmp_path: Path) -> None:
    store = SagaStore(f"sqlite:///{tmp_path / 'unused.db'}", heartbeat=False)  # never connects
    sources = [
        *Path(saga_store.__file__).parent.rglob("*.py"),
        *Path(micro_saga.__file__).parent.rglob("*.py"),
        *Path(saga_store.__file__).parent.parent.joinpath("migrations").rglob("*.py"),
    ]
    assert len(sources) > 10
    offenders = [str(p) for p in sources if _PICKLE_IMPORT.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
    assert type(store.serializer) is JsonSerializer
    assert store.journal.serializer is store.serializer

"""A step's journal write extends its saga's lease only once a tenth of the lease has passed.

The store here has no heartbeat and a 30 s lease, and the clock is frozen: each step moves it
by as long as the step "takes", and notes the saga's row (as the write before it left it) when
it starts, and whether another worker could recover the saga when it ends (just before the
write after it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import pytest
from freezegun.api import FrozenDateTimeFactory

from micro_saga import Operation, SagaAssembler, clock
from saga_store import SagaStore, default_registry
from tests.integration.recovery_support import LEASE, at, frozen_at_start, saga_row

TENTH = LEASE / 10


@dataclass(frozen=True, slots=True)
class Seen:
    """The saga's row at a moment of a step."""

    label: str
    moment: Literal["start", "end"]
    at: datetime
    version: int
    lease_expires_at: datetime | None
    #: what a recovery pass by another worker did at that moment ("end" only)
    rival: str | None = None


class Probe:
    """The clock the steps move, the store they run in, and what they saw."""

    def __init__(self, store: SagaStore, rival: SagaStore, frozen: FrozenDateTimeFactory) -> None:
        self.store = store
        self.rival = rival
        self.frozen = frozen
        self.seen: list[Seen] = []

    def note(self, saga_id: str, label: str, moment: Literal["start", "end"]) -> None:
        rival = self.rival.recover().summary() if moment == "end" else None
        row = saga_row(self.store.engine, saga_id)
        self.seen.append(
            Seen(label, moment, clock.utcnow(), row.version, row.lease_expires_at, rival)
        )

    def at_start(self) -> list[tuple[str, datetime, datetime | None]]:
        """(label, time, lease) as each step started."""
        return [(s.label, s.at, s.lease_expires_at) for s in self.seen if s.moment == "start"]


PROBES: list[Probe] = []


@default_registry.register(name="lease-renewal-tests:work")
def work(saga_id: str, label: str, seconds: float, renew: bool = False) -> str:
    """A step that takes ``seconds`` (and then, if ``renew``, lets the heartbeat beat once)."""
    probe = PROBES[-1]
    probe.note(saga_id, label, "start")
    probe.frozen.tick(seconds)
    if renew:
        assert probe.store.journal.renew_leases() == []
    probe.note(saga_id, label, "end")
    return label


@pytest.fixture
def probe(store: SagaStore, db_url: str) -> Iterator[Probe]:
    with (
        SagaStore(db_url, worker_id="rival", heartbeat=False) as rival,
        frozen_at_start() as frozen,
    ):
        PROBES.append(Probe(store, rival, frozen))
        try:
            yield PROBES[-1]
        finally:
            PROBES.clear()


def saga(store: SagaStore, saga_id: str, *steps: tuple[str, float]) -> SagaAssembler:
    """An orchestrated saga of ``work`` steps: (label, seconds) each."""
    assembled = store.saga("lease-renewal", saga_id=saga_id)
    for label, seconds in steps:
        assembled.operation(Operation(work, saga_id, label, seconds).named(label))
    return assembled


def test_the_store_under_test_has_no_heartbeat(store: SagaStore) -> None:
    assert store.journal.heartbeat is None
    assert store.journal.lease.total_seconds() == LEASE


def test_writes_within_the_first_tenth_leave_the_lease_alone(
    store: SagaStore, probe: Probe
) -> None:
    assert saga(store, "quick", ("a", 1), ("b", 1), ("c", 0)).orchestrator_execute() == [
        "a",
        "b",
        "c",
    ]
    # the row was written before b and before c (its version moved), its lease not
    assert probe.at_start() == [
        ("a", at(0), at(LEASE)),
        ("b", at(1), at(LEASE)),
        ("c", at(2), at(LEASE)),
    ]
    assert [s.version for s in probe.seen if s.moment == "start"] == [1, 2, 3]


@pytest.mark.parametrize(
    ("took", "renewed"),
    [(TENTH - 0.000001, False), (TENTH, True), (TENTH + 0.000001, True), (LEASE / 2, True)],
    ids=["just-under-a-tenth", "a-tenth", "just-over-a-tenth", "half-a-lease"],
)
def test_a_write_after_a_tenth_extends_the_lease_to_now_plus_a_lease(
    store: SagaStore, probe: Probe, took: float, renewed: bool
) -> None:
    assert saga(store, "slow", ("a", took), ("b", 0)).orchestrator_execute() == ["a", "b"]
    expected = at(took + LEASE) if renewed else at(LEASE)
    assert probe.at_start() == [("a", at(0), at(LEASE)), ("b", at(took), expected)]
    row = saga_row(store.engine, "slow")
    assert (row.status, row.owner, row.lease_expires_at) == ("succeeded", None, None)


def test_the_tenth_is_counted_from_the_last_extension_not_the_last_write(
    store: SagaStore, probe: Probe
) -> None:
    steps = [(label, 2.0) for label in "abcde"]
    assert saga(store, "steady", *steps).orchestrator_execute() == list("abcde")
    assert probe.at_start() == [
        ("a", at(0), at(LEASE)),
        ("b", at(2), at(LEASE)),  # 2 s after the extension: alone
        ("c", at(4), at(4 + LEASE)),  # 4 s: extended
        ("d", at(6), at(4 + LEASE)),
        ("e", at(8), at(8 + LEASE)),
    ]


def test_a_heartbeat_always_extends_and_the_next_tenth_counts_from_it(
    store: SagaStore, probe: Probe
) -> None:
    beating = store.saga("lease-renewal", saga_id="beat")
    beating.operation(Operation(work, "beat", "a", 1, renew=True).named("a"))
    beating.operation(Operation(work, "beat", "b", 2).named("b"))
    beating.operation(Operation(work, "beat", "c", 0).named("c"))
    assert beating.orchestrator_execute() == ["a", "b", "c"]
    a_end = next(s for s in probe.seen if (s.label, s.moment) == ("a", "end"))
    assert a_end.lease_expires_at == at(1 + LEASE)  # the heartbeat, 1 s in: extended
    assert probe.at_start() == [
        ("a", at(0), at(LEASE)),
        ("b", at(1), at(1 + LEASE)),  # the write right after the heartbeat: alone
        ("c", at(3), at(1 + LEASE)),  # 2 s after the heartbeat: still alone
    ]


def test_steps_of_eight_tenths_of_a_lease_never_let_the_lease_run_out(
    store: SagaStore, probe: Probe
) -> None:
    labels = ["a", "b", "c", "d", "e"]
    took = 0.8 * LEASE
    results = saga(store, "long", *((label, took) for label in labels)).orchestrator_execute()
    assert results == labels  # four leases long, without a heartbeat

    assert probe.at_start() == [
        (label, at(i * took), at(i * took + LEASE)) for i, label in enumerate(labels)
    ]
    ends = [s for s in probe.seen if s.moment == "end"]
    assert [s.label for s in ends] == labels
    for end in ends:
        assert end.lease_expires_at is not None
        assert end.lease_expires_at > end.at, end  # held up to each write
        assert end.rival == "nothing to recover", end
    record = store.get("long")
    assert record.status == "succeeded"
    assert [(a.step, a.attempt, a.status, a.worker) for a in record.attempts] == [
        (step, 1, "succeeded", "test-worker") for step in range(len(labels))
    ]

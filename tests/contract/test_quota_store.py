"""The QuotaStore contract, on SQLite, PostgreSQL and memory: a conditional count per (caller,
purpose, window), all or nothing, never past the limit however many threads race for it (and,
for the SQL adapters, however many connections: each thread takes its own from the pool, as
replicas do). Bounded loops and counts, no clock."""

from __future__ import annotations

import threading

import pytest

from tests.contract.conftest import Harness
from vault.domain.stores import Stores
from vault.domain.types import CallerName, Purpose

PAYMENT = CallerName("payment")
PAY = Purpose("payment")
W = 1_796_000_400  # a window's first second


def test_items_are_counted_within_the_limit(stores: Stores) -> None:
    q = stores.quotas
    assert q.used_items(PAYMENT, PAY, W) == 0
    assert q.take_items(PAYMENT, PAY, W, 3, 10) == 3
    assert q.take_items(PAYMENT, PAY, W, 7, 10) == 10  # exactly the limit fits
    assert q.used_items(PAYMENT, PAY, W) == 10


def test_a_take_past_the_limit_counts_nothing(stores: Stores) -> None:
    q = stores.quotas
    assert q.take_items(PAYMENT, PAY, W, 8, 10) == 8
    assert q.take_items(PAYMENT, PAY, W, 3, 10) is None
    assert q.used_items(PAYMENT, PAY, W) == 8
    assert q.take_items(PAYMENT, PAY, W, 2, 10) == 10
    assert q.take_items(PAYMENT, PAY, W, 1, 10) is None
    # A first take larger than the limit never counts either.
    assert q.take_items(PAYMENT, PAY, W + 3600, 11, 10) is None
    assert q.used_items(PAYMENT, PAY, W + 3600) == 0


def test_windows_callers_and_purposes_count_apart(stores: Stores) -> None:
    q = stores.quotas
    assert q.take_items(PAYMENT, PAY, W, 5, 5) == 5
    assert q.take_items(PAYMENT, PAY, W + 3600, 5, 5) == 5
    assert q.take_items(PAYMENT, Purpose("fraud_prevention"), W, 5, 5) == 5
    assert q.take_items(CallerName("shipping"), PAY, W, 5, 5) == 5
    assert q.take_items(PAYMENT, PAY, W, 1, 5) is None


def test_old_windows_are_purged(stores: Stores) -> None:
    q = stores.quotas
    q.take_items(PAYMENT, PAY, W, 1, 5)
    q.take_items(PAYMENT, PAY, W + 60, 1, 5)
    assert q.purge_quotas(W + 60) == 1
    assert q.used_items(PAYMENT, PAY, W) == 0
    assert q.used_items(PAYMENT, PAY, W + 60) == 1


def test_concurrent_takes_never_pass_the_limit(stores: Stores) -> None:
    """8 threads x 15 takes of 2 items against a limit of 51: exactly 25 takes pass (50
    items; 51 cannot be reached in steps of 2), and the count says so."""
    q = stores.quotas
    passed: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(15):
            used = q.take_items(PAYMENT, PAY, W, 2, 51)
            with lock:
                (refused if used is None else passed).append(used or 0)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(passed) == 25
    assert len(refused) == 8 * 15 - 25
    assert sorted(passed) == list(range(2, 51, 2))  # every count seen once: no lost update
    assert q.used_items(PAYMENT, PAY, W) == 50


def test_sqlite_connections_are_full_sync_again_after_a_take(harness: Harness) -> None:
    """The count commits at synchronous=NORMAL (made durable by the audit commit that follows);
    the pool's connections go back to FULL for everything else."""
    if harness.kind != "sqlite" or harness.database is None:
        pytest.skip("SQLite's per-connection sync level")
    harness.stores.quotas.take_items(PAYMENT, PAY, W, 1, 5)
    with harness.database.read() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL

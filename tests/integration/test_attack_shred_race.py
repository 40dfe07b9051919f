"""Issue #8, items 1 and 6: a shred stays shredded while tokenize and detokenize calls for the
same subject are in flight, on SQLite and PostgreSQL (one process; two replicas in
test_attack_replicas.py). Bounded loops, outcomes counted, no clock; on PostgreSQL one test
also holds a tokenize at the point where the race happens, so that it happens every time."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from pdvault_client import (
    Client,
    Field,
    NotFoundError,
    PdvaultError,
)
from tests.conftest import RunningServer
from tests.integration.attack_support import (
    TOKENIZERS,
    audit_rows_naming,
    backup_subject,
    race_round,
    restore_subject,
    rows_of_subject,
    run_threads,
    same_receipt,
    shred_held,
)

PAN = "4111111111111111"
# SQLite resurrected the subject in up to 10 of 15 rounds. On PostgreSQL the free race rarely
# resurrects (its window is narrow: see the held test at the end) and today deadlocks the shred
# in about half the rounds, which makes them slow: fewer there.
ROUNDS = {"sqlite": 10, "postgresql": 6}


def test_a_shred_under_concurrent_tokenize_stays_shredded(server: RunningServer) -> None:
    """issue #8 item 1: eight threads tokenize for a new subject while it is shredded; after
    the receipt nothing of it is left, its id is refused, every token that a successful
    tokenize returned is a tombstone, and a second shred returns the same receipt."""
    kyc = [server.client("kyc") for _ in range(TOKENIZERS)]
    problems: list[str] = []
    unexpected: list[str] = []
    rounds = ROUNDS[server.app.engine.dialect.name]
    try:
        with server.client("ops") as ops:
            for _ in range(rounds):
                subject = f"race-{uuid.uuid4().hex[:12]}"
                tally = race_round(kyc, ops, subject)
                unexpected += tally.get("unexpected")
                problems += shred_held(server.app.engine, server.client, subject, tally)
    finally:
        for c in kyc:
            c.close()
    bad = {p.split(":")[0] for p in problems}
    assert problems == [], f"the shred did not hold in {len(bad)} of {rounds} rounds: {problems}"
    assert unexpected == []


def test_a_shred_finding_live_data_again_gives_a_new_receipt_naming_the_first(
    server: RunningServer,
) -> None:
    """issue #8 item 1: live data under a subject that already has a receipt (here: its rows
    put back from a backup while the server runs) is shredded again, with a new receipt that
    names the first; a repeat that finds nothing returns a receipt unchanged."""
    subject = "restored-7"
    with server.client("kyc") as kyc:
        tokens = [
            t.token
            for t in kyc.tokenize(
                subject,
                [
                    Field("name", "Ann Lee"),
                    Field("email", "ann@example.com"),
                    Field("card_number", PAN),
                ],
            )
        ]
    backup = backup_subject(server.app.engine, subject)
    with server.client("ops") as ops:
        first: dict[str, Any] = ops.subjects().shred(subject)["receipt"]
        restore_subject(server.app.engine, subject, backup)
        assert rows_of_subject(server.app.engine, subject)["token_values"] == 3

        second: dict[str, Any] = ops.subjects().shred(subject)["receipt"]
        assert second["receiptId"] != first["receiptId"], "the first receipt, and the data left"
        assert first["receiptId"] in json.dumps(second), "the new receipt must name the first"
        assert second["valuesDestroyed"] == 3
        assert rows_of_subject(server.app.engine, subject) == dict.fromkeys(
            ("subjects", "data_keys", "token_values"), 0
        )
        third: dict[str, Any] = ops.subjects().shred(subject)["receipt"]
        assert same_receipt(third) in (same_receipt(second), same_receipt(first))
    with server.client("shipping") as shipping:
        results = shipping.detokenize(tokens[:1], "product_shipping")
    assert isinstance(results[0].error, NotFoundError)
    assert results[0].error.reason == "SUBJECT_DELETED"


READERS = 6
AUDIT_ROUNDS = 4
READS = 60  # detokenize calls per reader and round, at most


def read_while_shredding(
    readers: list[Client], ops: Client, subject: str, tokens: list[str]
) -> None:
    """Every reader detokenizes the subject's tokens in a loop; once all are under way, `ops`
    shreds the subject; a reader stops when it sees the shred."""
    under_way = threading.Barrier(len(readers) + 1, timeout=30)

    def reader(client: Client) -> None:
        for i in range(READS):
            if i == 1:
                under_way.wait()
            got = client.detokenize(tokens, "payment")
            if any(isinstance(g.error, NotFoundError) for g in got):
                return

    def shredder() -> None:
        under_way.wait()
        ops.subjects().shred(subject)

    run_threads([*(lambda c=c: reader(c) for c in readers), shredder])


def test_no_audit_row_names_a_subject_after_its_shred(server: RunningServer) -> None:
    """issue #8 item 6: detokenize calls in flight during the shred must not leave audit rows
    naming the subject (today they commit after the shred's anonymizing update)."""
    readers = [server.client("payment") for _ in range(READERS)]
    named: dict[str, int] = {}
    try:
        with server.client("kyc") as kyc, server.client("ops") as ops:
            for r in range(AUDIT_ROUNDS):
                subject = f"audited-{r}"
                names = [Field("name", f"Ann {c}") for c in "ABCDEFGHIJ"]
                tokens = [t.token for t in kyc.tokenize(subject, names)]
                read_while_shredding(readers, ops, subject, tokens)
                named[subject] = audit_rows_naming(server.app.engine, subject)
    finally:
        for c in readers:
            c.close()
    assert named == dict.fromkeys(named, 0), "audit rows naming the subject after its shred"


BLOCK_POLLS = 100  # 0.1 s apart: until the held tokenize waits on the blocker's row


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_a_tokenize_held_between_its_check_and_its_write_is_refused_after_the_shred(
    server: RunningServer,
) -> None:
    """issue #8 item 1, made deterministic on PostgreSQL (where the free-running race above
    rarely resurrects: its window is narrow). An uncommitted row with the same (caller, request
    id) holds a tokenize for a new subject inside its write, after it looked for a data key and a
    receipt and found neither; meanwhile another tokenize creates the subject and it is shredded;
    then the held tokenize goes on. It must be refused (SUBJECT_DELETED), or its tokens must be
    tombstones: nothing of the subject may be left. (The blocker only delays the held call; if a
    fix writes differently and nothing waits on it, the outcome is asserted all the same.)"""
    subject, request_id = f"held-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    held: list[object] = []

    def tokenize_held() -> None:
        with server.client("kyc", timeout=60) as kyc:
            try:
                held.append(
                    kyc.tokenize(subject, [Field("name", "Ann Lee")], request_id=request_id)
                )
            except PdvaultError as exc:
                held.append(exc)

    url = make_url(server.app.settings.database_url)
    conninfo = f"host={url.host} port={url.port or 5432} dbname={url.database} user={url.username}"
    with psycopg.connect(conninfo) as blocker:
        blocker.execute(
            "INSERT INTO idempotency_keys (caller, request_id, subject_id, fingerprint, response,"
            " created_at) VALUES ('kyc', %s, 'blocker', %s, '[]', now())",
            (request_id, b"\0"),
        )
        thread = threading.Thread(target=tokenize_held, daemon=True)
        thread.start()
        with psycopg.connect(conninfo, autocommit=True) as watch:
            for _ in range(BLOCK_POLLS):
                waiting = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                    (blocker.info.backend_pid,),
                ).fetchone()
                if (waiting and waiting[0]) or not thread.is_alive():
                    break
                time.sleep(0.1)
        with server.client("kyc") as kyc, server.client("ops") as ops:
            kyc.tokenize(subject, [Field("name", "Bob Roe")])
            ops.subjects().shred(subject)
        blocker.rollback()
    thread.join(60)
    assert not thread.is_alive()
    [outcome] = held
    left = {t: n for t, n in rows_of_subject(server.app.engine, subject).items() if n}
    assert left == {}, f"rows left after the shred: {left}; the held tokenize: {outcome!r}"
    if isinstance(outcome, PdvaultError):
        assert outcome.reason == "SUBJECT_DELETED", outcome
    else:
        assert isinstance(outcome, list)
        with server.client("shipping") as shipping:
            got = shipping.detokenize([t.token for t in outcome], "product_shipping")
        assert all(isinstance(g.error, NotFoundError) for g in got)

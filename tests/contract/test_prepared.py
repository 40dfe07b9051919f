"""The hot path's statements on the driver's cursor (vault.storage.sql.prepared) read and write
exactly what SQLAlchemy's own execution of the same statements does, and fail the same way."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, select
from sqlalchemy import exc as sa_exc

from tests.contract.conftest import NOW, Harness, S, event, sql_harness, value
from vault.domain.types import CallerName, Category, IdempotencyRecord, SubjectId, Token
from vault.storage.sql import Database, rows
from vault.storage.sql.prepared import Prepared, PreparedIn, prepared
from vault.storage.tables import audit_events, audit_head, idempotency_keys, token_values


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def sql(request: pytest.FixtureRequest) -> Iterator[Harness]:
    """The SQL adapters only (the memory adapter runs no statement)."""
    yield from sql_harness(request, request.param)


def _db(h: Harness) -> Database:
    assert h.database is not None
    return h.database


def _fill(h: Harness) -> list[str]:
    """Live tokens of two subjects (one with a consent), and one shredded subject's token."""
    from tests.contract.test_value_store import save, shred

    assert save(h.stores, "t-1", "t-2").name == "DONE"
    other = SubjectId("user-2")
    assert save(h.stores, "t-3", subject=other).name == "DONE"
    gone = SubjectId("user-3")
    assert save(h.stores, "t-4", subject=gone).name == "DONE"
    shred(h.stores, gone)
    return ["t-1", "t-2", "t-3", "t-4", "never-issued"]


@pytest.mark.parametrize("n", [1, 2, 5])
def test_lookup_reads_what_sqlalchemy_reads(sql: Harness, n: int) -> None:
    db = _db(sql)
    tokens = _fill(sql)[:n]
    params = {"tokens": tokens, "purpose": "payment"}
    ours = Prepared(rows.LOOKUP, db.engine.dialect, expanded={"tokens": n})
    with db.read() as conn:
        theirs = sorted(tuple(r) for r in conn.execute(rows.LOOKUP, params).all())
        mine = sorted(tuple(r) for r in ours.all(conn, params))
        fields = {r._fields for r in ours.all(conn, params)}
    assert mine == theirs
    assert fields <= {tuple(rows.LOOKUP.selected_columns.keys())}


def test_the_store_answers_alike_through_both_paths(sql: Harness) -> None:
    """The store's lookup prepares the first few lengths only; any other goes through
    SQLAlchemy: the answers are the same either way."""
    tokens = [Token(t) for t in _fill(sql)]
    store = sql.stores.values
    prepared_answer = store.lookup(tokens, None)
    store._lookup._lengths = 0  # type: ignore[attr-defined]
    store._lookup._by_length.clear()  # type: ignore[attr-defined]
    plain_answer = store.lookup(tokens, None)
    assert prepared_answer == plain_answer
    assert set(prepared_answer.values) == {"t-1", "t-2", "t-3"}
    assert set(prepared_answer.shredded) == {"t-4"}


def test_prepared_in_keeps_a_bounded_number_of_lengths(sql: Harness) -> None:
    lengths = PreparedIn(rows.LOOKUP, _db(sql).engine.dialect, "tokens", 2)
    assert lengths.get(1) is lengths.get(1)
    assert lengths.get(3) is not None
    assert lengths.get(4) is None  # a third length: SQLAlchemy's turn
    assert lengths.get(0) is None
    with pytest.raises(ValueError, match="2 items for a statement of 1"):
        lengths.get(1)._args({"tokens": ["a", "b"], "purpose": ""})  # type: ignore[union-attr]


def test_audit_rows_written_on_the_cursor_read_back_as_written(sql: Harness) -> None:
    db = _db(sql)
    events = [event("t-9", S), event("t-10", S)]
    db.write(lambda conn: rows.insert_audit(conn, events))
    with db.read() as conn:
        back = [rows.audit_event(r) for r in conn.execute(select(audit_events)).all()]
        head = conn.execute(select(audit_head)).one()
    assert [(e.token, e.occurred_at, e.action, e.seq) for e in back] == [
        ("t-9", NOW, events[0].action, 0),
        ("t-10", NOW, events[1].action, 1),
    ]
    assert head.size == 2
    assert back[0].occurred_at.tzinfo is not None  # UtcDateTime's processing was applied


def test_a_failed_append_leaves_nothing(sql: Harness) -> None:
    db = _db(sql)

    def half(conn: Connection) -> None:
        rows.insert_audit(conn, [event("t-1", S)])
        raise RuntimeError("the transaction's body fails after the append")

    with pytest.raises(RuntimeError):
        db.write(half)
    with db.read() as conn:
        assert conn.execute(select(audit_events)).all() == []
        assert conn.execute(select(audit_head.c.size)).scalar_one() == 0


def test_driver_errors_are_sqlalchemys_with_parameters_hidden(sql: Harness) -> None:
    db = _db(sql)
    row = {
        "token": "t-1",
        "subject_id": "no-such-subject",
        "category": "card_number",
        "token_format": "opaque",
        "ciphertext": b"secret-ciphertext",
        "created_at": NOW,
    }
    insert_values = prepared(db.engine.dialect, rows.INSERT_VALUES, tuple(row))
    with pytest.raises(sa_exc.IntegrityError) as raised:
        db.write(lambda conn: insert_values.run_many(conn, [row]))
    # Hidden as SQLAlchemy hides them (PostgreSQL's own DETAIL may still name a key, as it does
    # through SQLAlchemy: such an error is turned into an outcome and never shown or logged).
    assert raised.value.hide_parameters
    assert "secret-ciphertext" not in str(raised.value)
    with db.read() as conn:
        assert conn.execute(select(token_values)).all() == []


def test_a_repeated_request_id_is_recognised(sql: Harness) -> None:
    from tests.contract.test_value_store import save

    assert save(sql.stores, "t-1").name == "DONE"
    record = IdempotencyRecord(
        CallerName("shop"), "req-1", S, b"fp", ((Token("t-2"), Category("name")),), NOW
    )
    first = sql.stores.values.save_tokenized(
        subject=S,
        new_key=None,
        encryption_limit=2**32,
        values=[value("t-2", S)],
        audit=[event("t-2", S)],
        idempotency=record,
        now=NOW,
    )
    again = sql.stores.values.save_tokenized(
        subject=S,
        new_key=None,
        encryption_limit=2**32,
        values=[value("t-3", S)],
        audit=[event("t-3", S)],
        idempotency=record,
        now=NOW,
    )
    assert (first.name, again.name) == ("DONE", "DUPLICATE_REQUEST")
    with _db(sql).read() as conn:
        assert len(conn.execute(select(idempotency_keys)).all()) == 1


def test_a_long_append_is_written_whole_in_order(sql: Harness) -> None:
    """1,201 entries in one append: every one is there, in its place, with its own values."""
    db = _db(sql)
    events = [event(f"t-{i}", S) for i in range(1201)]
    db.write(lambda conn: rows.insert_audit(conn, events))
    with db.read() as conn:
        back = conn.execute(
            select(audit_events.c.seq, audit_events.c.token).order_by(audit_events.c.seq)
        ).all()
    assert [(r.seq, r.token) for r in back] == [(i, f"t-{i}") for i in range(1201)]
    assert sql.stores.audit.head().size == 1201

"""The group commit of writes (issue 14): jobs of many requests in one transaction, each job's
writes in a savepoint, every job's audit events appended last, one commit. A job that fails
is rolled back alone, on SQLite and on PostgreSQL (where an error aborts the transaction unless
it is rolled back to the savepoint); an error of the database fails the batch whole."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy import exc as sa_exc

from tests.contract.conftest import event
from vault.errors import StorageUnavailable
from vault.storage.group_commit import Job
from vault.storage.sql import Database, SqlAuditLog
from vault.storage.tables import audit_events, idempotency_keys, notices

NOW = datetime(2026, 11, 29, tzinfo=UTC)


@pytest.fixture
def db(engine: Engine) -> Database:
    found = Database(engine)
    found.use_group_commit()
    return found


def note(key: str, then: Callable[[], object] = lambda: None) -> Callable[[Connection], object]:
    """A job's write: one notice row, then `then` (which may raise)."""

    def write(conn: Connection) -> object:
        conn.execute(insert(notices).values(kind="test", key=key, created_at=NOW))
        return then()

    return write


def remember(request_id: str) -> Callable[[Connection], object]:
    """A job's write that a primary key may refuse (an IntegrityError: on PostgreSQL it aborts
    the whole transaction unless rolled back to the job's savepoint)."""

    def write(conn: Connection) -> object:
        conn.execute(
            insert(idempotency_keys).values(
                caller="kyc",
                request_id=request_id,
                subject_id="s",
                fingerprint=b"f",
                response="[]",
                created_at=NOW,
            )
        )
        return request_id

    return write


def keys(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(notices.c.key).where(notices.c.kind == "test")).scalars())


def audited(engine: Engine) -> set[str | None]:
    with engine.connect() as conn:
        return set(conn.execute(select(audit_events.c.token)).scalars())


def refuse() -> object:
    raise LookupError("this request's own failure")


def test_a_failing_job_is_rolled_back_alone_and_the_rest_commit_once(
    engine: Engine, db: Database
) -> None:
    jobs = [
        Job([event("tok_a")], note("a", lambda: "A"), "s1"),
        Job([event("tok_b")], note("b", refuse), "s2"),
        Job([event("tok_c")], note("c", lambda: "C"), "s3"),
        Job([event("tok_d")]),  # a detokenize's audit alone
    ]
    db.commit_jobs(jobs)
    assert [j.result for j in jobs] == ["A", None, "C", None]
    assert isinstance(jobs[1].error, LookupError)
    assert [j.error for j in (jobs[0], jobs[2], jobs[3])] == [None, None, None]
    assert keys(engine) == {"a", "c"}  # b's row went with its savepoint
    assert audited(engine) == {"tok_a", "tok_c", "tok_d"}  # and so did its events
    assert SqlAuditLog(db).head().size == 3  # no gap in the Merkle log


def test_a_refused_row_in_one_job_leaves_the_transaction_usable(
    engine: Engine, db: Database
) -> None:
    """On PostgreSQL a unique violation aborts the transaction: the savepoint brings it back."""
    db.commit_jobs([Job((), remember("r1"), "s0")])
    jobs = [
        Job([event("tok_1")], remember("r1"), "s1"),  # already there
        Job([event("tok_2")], remember("r2"), "s2"),
    ]
    db.commit_jobs(jobs)
    assert isinstance(jobs[0].error, sa_exc.IntegrityError)
    assert jobs[1].error is None
    assert jobs[1].result == "r2"
    assert audited(engine) == {"tok_2"}


def test_the_jobs_run_in_their_order_whatever_order_they_came_in(db: Database) -> None:
    ran: list[str] = []

    def running(name: str) -> Callable[[Connection], object]:
        return lambda _conn: ran.append(name)

    jobs = [Job((), running(s), s) for s in ("s3", "s1", "", "s2")]
    db.commit_jobs(jobs)
    assert ran == ["", "s1", "s2", "s3"]


def test_an_error_of_the_database_fails_the_whole_batch(engine: Engine, db: Database) -> None:
    def lost(_conn: Connection) -> object:
        raise sa_exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    jobs = [Job([event("tok_a")], note("a"), "s1"), Job((), lost, "s2")]
    with pytest.raises(StorageUnavailable):
        db.commit_jobs(jobs)
    assert keys(engine) == set()
    assert audited(engine) == set()


def test_concurrent_writers_share_commits_and_each_gets_its_own_answer(
    engine: Engine, db: Database
) -> None:
    """Through `Database.write`, as the stores call it: a failing request fails alone, every
    other request's rows and events land, and the Merkle log has no gap."""
    answers: dict[int, object] = {}
    lock = threading.Lock()

    def request(n: int) -> None:
        then: Callable[[], object] = refuse if n % 5 == 0 else (lambda: n)
        try:
            got: object = db.write(note(f"k{n}", then), events=[event(f"tok_{n}")], order=f"s{n}")
        except LookupError as exc:
            got = exc
        with lock:
            answers[n] = got

    threads = [threading.Thread(target=request, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(answers) == 40
    good = {n for n in range(40) if n % 5}
    assert {n for n, got in answers.items() if got == n} == good
    assert keys(engine) == {f"k{n}" for n in good}
    assert audited(engine) == {f"tok_{n}" for n in good}
    assert SqlAuditLog(db).head().size == len(good)


def test_without_a_group_the_write_appends_its_events_in_its_own_transaction(
    engine: Engine,
) -> None:
    alone = Database(engine)
    assert alone.write(note("x", lambda: 5), events=[event("tok_x")], order="s1") == 5
    assert keys(engine) == {"x"}
    assert audited(engine) == {"tok_x"}


def test_a_job_held_by_a_lock_outside_the_batch_does_not_hold_up_the_others(
    engine: Engine, db: Database
) -> None:
    """PostgreSQL: a job whose row is locked by another transaction (a twin request elsewhere,
    a shred) waits 50 ms inside the batch at most, then is set aside and committed alone by its
    own request: the next requests' writes commit meanwhile. (SQLite has no row locks: a
    batch waits for the database's write lock as a whole.)"""
    if db.dialect != "postgresql":
        return
    import psycopg

    url = engine.url
    conninfo = f"host={url.host} port={url.port or 5432} dbname={url.database} user={url.username}"
    outcome: list[object] = []
    with psycopg.connect(conninfo) as blocker:
        blocker.execute(
            "INSERT INTO idempotency_keys (caller, request_id, subject_id, fingerprint, response,"
            " created_at) VALUES ('kyc', 'r-held', 'blocker', %s, '[]', now())",
            (b"\0",),
        )

        def held() -> None:
            try:
                outcome.append(db.write(remember("r-held"), events=[event("tok_h")], order="s1"))
            except Exception as exc:  # asserted below
                outcome.append(exc)

        thread = threading.Thread(target=held, daemon=True)
        thread.start()
        with psycopg.connect(conninfo, autocommit=True) as watch:
            for _ in range(200):
                row = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                    (blocker.info.backend_pid,),
                ).fetchone()
                if row and row[0]:
                    break
                threading.Event().wait(0.05)
        # While the held job waits for the blocker, others commit.
        assert db.write(note("after"), events=[event("tok_after")], order="s2") is None
        assert keys(engine) == {"after"}
        assert thread.is_alive()
        blocker.rollback()
    thread.join(30)
    assert outcome == ["r-held"]
    assert audited(engine) == {"tok_after", "tok_h"}

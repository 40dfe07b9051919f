"""What only the SQL adapters have: migrations, an unreachable database, the group commit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select

from tests.contract.conftest import event
from vault.errors import StorageUnavailable
from vault.storage import migrate
from vault.storage.sql import Database, SqlAuditLog, make_engine, sql_stores
from vault.storage.tables import audit_events, metadata


@pytest.fixture
def audit(engine: Engine) -> Iterator[SqlAuditLog]:
    db = Database(engine)
    db.use_group_commit()
    log = SqlAuditLog(db)
    yield log
    log.close()


def test_migrations_match_the_table_definitions(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    assert migrate.current_revision(engine) == migrate.head_revision()


def test_migrations_downgrade_and_upgrade_again(engine: Engine) -> None:
    with engine.begin() as conn:
        from alembic import command

        cfg = migrate._config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate.upgrade(engine)
    assert "token_values" in inspect(engine).get_table_names()


def test_an_unreachable_database_is_storage_unavailable() -> None:
    eng = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    stores = sql_stores(Database(eng), group_commit=False)
    with pytest.raises(StorageUnavailable) as err:
        stores.values.data_keys([])
    assert "127.0.0.1" not in str(err.value)


def test_audit_rows_hold_no_subject_id(engine: Engine, audit: SqlAuditLog) -> None:
    audit.append([event("tok_a")])
    with engine.connect() as conn:
        named = set(conn.execute(select(audit_events.c.subject_id)).scalars())
    assert len(named) == 1
    assert next(iter(named)).startswith("ref:")  # the digest keyed by the subject's data key


def test_a_failed_audit_commit_fails_its_requests(
    audit: SqlAuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(_jobs: object) -> None:
        raise StorageUnavailable("the database is unavailable; retry later")

    assert audit.group is not None
    monkeypatch.setattr(audit.group, "_commit", down)
    with pytest.raises(StorageUnavailable):
        audit.append([event("tok_a")])


def test_a_bad_audit_event_fails_only_its_own_request(
    engine: Engine, audit: SqlAuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #8 item 7: a commit that fails for one request's events is retried request by
    request; the others' events land. The first request leads a commit that is held until two
    more requests (one bad) have queued behind it: they share the next commit, which fails and
    is retried one by one."""
    group = audit.group
    assert group is not None
    real = group._commit
    held = threading.Event()
    seen: list[list[str | None]] = []

    def picky(jobs: object) -> None:
        assert isinstance(jobs, list)
        events = [e for j in jobs for e in j.events]
        seen.append([e.token for e in events])
        if len(seen) == 1:
            held.wait(timeout=10)
        if any(e.token == "tok_bad" for e in events):
            raise ValueError("a column refused a value")
        real(jobs)

    monkeypatch.setattr(group, "_commit", picky)
    outcomes: dict[str, BaseException | None] = {}

    def request(token: str) -> None:
        try:
            audit.append([event(token)])
            outcomes[token] = None
        except BaseException as exc:
            outcomes[token] = exc

    first = threading.Thread(target=request, args=("tok_good",))
    first.start()
    while not seen:  # the first commit is under way, and held
        time.sleep(0.001)
    later = [threading.Thread(target=request, args=(t,)) for t in ("tok_bad", "tok_other")]
    for t in later:
        t.start()
    while len(group._queue) < 2:  # both queued behind the held commit
        time.sleep(0.001)
    held.set()
    for t in (first, *later):
        t.join(timeout=10)
    assert outcomes["tok_good"] is None
    assert outcomes["tok_other"] is None
    assert isinstance(outcomes["tok_bad"], ValueError)
    assert set(seen[1]) == {"tok_bad", "tok_other"}  # they shared one commit first
    with engine.connect() as conn:
        tokens = set(conn.execute(select(audit_events.c.token)).scalars())
    assert tokens == {"tok_good", "tok_other"}


def test_a_lone_request_commits_on_its_own_thread(audit: SqlAuditLog) -> None:
    """No writer thread: a request that finds no commit under way commits its own events."""
    before = threading.active_count()
    audit.append([event("tok_a")])
    assert threading.active_count() == before


def test_many_concurrent_requests_all_land_in_fewer_commits(
    engine: Engine, audit: SqlAuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = audit.group
    assert group is not None
    real = group._commit
    commits: list[int] = []

    def counting(jobs: object) -> None:
        assert isinstance(jobs, list)
        commits.append(sum(len(j.events) for j in jobs))
        real(jobs)

    monkeypatch.setattr(group, "_commit", counting)
    threads = [
        threading.Thread(target=lambda i=i: audit.append([event(f"tok_{i}")])) for i in range(40)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    with engine.connect() as conn:
        tokens = set(conn.execute(select(audit_events.c.token)).scalars())
    assert tokens == {f"tok_{i}" for i in range(40)}
    assert sum(commits) == 40
    assert audit.head().size == 40  # the Merkle log: every entry placed, no gap


def test_after_stop_appends_are_refused(audit: SqlAuditLog) -> None:
    group = audit.group
    assert group is not None
    group.stop()
    with pytest.raises(StorageUnavailable, match="shutting down"):
        audit.append([event("tok_a")])


def test_an_interrupted_commit_fails_its_requests_and_frees_the_next(
    audit: SqlAuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A leader whose commit is cut short by something no handler expects (a BaseException)
    leaves no request waiting for ever: its batch fails as unavailable, and the next request
    commits as usual."""
    group = audit.group
    assert group is not None
    real = group._commit
    calls: list[int] = []

    def cut(jobs: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        real(jobs)  # type: ignore[arg-type]

    monkeypatch.setattr(group, "_commit", cut)
    with pytest.raises(KeyboardInterrupt):
        audit.append([event("tok_a")])
    audit.append([event("tok_b")])
    assert audit.head().size == 1


def test_sqlite_writers_of_a_process_queue_at_the_gate(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite each write transaction holds the process's write gate: no two bodies run at
    once, a nested write of the same thread passes, and a writer that cannot get the gate in
    time gets StorageUnavailable (retryable) instead of waiting for ever. On PostgreSQL the
    gate is not there."""
    from vault.storage.sql import database as database_module

    db = Database(engine)
    if db.dialect != "sqlite":
        with db.writing():  # nothing to hold
            pass
        return
    inside = 0
    most = 0
    lock = threading.Lock()

    def body(_conn: object) -> None:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        time.sleep(0.001)
        with lock:
            inside -= 1

    def writer() -> None:
        for _ in range(10):
            db.write(body)

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert most == 1
    with db.writing(), db.writing():  # reentrant in one thread
        pass

    monkeypatch.setattr(database_module, "_GATE_TIMEOUT", 0.05)
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with db.writing():
            held.set()
            release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    try:
        with pytest.raises(StorageUnavailable, match="busy"):
            db.write(body)
    finally:
        release.set()
        t.join(5)


_HOLD_THE_FILE_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("taken")
else:
    print("free")
"""


def test_the_sqlite_write_gate_orders_the_processes_sharing_the_file_too(
    engine: Engine,
) -> None:
    """Issue 14: the writers of two processes met at SQLite's busy handler, which sleeps up to
    100 ms a retry; a `flock` beside the database file wakes the next one at once. The lock is
    held for the outermost write only, and by no reader."""
    import subprocess
    import sys

    db = Database(engine)
    if db.dialect != "sqlite":
        return
    lock_file = f"{engine.url.database}.write-lock"

    def other_process_sees() -> str:
        done = subprocess.run(
            [sys.executable, "-c", _HOLD_THE_FILE_LOCK, lock_file],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return done.stdout.strip()

    def body(_conn: object) -> str:
        return other_process_sees()

    assert db.write(body) == "taken"
    with db.writing():
        with db.writing():
            pass
        assert other_process_sees() == "taken"  # still the outer write's
    assert other_process_sees() == "free"
    with db.read() as conn:
        conn.execute(select(audit_events.c.id)).all()
        assert other_process_sees() == "free"

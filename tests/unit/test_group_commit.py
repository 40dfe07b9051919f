"""The group commit's leader and followers, without a database: every request's events are
committed exactly once or fail alone, nobody waits for ever, and concurrent requests share
commits."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from vault.domain.types import Action, AuditEvent, CallerName, Outcome, Token
from vault.errors import StorageUnavailable
from vault.storage.group_commit import GroupCommit, Job, RunAlone

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def ev(token: str) -> AuditEvent:
    return AuditEvent(
        occurred_at=NOW,
        caller=CallerName("kyc"),
        action=Action.DETOKENIZE,
        outcome=Outcome.GRANTED,
        rule="r",
        token=Token(token),
    )


class FakeLog:
    """Commits into a list; refuses any batch holding a `bad` event; sleeps a little per
    commit (an fsync) so that requests pile up behind it."""

    def __init__(self) -> None:
        self.committed: list[str] = []
        self.commits = 0
        self._lock = threading.Lock()
        self._rng = random.Random(7)

    def commit(self, jobs: Sequence[Job]) -> None:
        events = [e for j in jobs for e in j.events]
        time.sleep(self._rng.uniform(0, 0.002))
        if any(e.token and e.token.startswith("bad") for e in events):
            raise ValueError("a column refused a value")
        with self._lock:
            self.commits += 1
            self.committed.extend(str(e.token) for e in events)


def test_many_threads_every_event_once_and_bad_ones_alone() -> None:
    log = FakeLog()
    group = GroupCommit(log.commit)
    outcomes: dict[str, str] = {}
    lock = threading.Lock()

    def client(n: int) -> None:
        for i in range(40):
            token = f"bad-{n}-{i}" if (n * 40 + i) % 17 == 0 else f"ok-{n}-{i}"
            try:
                group.append([ev(token), ev(token + "-b")] if i % 3 == 0 else [ev(token)])
                result = "ok"
            except ValueError:
                result = "refused"
            with lock:
                outcomes[token] = result

    threads = [threading.Thread(target=client, args=(n,)) for n in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a request waited for ever"
    assert len(outcomes) == 24 * 40
    for token, result in outcomes.items():
        assert result == ("refused" if token.startswith("bad") else "ok"), token
    oks = [t for t in outcomes if t.startswith("ok")]
    expected = sorted(oks + [f"{t}-b" for t in oks if int(t.rsplit("-", 1)[1]) % 3 == 0])
    assert sorted(log.committed) == expected  # each exactly once, none of the bad ones
    assert log.commits < len(oks)  # requests shared commits


def test_a_lone_request_commits_itself_without_another_thread() -> None:
    seen: list[str] = []
    group = GroupCommit(lambda jobs: seen.append(threading.current_thread().name))
    group.append([ev("a")])
    assert seen == [threading.current_thread().name]


def test_unavailable_fails_the_whole_batch_and_the_next_request_proceeds() -> None:
    calls: list[int] = []

    def flaky(jobs: Sequence[Job]) -> None:
        calls.append(len(jobs))
        if len(calls) == 1:
            raise StorageUnavailable("the database is unavailable; retry later")

    group = GroupCommit(flaky)
    with pytest.raises(StorageUnavailable):
        group.append([ev("a")])
    group.append([ev("b")])
    assert calls == [1, 1]


class FakeDatabase:
    """Runs each job's write as `Database.commit_jobs` does: in the jobs' order, a job whose
    write raises keeps its error alone; the batch itself fails when asked to."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.fail_next = False

    def commit(self, jobs: Sequence[Job]) -> None:
        ordered = sorted(jobs, key=lambda j: j.order)
        self.batches.append([j.order for j in ordered])
        if self.fail_next:
            self.fail_next = False
            raise ValueError("an event a column refused")
        for job in ordered:
            if job.write is None:
                continue
            try:
                job.result = job.write(None)
            except Exception as exc:  # the job's own, as in a savepoint
                job.error = exc


def test_a_write_job_returns_its_result_and_a_failing_one_fails_alone() -> None:
    db = FakeDatabase()
    group = GroupCommit(db.commit)
    assert group.run(Job((), lambda _conn: "tokens", "s1")) == "tokens"

    def refused(_conn: object) -> object:
        raise LookupError("this request's own")

    with pytest.raises(LookupError):
        group.run(Job((), refused, "s2"))
    assert group.run(Job([ev("a")], lambda _conn: 7, "s3")) == 7


def test_concurrent_write_jobs_share_batches_in_subject_order_and_fail_alone() -> None:
    db = FakeDatabase()
    group = GroupCommit(db.commit)
    results: dict[int, object] = {}
    lock = threading.Lock()

    def write(n: int) -> object:
        if n % 7 == 3:
            raise LookupError(n)
        return n * 10

    def client(n: int) -> None:
        try:
            got = group.run(Job([ev(f"t{n}")], lambda _conn: write(n), f"s{n % 5}"))
        except LookupError as exc:
            got = exc
        with lock:
            results[n] = got

    threads = [threading.Thread(target=client, args=(n,)) for n in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 60
    for n, got in results.items():
        if n % 7 == 3:
            assert isinstance(got, LookupError)
        else:
            assert got == n * 10
    for batch in db.batches:
        assert batch == sorted(batch)  # one lock order in every batch


def test_a_batch_that_fails_is_committed_again_job_by_job_with_fresh_results() -> None:
    db = FakeDatabase()
    group = GroupCommit(db.commit)
    db.fail_next = True
    # A lone job: the batch's failure is its own.
    with pytest.raises(ValueError, match="refused"):
        group.run(Job((), lambda _conn: 1, "s1"))
    assert group.run(Job((), lambda _conn: 2, "s1")) == 2


def test_a_job_set_aside_is_committed_again_alone_by_its_own_request() -> None:
    """`RunAlone`: a job that met a lock held outside its batch is committed again by its own
    request, outside the queue (`alone`), where it may wait as long as the lock is held."""
    calls: list[tuple[str, bool]] = []

    def commit(jobs: Sequence[Job]) -> None:
        for job in jobs:
            calls.append((job.order, job.alone))
            if job.order == "held" and not job.alone:
                job.error = RunAlone()
            else:
                job.result = job.order

    group = GroupCommit(commit)
    assert group.run(Job((), lambda _conn: None, "held")) == "held"
    assert group.run(Job((), lambda _conn: None, "next")) == "next"
    assert calls == [("held", False), ("held", True), ("next", False)]


def test_a_batch_takes_at_most_max_writes_jobs_with_writes() -> None:
    """Each write is a savepoint: PostgreSQL's subtransaction cache holds 64 per transaction."""
    group = GroupCommit(lambda jobs: None)
    group._queue = [Job((), lambda _conn: None, f"s{i}") for i in range(GroupCommit.MAX_WRITES + 5)]
    group._queue.insert(3, Job([ev("a")]))  # events alone take no savepoint
    batch = group._take()
    assert sum(j.write is not None for j in batch) == GroupCommit.MAX_WRITES
    assert len(batch) == GroupCommit.MAX_WRITES + 1
    assert len(group._queue) == 5

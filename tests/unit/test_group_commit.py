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
from vault.storage.group_commit import GroupCommit

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

    def commit(self, events: Sequence[AuditEvent]) -> None:
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
    group = GroupCommit(lambda events: seen.append(threading.current_thread().name))
    group.append([ev("a")])
    assert seen == [threading.current_thread().name]


def test_unavailable_fails_the_whole_batch_and_the_next_request_proceeds() -> None:
    calls: list[int] = []

    def flaky(events: Sequence[AuditEvent]) -> None:
        calls.append(len(events))
        if len(calls) == 1:
            raise StorageUnavailable("the database is unavailable; retry later")

    group = GroupCommit(flaky)
    with pytest.raises(StorageUnavailable):
        group.append([ev("a")])
    group.append([ev("b")])
    assert calls == [1, 1]

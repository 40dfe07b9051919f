"""The NoticeFeed contract, on both adapters: PostgreSQL's LISTEN/NOTIFY and SQLite's poll.

A notice published in a write's transaction reaches a feed of another "process" (here another
feed object on its own connection); one that never commits never does; and a feed that cannot
know what it missed says so before it delivers again. Bounded waits, no timed assertions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from vault.domain.ports import Notice, NoticeFeed, NoticeKind
from vault.storage import migrate
from vault.storage.sql import PolledNoticeFeed, PostgresNoticeFeed, make_engine
from vault.storage.sql.notices import publish

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


class Heard:
    def __init__(self) -> None:
        self.notices: list[Notice] = []
        self.lost = 0
        self._cv = threading.Condition()

    def on_notice(self, notice: Notice) -> None:
        with self._cv:
            self.notices.append(notice)
            self._cv.notify_all()

    def on_lost(self) -> None:
        with self._cv:
            self.lost += 1
            self._cv.notify_all()

    def wait_for(self, notice: Notice, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        with self._cv:
            while notice not in self.notices:
                left = deadline - time.monotonic()
                assert left > 0, f"never heard {notice}: {self.notices}"
                self._cv.wait(left)


@pytest.fixture
def feed(engine: Engine, database_url: str) -> Iterator[tuple[NoticeFeed, Heard]]:
    adapter: NoticeFeed = (
        PolledNoticeFeed(engine, interval=0.05)
        if database_url.startswith("sqlite")
        else PostgresNoticeFeed(database_url)
    )
    heard = Heard()
    adapter.start(heard.on_notice, heard.on_lost)
    yield adapter, heard
    adapter.stop()


def test_a_committed_notice_is_delivered(engine: Engine, feed: tuple[NoticeFeed, Heard]) -> None:
    _adapter, heard = feed
    shredded = Notice(NoticeKind.SUBJECT_KEY, "ab" * 32)
    keys = Notice(NoticeKind.API_KEYS, "k1")
    with engine.begin() as conn:
        publish(conn, shredded.kind, shredded.key, NOW)
    with engine.begin() as conn:
        publish(conn, keys.kind, keys.key, NOW)
    heard.wait_for(shredded)
    heard.wait_for(keys)


def test_a_notice_rolled_back_is_never_delivered(
    engine: Engine, feed: tuple[NoticeFeed, Heard]
) -> None:
    _adapter, heard = feed
    rolled = Notice(NoticeKind.SUBJECT_KEY, "cd" * 32)
    with engine.connect() as conn:
        tx = conn.begin()
        publish(conn, rolled.kind, rolled.key, NOW)
        tx.rollback()
    after = Notice(NoticeKind.API_KEYS, "after")
    with engine.begin() as conn:
        publish(conn, after.kind, after.key, NOW)
    heard.wait_for(after)  # anything published before it has been delivered by now
    assert rolled not in heard.notices


@pytest.mark.postgres
def test_a_lost_listener_forgets_everything_before_it_hears_again(
    database_url_postgresql: str,
) -> None:
    engine = make_engine(database_url_postgresql)
    migrate.upgrade(engine)
    feed = PostgresNoticeFeed(database_url_postgresql)
    heard = Heard()
    feed.start(heard.on_notice, heard.on_lost)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN %%' AND pid <> pg_backend_pid()"
            )
            conn.commit()
        deadline = time.monotonic() + 20
        while heard.lost == 0:
            assert time.monotonic() < deadline, "the lost connection was never reported"
            time.sleep(0.05)
        again = Notice(NoticeKind.SUBJECT_KEY, "ef" * 32)
        for _ in range(200):  # the listener reconnects: publish until it hears
            with engine.begin() as conn:
                publish(conn, again.kind, again.key, NOW)
            if again in heard.notices:
                break
            time.sleep(0.1)
        heard.wait_for(again)
    finally:
        feed.stop()
        engine.dispose()


def test_a_poller_that_never_read_forgets_everything_first(engine: Engine) -> None:
    feed = PolledNoticeFeed(engine)
    heard = Heard()
    feed.poll(heard.on_notice, heard.on_lost)  # never started: it cannot know what it missed
    assert heard.lost == 1
    with engine.begin() as conn:
        publish(conn, NoticeKind.API_KEYS, "k2", NOW)
    feed.poll(heard.on_notice, heard.on_lost)
    assert heard.notices == [Notice(NoticeKind.API_KEYS, "k2")]

"""Issue 14's group commit attacked: `pdv serve` (two processes, one SQLite file) killed with
SIGKILL while callers tokenize into a few shared subjects. A batch holds many requests' writes
in one transaction, so a kill can cut one short with several requests inside; none of them
may be half there. After a restart: every answered request, sent again with its request id,
gets its first answer back (it was durable before the answer); every unanswered one completes
once; every token reads back its own value; every stored value has its audit entry in the same
transaction (and no entry names a token that was not stored); `pdv audit verify` passes.
Bounded loops, no timed assertions."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pdvault_client import Field, PdvaultError
from tests.integration.attack_support import one_shot, spawn
from tests.integration.test_audit_settings import pdv

WRITERS = 6
SUBJECTS = ("gc-a", "gc-b", "gc-c")
ANSWERS_BEFORE_THE_KILL = 150


@dataclass
class Sent:
    request_id: str
    subject: str
    name: str
    tokens: list[str] | None = None  # the answer, if one came back


@dataclass
class Book:
    sent: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answered: threading.Event = field(default_factory=threading.Event)

    def add(self, s: Sent) -> None:
        with self.lock:
            self.sent.append(s)

    def count(self) -> int:
        with self.lock:
            return sum(s.tokens is not None for s in self.sent)


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(p) for p in text]
    return found


def writer(addr: str, key: str, n: int, book: Book, stop: threading.Event) -> None:
    with one_shot(addr, key, timeout=30) as kyc:
        i = 0
        while not stop.is_set():
            s = Sent(str(uuid.uuid4()), SUBJECTS[(n + i) % len(SUBJECTS)], f"Name {n} {i}")
            book.add(s)
            try:
                got = kyc.tokenize(s.subject, [Field("name", s.name)], request_id=s.request_id)
            except PdvaultError:
                return  # the server is gone
            s.tokens = [t.token for t in got]
            if book.count() >= ANSWERS_BEFORE_THE_KILL:
                book.answered.set()
            i += 1


@pytest.mark.slow
def test_kill_9_mid_batch_leaves_every_request_whole_or_absent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = spawn(tmp_path, "first", data, PDV_PROCESSES="2")
    book, stop = Book(), threading.Event()
    key = srv.creds()["kyc"]
    threads = [
        threading.Thread(target=writer, args=(srv.addr, key, n, book, stop), daemon=True)
        for n in range(WRITERS)
    ]
    try:
        for t in threads:
            t.start()
        assert book.answered.wait(120), "the writers got no answers"
        for pid in [*children_of(srv.proc.pid), srv.proc.pid]:  # every process at once
            os.kill(pid, signal.SIGKILL)
        srv.proc.wait(30)
    finally:
        stop.set()
        srv.stop()
    for t in threads:
        t.join(60)
    unanswered = [s for s in book.sent if s.tokens is None]
    answered = [s for s in book.sent if s.tokens is not None]
    assert len(answered) >= ANSWERS_BEFORE_THE_KILL

    again = spawn(tmp_path, "again", data, PDV_PROCESSES="2")
    try:
        with again.client("kyc", timeout=60) as kyc:
            for s in answered:  # durable before the answer: the same tokens again
                got = kyc.tokenize(s.subject, [Field("name", s.name)], request_id=s.request_id)
                assert [t.token for t in got] == s.tokens, s
            for s in unanswered:  # in flight at the kill: completes now, once
                got = kyc.tokenize(s.subject, [Field("name", s.name)], request_id=s.request_id)
                s.tokens = [t.token for t in got]
                repeat = kyc.tokenize(s.subject, [Field("name", s.name)], request_id=s.request_id)
                assert [t.token for t in repeat] == s.tokens
        with again.client("shipping", timeout=60) as shipping:
            for s in book.sent:
                assert s.tokens is not None
                [back] = shipping.detokenize(s.tokens, "product_shipping")
                assert back.value == s.name, s
    finally:
        again.stop()

    with closing(sqlite3.connect(data / "pdvault.db")) as db:
        stored = {r[0] for r in db.execute("SELECT token FROM token_values")}
        audited = {
            r[0]
            for r in db.execute(
                "SELECT token FROM audit_events WHERE action = 'tokenize' AND outcome = 'granted'"
                " AND token IS NOT NULL"
            )
        }
    assert stored == audited  # rows and entries committed together, or not at all
    # The writers of both processes queued at this file's lock (README: PDV_DATA_DIR).
    assert (data / "pdvault.db.write-lock").stat().st_size == 0
    assert {t for s in book.sent for t in s.tokens or []} <= stored
    checked = pdv(tmp_path, "audit", "verify", PDV_DATA_DIR=str(data))
    assert checked.returncode == 0, checked.stdout + checked.stderr

"""Helpers for the attack regression tests of issue #8 (tests/integration/test_attack_*.py).

Everything here goes through public entry points: `pdv serve` as a subprocess, the Python client,
and SQL or the file system only to check outcomes (or to put back a restored backup copy).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, Table, create_engine, delete, insert, select, text

from pdvault_client import (
    Client,
    Field,
    NotFoundError,
    PdvaultError,
    RetryPolicy,
)
from tests.conftest import free_port, pdv_env

PDV_SERVE = [sys.executable, "-m", "pdvault_client.cli", "serve"]
# The rows that hold a subject's data; a restored backup brings them back.
SUBJECT_TABLES = ("subjects", "data_keys", "token_values")


def credentials(data_dir: Path) -> dict[str, str]:
    keys: dict[str, str] = json.loads((data_dir / "dev-credentials.json").read_text())
    return keys


def one_shot(addr: str, key: str, timeout: float = 10.0) -> Client:
    """A client that does not retry: every UNAVAILABLE is seen, and counted, by the test."""
    return Client(addr, key, timeout=timeout, retry=RetryPolicy(attempts=1))


# -- `pdv serve` as a user starts it --------------------------------------------------------------


@dataclass
class Started:
    """How a `pdv serve` start ended: it listened (and was stopped), or it exited by itself."""

    listened: bool
    returncode: int | None
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def start_once(cwd: Path, name: str = "start", timeout: float = 60.0, **env: str) -> Started:
    """Start `pdv serve`; wait until it says it listens (then stop it) or exits by itself."""
    out, err = cwd / f"{name}.out", cwd / f"{name}.err"
    env.setdefault("PDV_ADDR", f"127.0.0.1:{free_port()}")
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(PDV_SERVE, cwd=cwd, env=pdv_env(**env), stdout=o, stderr=e)
        deadline = time.monotonic() + timeout
        listened = False
        while proc.poll() is None and time.monotonic() < deadline:
            if b"listening" in err.read_bytes() + out.read_bytes():
                listened = True
                break
            time.sleep(0.1)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            returncode = None
        else:
            returncode = proc.returncode
    return Started(listened, returncode, out.read_text(), err.read_text())


@dataclass
class Serving:
    proc: subprocess.Popen[bytes]
    addr: str
    log: Path
    data_dir: Path
    processes: int = 1

    def creds(self) -> dict[str, str]:
        return credentials(self.data_dir)

    def client(self, caller: str, timeout: float = 10.0) -> Client:
        return Client(self.addr, self.creds()[caller], timeout=timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def launch(cwd: Path, name: str, data_dir: Path, **env: str) -> Serving:
    """`pdv serve` in the background (one process unless PDV_PROCESSES says otherwise), not
    waited for: see `listening`."""
    addr = env.pop("PDV_ADDR", f"127.0.0.1:{free_port()}")
    env.setdefault("PDV_PROCESSES", "1")
    log = cwd / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            PDV_SERVE,
            cwd=cwd,
            env=pdv_env(PDV_ADDR=addr, PDV_DATA_DIR=str(data_dir), **env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Serving(proc, addr, log, data_dir, int(env["PDV_PROCESSES"]))


def listening(srv: Serving, timeout: float = 60.0) -> bool:
    """Wait until `srv` listens (True) or it exits (False). `pdv serve` logs "listening on"
    once, when every one of its processes accepts calls."""
    deadline = time.monotonic() + timeout
    while b"listening on" not in srv.log.read_bytes():
        if srv.proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def spawn(cwd: Path, name: str, data_dir: Path, **env: str) -> Serving:
    """`pdv serve` in the background, waited for until every process listens. Raises with its
    log if it exits first (use `start_once` where exiting is the expected outcome)."""
    srv = launch(cwd, name, data_dir, **env)
    if not listening(srv):
        srv.stop()
        raise AssertionError(f"pdv serve did not start:\n{srv.log.read_text()}")
    return srv


@contextmanager
def serving(cwd: Path, name: str, data_dir: Path, **env: str) -> Iterator[Serving]:
    srv = spawn(cwd, name, data_dir, **env)
    try:
        yield srv
    finally:
        srv.stop()


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident set (VmHWM), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    assert m is not None, status
    return int(m.group(1))


# -- the database, to check outcomes ----------------------------------------------------------


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'pdvault.db'}"


@contextmanager
def engine_for(url: str) -> Iterator[Engine]:
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def rows_of_subject(engine: Engine, subject: str) -> dict[str, int]:
    """How many rows of each table that holds a subject's data still name it."""
    counts = {}
    with engine.connect() as conn:
        for table in SUBJECT_TABLES:
            counts[table] = conn.execute(
                text(f"SELECT count(*) FROM {table} WHERE subject_id = :s"),
                {"s": subject},
            ).scalar_one()
    return counts


def audit_rows_naming(engine: Engine, subject: str) -> int:
    with engine.connect() as conn:
        n: int = conn.execute(
            text("SELECT count(*) FROM audit_events WHERE subject_id = :s"), {"s": subject}
        ).scalar_one()
    return n


def audit_text(engine: Engine) -> str:
    """Every audit row, as text: for searching it for what must not be there."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM audit_events")).all()
    return "\n".join(repr(tuple(r)) for r in rows)


Backup = dict[str, list[dict[str, Any]]]


def backup_subject(engine: Engine, subject: str) -> Backup:
    """A copy of a subject's rows, as a backup taken now holds them."""
    meta = MetaData()
    out: Backup = {}
    with engine.connect() as conn:
        for name in SUBJECT_TABLES:
            table = Table(name, meta, autoload_with=conn)
            out[name] = [
                dict(r)
                for r in conn.execute(select(table).where(table.c.subject_id == subject)).mappings()
            ]
    return out


def restore_subject(engine: Engine, subject: str, backup: Backup) -> None:
    """Put a subject's rows back as they were in `backup` (a partial restore of those tables)."""
    meta = MetaData()
    with engine.begin() as conn:
        tables = {name: Table(name, meta, autoload_with=conn) for name in SUBJECT_TABLES}
        for name in reversed(SUBJECT_TABLES):
            conn.execute(delete(tables[name]).where(tables[name].c.subject_id == subject))
        for name in SUBJECT_TABLES:
            if backup[name]:
                conn.execute(insert(tables[name]), backup[name])


# -- concurrency ----------------------------------------------------------------------------------


@dataclass
class Tally:
    """Thread-safe lists of what happened, by kind."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    items: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, kind: str, *items: Any) -> None:
        with self.lock:
            self.items.setdefault(kind, []).extend(items)

    def get(self, kind: str) -> list[Any]:
        with self.lock:
            return list(self.items.get(kind, []))


def run_threads(targets: Sequence[Callable[[], None]], timeout: float = 120.0) -> None:
    """Run each target in its own thread; re-raise the first exception one of them raised."""
    errors: list[BaseException] = []

    def wrap(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads still running after the timeout"
    if errors:
        raise errors[0]


def chunks(items: Sequence[str], size: int = 1000) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# -- the shred race (issue #8 items 1 and 4) --------------------------------------------------

TOKENIZERS = 8
ATTEMPTS = 15  # tokenize calls per thread and round, at most
SHRED_ATTEMPTS = 2000  # shreds answered "unknown subject" until the first tokenize commits


def race_round(
    kyc: Sequence[Client], ops: Client, subject: str, fields: int = 1, attempts: int = ATTEMPTS
) -> Tally:
    """One client per thread in `kyc` tokenizes (`fields` values per call) for a fresh subject
    while `ops` shreds it. Tallies: `receipt`, `tokens` (from tokenizes that succeeded),
    `unexpected`. Big batches widen the window between a tokenize's check and its write."""
    tally = Tally()
    batch = [Field("name", "Ann Lee")] * fields
    start = threading.Barrier(len(kyc) + 1, timeout=30)

    def tokenizer(client: Client) -> None:
        start.wait()
        for _ in range(attempts):
            try:
                got = client.tokenize(subject, batch)
            except NotFoundError as exc:
                if exc.reason == "SUBJECT_DELETED":
                    return  # refused: the shred holds for this thread
                tally.add("unexpected", f"tokenize: {exc.code.name} {exc.reason}")
                continue
            except PdvaultError as exc:
                tally.add("unexpected", f"tokenize: {exc.code.name} {exc.reason}")
                continue
            tally.add("tokens", *(t.token for t in got))

    def shredder() -> None:
        start.wait()
        for _ in range(SHRED_ATTEMPTS):
            try:
                tally.add("receipt", ops.subjects().shred(subject)["receipt"])
                return
            except NotFoundError as exc:
                if exc.reason != "SUBJECT_UNKNOWN":
                    tally.add("unexpected", f"shred: {exc.code.name} {exc.reason}")
                    return
            except PdvaultError as exc:
                tally.add("unexpected", f"shred: {exc.code.name} {exc.reason}")
                return

    run_threads([*(lambda c=c: tokenizer(c) for c in kyc), shredder])
    return tally


def same_receipt(receipt: dict[str, Any]) -> dict[str, Any]:
    """What a repeated shred must give back unchanged. (Today a repeat's shreddedAt differs from
    the first answer's by microseconds, two clock readings: not what these tests are about.)"""
    return {k: v for k, v in receipt.items() if k != "shreddedAt"}


def shred_held(
    engine: Engine, client: Callable[[str], Client], subject: str, tally: Tally
) -> list[str]:
    """What is wrong after a round: data left, the id usable again, tokens that a successful
    tokenize returned not answering SUBJECT_DELETED, another receipt on a repeat."""
    receipts = tally.get("receipt")
    if not receipts:
        return [f"{subject}: no receipt ({tally.get('unexpected')})"]
    [receipt] = receipts
    problems: list[str] = []
    left = {t: n for t, n in rows_of_subject(engine, subject).items() if n}
    if left:
        problems.append(f"{subject}: rows left after the receipt: {left}")
    with client("kyc") as kyc, client("shipping") as shipping:
        try:
            kyc.tokenize(subject, [Field("name", "Ann Lee")])
            problems.append(f"{subject}: a tokenize after the receipt succeeded")
        except NotFoundError as exc:
            if exc.reason != "SUBJECT_DELETED":
                problems.append(f"{subject}: a later tokenize was refused with {exc.reason}")
        tokens = tally.get("tokens")
        answers: Counter[str] = Counter()
        for batch in chunks(tokens):
            for r in shipping.detokenize(list(batch), "product_shipping"):
                answers["value" if r.error is None else r.error.reason] += 1
        if set(answers) - {"SUBJECT_DELETED"}:
            problems.append(f"{subject}: tokens not SUBJECT_DELETED but {dict(answers)}")
    with client("ops") as ops:
        again = ops.subjects().shred(subject)["receipt"]
    if same_receipt(again) != same_receipt(receipt):
        problems.append(f"{subject}: a second shred gave another receipt: {again} after {receipt}")
    return problems

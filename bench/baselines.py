"""The limits below pdvault, measured in the harness process on the same machine and data:

- crypto: AES-256-GCM with `cryptography` (what vault.crypto uses) on the same value sizes;
- storage: SQLAlchemy Core writes and reads of rows shaped like `token_values`, in a scratch
  table of the same database, through an engine made by pdvault's own `make_engine` (same
  SQLite pragmas, same PostgreSQL pool), one transaction per batch as a request would;
- Transit: raw HashiCorp Vault Transit round trips through hvac to the emulator;
- documents (`python -m bench.documents`): raw AES-256-GCM over a document's bytes cut as format
  DV1 cuts them, and the raw write and read of as many 64 KiB rows in a scratch table shaped like
  `document_segments`, a transaction per 16 rows as the blob store writes them.
"""

from __future__ import annotations

import base64
import os
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import hvac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    insert,
    select,
)

from bench.stats import summarize_ms
from bench.workloads import CATEGORIES, sample_values
from vault.crypto.documents import DEFAULT_SEGMENT_SIZE, TAG_BYTES, TINK_HEADER_BYTES
from vault.storage.sql import make_engine
from vault.storage.tables import UtcDateTime

AD_PREFIX = b"pdvault.v1.value\x00"


def _associated_data(i: int) -> bytes:
    # As vault.crypto.aead builds it: prefix, 5-byte header, length-prefixed token/subject/cat.
    parts = [f"tok_{i:026d}", f"known-subject-{i % 500}", CATEGORIES[i % len(CATEGORIES)]]
    lp = b"".join(len(p).to_bytes(2, "big") + p.encode() for p in parts)
    return AD_PREFIX + b"\x01\x00\x00\x00\x01" + lp


def _rate(fn: Callable[[int], None], seconds: float) -> tuple[float, float]:
    """(operations per second, CPU seconds per operation) of fn(i) run for about `seconds`."""
    n = 0
    cpu0 = time.process_time()
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        for _ in range(100):
            fn(n)
            n += 1
    elapsed = time.perf_counter() - start
    return n / elapsed, (time.process_time() - cpu0) / n


def crypto(seconds: float) -> dict[str, float]:
    """One thread; a field's encrypt and decrypt, reusing the key object and not."""
    values = sample_values(random.Random(7), 256)
    ads = [_associated_data(i) for i in range(256)]
    key = os.urandom(32)
    aead = AESGCM(key)
    sealed = [
        (n, aead.encrypt(n, v, a))
        for v, a in zip(values, ads, strict=True)
        for n in [os.urandom(12)]
    ]
    per = seconds / 3

    def encrypt(i: int) -> None:
        aead.encrypt(os.urandom(12), values[i & 255], ads[i & 255])

    def decrypt(i: int) -> None:
        nonce, ct = sealed[i & 255]
        aead.decrypt(nonce, ct, ads[i & 255])

    def both_fresh_key(i: int) -> None:
        # pdvault builds an AESGCM object per seal and per open (vault.crypto.aead._aead).
        nonce, ct = sealed[i & 255]
        AESGCM(key).encrypt(os.urandom(12), values[i & 255], ads[i & 255])
        AESGCM(key).decrypt(nonce, ct, ads[i & 255])

    enc, enc_cpu = _rate(encrypt, per)
    dec, dec_cpu = _rate(decrypt, per)
    _both, both_cpu = _rate(both_fresh_key, per)
    return {
        "value_bytes_mean": sum(len(v) for v in values) / len(values),
        "encrypt_per_s": enc,
        "decrypt_per_s": dec,
        "encrypt_us": enc_cpu * 1e6,
        "decrypt_us": dec_cpu * 1e6,
        "encrypt_decrypt_new_key_objects_us": both_cpu * 1e6,
    }


# -- storage ------------------------------------------------------------------------------------


def _token(rng: random.Random) -> str:
    return "tok_" + base64.b32encode(rng.randbytes(16)).decode().rstrip("=").lower()


def storage(url: str, seconds: float, threads: int) -> dict[str, Any]:
    """Rows/s of inserts and IN-selects, in batches of 1 and 100, `threads` at a time."""
    engine = make_engine(url)
    table = Table(
        f"bench_raw_values_{os.getpid()}",
        MetaData(),
        Column("token", String(64), primary_key=True),
        Column("subject_id", String(128), nullable=False, index=True),
        Column("category", String(64), nullable=False),
        Column("token_format", String(16), nullable=False),
        Column("ciphertext", LargeBinary, nullable=False),
        Column("created_at", UtcDateTime(), nullable=False),
    )
    table.create(engine)
    inserted: list[str] = []
    lock = threading.Lock()
    rngs = [random.Random(i) for i in range(threads)]
    select_stmt = select(table).where(table.c.token.in_(bindparam("tokens", expanding=True)))

    def rows(rng: random.Random, n: int) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        out = []
        for _ in range(n):
            category = rng.choice(CATEGORIES)
            out.append(
                {
                    "token": _token(rng),
                    "subject_id": f"raw-subject-{rng.randrange(1000)}",
                    "category": category,
                    "token_format": "opaque",
                    # format byte, key version, nonce, kind byte + ~25-byte value, tag
                    "ciphertext": rng.randbytes(5 + 12 + 26 + 16),
                    "created_at": now,
                }
            )
        return out

    def insert_op(batch: int) -> Callable[[int], int]:
        def op(worker: int) -> int:
            data = rows(rngs[worker], batch)
            with engine.begin() as conn:
                conn.execute(insert(table), data)
            with lock:
                inserted.extend(r["token"] for r in data)
            return batch

        return op

    def select_op(batch: int) -> Callable[[int], int]:
        def op(worker: int) -> int:
            wanted = rngs[worker].sample(inserted, batch)
            with engine.begin() as conn:
                got = conn.execute(select_stmt, {"tokens": wanted}).all()
            return len(got)

        return op

    phases = {
        "insert_100": insert_op(100),
        "insert_1": insert_op(1),
        "select_100": select_op(100),
        "select_1": select_op(1),
    }
    results: dict[str, Any] = {"threads": threads, "transaction_per_batch": True}
    try:
        for name, op in phases.items():
            results[name] = _threaded(op, threads, seconds / len(phases))
    finally:
        table.drop(engine)
        engine.dispose()
    return results


def _threaded(op: Callable[[int], int], threads: int, seconds: float) -> dict[str, float]:
    counts = [0] * threads
    ops = [0] * threads
    latencies: list[list[float]] = [[] for _ in range(threads)]
    op(0)  # connect and warm the statement cache
    end = time.perf_counter() + seconds
    cpu0 = time.process_time()
    start = time.perf_counter()

    def run(w: int) -> None:
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            counts[w] += op(w)
            latencies[w].append(time.perf_counter() - t0)
            ops[w] += 1

    workers = [threading.Thread(target=run, args=(w,)) for w in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    rows = sum(counts)
    lat = summarize_ms([x for per in latencies for x in per])
    return {
        "rows_per_s": rows / elapsed,
        "transactions_per_s": sum(ops) / elapsed,
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "client_cpu_us_per_row": cpu / rows * 1e6 if rows else 0.0,
    }


# -- HashiCorp Vault Transit --------------------------------------------------------------------


def transit(url: str, token: str, seconds: float) -> dict[str, Any]:
    """Sequential round trips from one hvac client: wrap one data key; unwrap a batch of 10."""
    client: Any = hvac.Client(url=url, token=token)  # the transit API is untyped
    transit_api = client.secrets.transit
    plaintext = base64.b64encode(os.urandom(32)).decode()
    sealed = transit_api.encrypt_data("pdvault", plaintext)["data"]["ciphertext"]
    batch = [{"ciphertext": sealed} for _ in range(10)]
    out: dict[str, Any] = {}
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("encrypt_1", lambda: transit_api.encrypt_data("pdvault", plaintext)),
        ("decrypt_batch_10", lambda: transit_api.decrypt_data("pdvault", "", batch_input=batch)),
    ]
    for name, call in calls:
        samples: list[float] = []
        end = time.perf_counter() + seconds / 2
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            call()
            samples.append(time.perf_counter() - t0)
        lat = summarize_ms(samples)
        out[name] = {
            "calls_per_s": len(samples) / sum(samples),
            "p50_ms": lat["p50_ms"],
            "p99_ms": lat["p99_ms"],
        }
    return out


# -- documents ----------------------------------------------------------------------------------


def dv1_pieces(content: bytes, segment_size: int = DEFAULT_SEGMENT_SIZE) -> list[memoryview]:
    """`content` cut as format DV1 cuts it (vault.crypto.documents): segment 0 shorter by Tink's
    header, every segment full but the last, so that each sealed piece is as long as pdvault's
    sealed segment and there are as many."""
    view = memoryview(content)
    first = segment_size - TAG_BYTES - TINK_HEADER_BYTES
    rest = segment_size - TAG_BYTES
    pieces = [view[:first]]
    pieces.extend(view[at : at + rest] for at in range(first, len(view), rest))
    return pieces


class SegmentAead:
    """Raw AES-256-GCM over a document's pieces: one key and one `AESGCM` object, a counter as
    the nonce; no key derivation, header or stream state."""

    def __init__(self) -> None:
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))

    def seal(self, pieces: list[memoryview]) -> list[bytes]:
        return [self._aead.encrypt(i.to_bytes(12, "big"), p, None) for i, p in enumerate(pieces)]

    def open(self, sealed: list[bytes]) -> list[bytes]:
        return [self._aead.decrypt(i.to_bytes(12, "big"), s, None) for i, s in enumerate(sealed)]


class SegmentTable:
    """A scratch table shaped like `document_segments`, in the database under test, through an
    engine made by pdvault's `make_engine` (same SQLite pragmas: WAL, synchronous=FULL,
    secure_delete, BEGIN IMMEDIATE; same PostgreSQL pool). Writes a transaction per `batch`
    rows and reads `batch` rows per query, as the blob store does (DocumentLimits'
    segments_per_write and segments_per_read), reads without a transaction as pdvault's
    reader does."""

    def __init__(self, url: str, batch: int = 16) -> None:
        self.batch = batch
        self._engine = make_engine(url)
        self._reader = self._engine.execution_options(isolation_level="AUTOCOMMIT")
        self._table = Table(
            f"bench_raw_segments_{os.getpid()}",
            MetaData(),
            Column("blob_id", String(40), primary_key=True),
            Column("seq", Integer, primary_key=True),
            Column("ciphertext", LargeBinary, nullable=False),
        )
        self._table.create(self._engine)
        t = self._table
        self._select = (
            select(t.c.ciphertext)
            .where(
                t.c.blob_id == bindparam("blob"),
                t.c.seq >= bindparam("first"),
                t.c.seq < bindparam("end"),
            )
            .order_by(t.c.seq)
        )

    def write(self, blob: str, sealed: list[bytes]) -> None:
        for first in range(0, len(sealed), self.batch):
            rows = [
                {"blob_id": blob, "seq": first + i, "ciphertext": s}
                for i, s in enumerate(sealed[first : first + self.batch])
            ]
            with self._engine.begin() as conn:
                conn.execute(insert(self._table), rows)

    def read(self, blob: str, count: int) -> list[bytes]:
        out: list[bytes] = []
        for first in range(0, count, self.batch):
            with self._reader.connect() as conn:
                found = conn.execute(
                    self._select, {"blob": blob, "first": first, "end": first + self.batch}
                ).scalars()
                out.extend(bytes(c) for c in found)
        return out

    def clear(self) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(self._table))

    def close(self) -> None:
        try:
            self._table.drop(self._engine)
        finally:
            self._engine.dispose()

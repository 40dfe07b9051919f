"""Two pdvault server processes sharing one PostgreSQL: a shred or a stop through one replica
takes effect in the other at once (issue: several replicas)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from pdvault_client import (
    Client,
    FailedPreconditionError,
    Field,
    NotFoundError,
)
from tests.conftest import spawn_serve

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
PAN = "4111111111111111"


def _reset(url: str) -> None:
    import psycopg

    u = make_url(url)
    with psycopg.connect(
        host=u.host, port=u.port or 5432, dbname=u.database, user=u.username, autocommit=True
    ) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def _start(tmp: Path, name: str, url: str) -> tuple[subprocess.Popen[bytes], str]:
    # One shared data dir: one key file, one shred log; one process each, to tell them apart.
    proc, addr, _log = spawn_serve(
        tmp, name, PDV_DATA_DIR=str(tmp / "data"), PDV_DATABASE_URL=url, PDV_PROCESSES="1"
    )
    return proc, addr


@pytest.fixture
def replicas(tmp_path: Path, postgres_server_url: str) -> Iterator[tuple[str, str, Path]]:
    _reset(postgres_server_url)
    a, addr_a = _start(tmp_path, "a", postgres_server_url)
    b, addr_b = _start(tmp_path, "b", postgres_server_url)  # after a: the keys exist by now
    try:
        yield addr_a, addr_b, tmp_path / "data" / "dev-credentials.json"
    finally:
        for p in (a, b):
            p.terminate()
        for p in (a, b):
            p.wait(timeout=20)


def test_a_shred_in_one_replica_holds_in_the_other_at_once(
    replicas: tuple[str, str, Path],
) -> None:
    import json

    addr_a, addr_b, creds_file = replicas
    creds = json.loads(creds_file.read_text())
    with Client(addr_a, creds["kyc"]) as kyc:
        card = kyc.tokenize("user-42", [Field("card_number", PAN)])[0].token
        other = kyc.tokenize("user-43", [Field("card_number", PAN)])[0].token
    with Client(addr_b, creds["payment"]) as payment_b:
        [read] = payment_b.detokenize([card], "payment")  # b now holds the key in its cache
        assert read.value == PAN
    with Client(addr_b, creds["ops"]) as ops_b:
        assert ops_b.keys().status().cache.entries >= 1  # type: ignore[union-attr]

    with Client(addr_a, creds["ops"]) as ops_a:
        ops_a.subjects().stop("user-43")
        ops_a.subjects().shred("user-42")

    # Right after the calls returned, through the other replica:
    with Client(addr_b, creds["payment"]) as payment_b:
        gone, stopped = payment_b.detokenize([card, other], "payment")
    assert isinstance(gone.error, NotFoundError)
    assert gone.error.reason == "SUBJECT_DELETED"
    assert isinstance(stopped.error, FailedPreconditionError)  # one code per reason (#10)
    assert stopped.error.reason == "SUBJECT_STOPPED"

    # And b dropped the key material itself (PostgreSQL NOTIFY): wait for the notice, bounded.
    with Client(addr_b, creds["ops"]) as ops_b:
        deadline = time.monotonic() + 10
        while True:
            cache = ops_b.keys().status().cache
            assert cache is not None
            if cache.entries == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert cache.entries == 0

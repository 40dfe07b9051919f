"""Issue #8, items 12, 13 and 19: what `pdv serve` does at start-up with the wrong key file or
a port in use, and when its database goes away. (Item 12's third case, a restored copy after
rotate, rewrap and trim still starting and answering DATA_LOSS, is
test_lifecycle.py::test_after_rotate_rewrap_trim_an_old_copy_cannot_be_decrypted.)"""

from __future__ import annotations

import contextlib
import secrets
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql
from sqlalchemy.engine import make_url

from pdvault_client import Client, Field
from tests.conftest import ADMIN_URL
from tests.integration.attack_support import Started, serving, start_once

pytestmark = pytest.mark.slow


def refused_to_start(started: Started, names: str) -> None:
    """`pdv serve` exited with status 2 and one line on stderr naming `names`; no traceback."""
    assert not started.listened, f"it started:\n{started.output}"
    assert started.returncode == 2, started.output
    assert "Traceback" not in started.output
    naming = [line for line in started.stderr.splitlines() if names in line]
    assert len(naming) == 1, started.stderr


def test_a_missing_key_file_is_not_replaced(tmp_path: Path) -> None:
    """issue #8 item 12: with data keys in the database and kek.json gone, `pdv serve` refuses
    to start and creates no new key file (today it makes a new v1 and every value answers
    DATA_LOSS)."""
    data = tmp_path / "data"
    with serving(tmp_path, "first", data) as srv, srv.client("kyc") as kyc:
        kyc.tokenize("user-1", [Field("name", "Ann Lee")])
    (data / "kek.json").unlink()
    started = start_once(tmp_path, "again", PDV_DATA_DIR=str(data), PDV_PROCESSES="1")
    refused_to_start(started, "kek.json")
    assert not (data / "kek.json").exists()


def test_another_instances_key_file_is_refused(tmp_path: Path) -> None:
    """issue #8 item 12: a kek.json from another data directory is not the key the data keys
    were wrapped by: `pdv serve` refuses to start, and leaves the file as it is."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    with serving(tmp_path, "ours", ours) as srv, srv.client("kyc") as kyc:
        kyc.tokenize("user-1", [Field("name", "Ann Lee")])
    with serving(tmp_path, "theirs", theirs):
        pass
    foreign = (theirs / "kek.json").read_bytes()
    (ours / "kek.json").write_bytes(foreign)
    started = start_once(tmp_path, "again", PDV_DATA_DIR=str(ours), PDV_PROCESSES="1")
    refused_to_start(started, "kek.json")
    assert (ours / "kek.json").read_bytes() == foreign


def test_a_second_instance_cannot_share_the_port(tmp_path: Path) -> None:
    """issue #8 item 13: a second `pdv serve` (another data dir) on the port of a running one,
    both with PDV_PROCESSES=2, refuses to start (non-zero exit, a line naming the address)
    instead of splitting the port's connections between two vaults through SO_REUSEPORT."""
    with serving(tmp_path, "one", tmp_path / "one", PDV_PROCESSES="2") as first:
        started = start_once(
            tmp_path,
            "two",
            PDV_ADDR=first.addr,
            PDV_DATA_DIR=str(tmp_path / "two"),
            PDV_PROCESSES="2",
        )
        with Client(first.addr, first.creds()["kyc"]) as kyc:
            kyc.tokenize("user-1", [Field("name", "Ann Lee")])  # the first still serves
    assert not started.listened, f"the second instance serves the port too:\n{started.output}"
    assert started.returncode not in (0, None)
    assert "Traceback" not in started.output
    port = first.addr.rsplit(":", 1)[1]
    assert any(port in line for line in started.stderr.splitlines()), started.stderr


LOG_LINES_WAIT = 50  # polls of the log, 0.2 s apart, for the line about the database


@pytest.mark.postgres
def test_health_with_the_database_gone_is_at_least_logged(
    tmp_path: Path, postgres_server_url: str
) -> None:
    """issue #8 item 19 (optional): the database is dropped under a running server; a health
    check must at least leave a log line about the database (whether health answers
    NOT_SERVING is for the deploy issue, not asserted here)."""
    import psycopg

    admin_url = make_url(ADMIN_URL)
    name = f"pdvault_gone_{secrets.token_hex(4)}"
    conninfo = (
        f"host={admin_url.host or '127.0.0.1'} port={admin_url.port or 5432} "
        f"dbname={admin_url.database} user={admin_url.username}"
    )
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            url = admin_url.set(database=name).render_as_string(hide_password=False)
            with serving(tmp_path, "serve", tmp_path / "data", PDV_DATABASE_URL=url) as srv:
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
                before = len(srv.log.read_text().splitlines())
                with grpc.insecure_channel(srv.addr) as channel:
                    health: Any = health_pb2_grpc.HealthStub(channel)  # loosely typed stubs
                    with contextlib.suppress(grpc.RpcError):  # an error is fine here too
                        health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                said: list[str] = []
                for _ in range(LOG_LINES_WAIT):
                    lines = srv.log.read_text().splitlines()[before:]
                    said = [
                        line
                        for line in lines
                        if "database" in line.lower() and ("WARNING" in line or "ERROR" in line)
                    ]
                    if said:
                        break
                    time.sleep(0.2)
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    assert said, "no log line says the database is gone"

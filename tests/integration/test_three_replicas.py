"""Three stateless replicas over one PostgreSQL behind one address (issue #13 section 5): the
client balances round robin over the three (gRPC's client-side `round_robin`, as a service mesh
or an L4 proxy would), and every promise holds whichever replica answers: a stop, a shred and
a revoked key are coherent across all of them. Counts and outcomes, no timing assertions."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sqlalchemy.engine import make_url

from pdvault_client import (
    Client,
    FailedPreconditionError,
    Field,
    NotFoundError,
    UnauthenticatedError,
)
from pdvault_client.types import CHANNEL_OPTIONS
from tests.integration.attack_support import Serving, spawn

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PAN = "4111111111111111"


def _reset(url: str) -> None:
    import psycopg

    u = make_url(url)
    with psycopg.connect(
        host=u.host, port=u.port or 5432, dbname=u.database, user=u.username, autocommit=True
    ) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


@dataclass
class Fleet:
    replicas: list[Serving]
    keys: dict[str, str]

    @property
    def target(self) -> str:
        # One name for the three, as a headless Service or a proxy would give.
        return "ipv4:" + ",".join(r.addr for r in self.replicas)

    def client(self, caller: str, key: str | None = None) -> Client:
        channel = grpc.insecure_channel(
            self.target, options=[*CHANNEL_OPTIONS, ("grpc.lb_policy_name", "round_robin")]
        )
        return Client(self.target, key or self.keys[caller], channel=channel, timeout=10)


@pytest.fixture
def fleet(tmp_path: Path, postgres_server_url: str) -> Iterator[Fleet]:
    _reset(postgres_server_url)
    data = tmp_path / "data"  # one key file and one shred log, shared (as a volume would be)
    env = {"PDV_DATABASE_URL": postgres_server_url, "PDV_SHUTDOWN_PAUSE": "0"}
    first = spawn(tmp_path, "r0", data, **env)  # migrates and writes the demo keys
    rest = [spawn(tmp_path, f"r{i}", data, **env) for i in (1, 2)]
    try:
        keys = json.loads((data / "dev-credentials.json").read_text())
        yield Fleet([first, *rest], keys)
    finally:
        for r in (first, *rest):
            r.stop()


def _every_replica(fleet: Fleet, caller: str, check: Callable[[Client], None]) -> None:
    """Run `check(client)` twice per replica: round robin sends consecutive calls to each."""
    with fleet.client(caller) as client:
        for _ in range(len(fleet.replicas) * 2):
            check(client)


def test_calls_are_spread_over_the_three(fleet: Fleet) -> None:
    answered = set()
    with fleet.client("ops") as ops:
        for _ in range(12):
            cache = ops.keys().status().cache
            assert cache is not None
            answered.add(cache.process_id)
    assert len(answered) == 3


def test_stop_shred_and_revocation_hold_on_every_replica(fleet: Fleet) -> None:
    with fleet.client("payment") as payment:
        tokens = [
            payment.tokenize(f"user-{i}", [Field("card_number", PAN)])[0].token for i in range(6)
        ]
    with fleet.client("ops") as ops:
        ops.subjects().stop("user-0")
        ops.subjects().shred("user-1")

    def stopped(client: Client) -> None:
        with pytest.raises(FailedPreconditionError):
            client.tokenize("user-0", [Field("name", "Ann")])

    def shredded(client: Client) -> None:
        [gone] = client.detokenize([tokens[1]], "payment")
        assert isinstance(gone.error, NotFoundError)
        assert gone.error.reason == "SUBJECT_DELETED"
        with pytest.raises(NotFoundError):
            client.tokenize("user-1", [Field("card_number", PAN)])

    def alive(client: Client) -> None:
        [ok] = client.detokenize([tokens[2]], "payment")
        assert ok.value == PAN

    for check in (stopped, shredded, alive):
        _every_replica(fleet, "payment", check)

    with fleet.client("ops") as ops:
        added = ops.callers().add("payment")
    key = added["apiKey"]
    with fleet.client("payment", key) as fresh:
        deadline = time.monotonic() + 10
        seen = 0
        while seen < 6:  # the new key reaches every replica (within a second each)
            try:
                fresh.detokenize([tokens[2]], "payment")
                seen += 1
            except UnauthenticatedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    with fleet.client("ops") as ops:
        ops.callers().revoke("payment", added["keyId"])
    deadline = time.monotonic() + 10
    refused_in_a_row = 0
    with fleet.client("payment", key) as revoked:
        while refused_in_a_row < 6:  # refused by each of the three, twice over
            try:
                revoked.detokenize([tokens[2]], "payment")
                refused_in_a_row = 0
            except UnauthenticatedError:
                refused_in_a_row += 1
            assert time.monotonic() < deadline, "a replica still accepts the revoked key"

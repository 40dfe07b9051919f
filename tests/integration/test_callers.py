"""Callers an operator provisions (issue #12 section 1): the first operator key from
`pdv caller bootstrap` (no server), keys added, rotated, listed and revoked through the
CallerService and `pdv caller`, and a revocation refused by another replica within a second
(by the notice, not by the key table's 30-second refresh)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from pdvault_client import Client, Field
from pdvault_client.cli import main
from pdvault_client.errors import (
    InvalidArgumentError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from tests.conftest import RunningServer, running
from vault.app import build_app
from vault.config import Settings
from vault.storage.tables import api_keys, audit_events

PAN = "4111111111111111"


def tokenize_with(addr: str, key: str) -> None:
    with Client(addr, key) as client:
        client.tokenize("user-1", [Field("card_number", PAN)])


def test_bootstrap_gives_the_first_operator_key_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PDV_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PDV_DEV_CREDENTIALS", "false")
    assert main(["caller", "bootstrap"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("pdv_")
    assert main(["caller", "bootstrap"]) == 4  # an operator has a key: refused
    assert "already has a key" in capsys.readouterr().err
    assert main(["caller", "bootstrap", "--caller", "kyc"]) != 0
    settings = Settings(
        addr="127.0.0.1:0",
        data_dir=tmp_path / "data",
        dev_credentials=False,
        retention_sweep_interval=0,
    )
    app = build_app(settings)
    with running(app, close=True) as srv, Client(srv.addr, key) as ops:
        added = ops.callers().add("payment")
        tokenize_with(srv.addr, added["apiKey"])
        with pytest.raises(UnauthenticatedError):
            tokenize_with(srv.addr, added["apiKey"][:-2] + "xx")


def test_add_rotate_list_revoke(server: RunningServer) -> None:
    with server.client("ops") as ops:
        first = ops.callers().add("shipping")
        second = ops.callers().add("shipping", rotation=True)
        with Client(server.addr, first["apiKey"]) as a, Client(server.addr, second["apiKey"]) as b:
            a.tokenize("user-1", [Field("address", "1 Main St")])
            b.tokenize("user-1", [Field("address", "1 Main St")])
        now = datetime.now(UTC)  # what the server writes about once a minute, now
        server.app.stores.credentials.touch(
            dict.fromkeys(server.app.authenticator.drain_used(), now)
        )
        listed = {k["keyId"]: k for k in ops.callers().list()}
        assert listed[first["keyId"]]["caller"] == "shipping"
        assert listed[first["keyId"]].get("lastUsedAt")
        assert not listed[first["keyId"]].get("revokedAt")
        ops.callers().revoke("shipping", first["keyId"])
        with pytest.raises(UnauthenticatedError), Client(server.addr, first["apiKey"]) as a:
            a.tokenize("user-1", [Field("address", "1 Main St")])
        with Client(server.addr, second["apiKey"]) as b:  # the rotated key goes on
            b.tokenize("user-1", [Field("address", "1 Main St")])
        [revoked] = [k for k in ops.callers().list() if k["keyId"] == first["keyId"]]
        assert revoked.get("revokedAt")
        with pytest.raises(InvalidArgumentError):
            ops.callers().add("nobody")
    with server.client("kyc") as kyc, pytest.raises(PermissionDeniedError):
        kyc.callers().add("kyc")
    with server.app.engine.connect() as conn:
        details = [d for d in conn.execute(select(audit_events.c.detail)).scalars() if d]
        hashes = list(conn.execute(select(api_keys.c.key_hash)).scalars())
    text = " ".join(details)
    assert first["apiKey"] not in text
    assert second["apiKey"] not in text
    assert all(bytes(h).hex() not in text for h in hashes)
    assert f"key {first['keyId']} revoked" in text


def test_the_cli_manages_keys(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PDV_ADDR", server.addr)
    monkeypatch.setenv("PDV_DATA_DIR", str(server.app.settings.data_dir))
    monkeypatch.delenv("PDV_API_KEY", raising=False)
    assert main(["caller", "add", "payment", "--caller", "ops", "--output", "json"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert main(["caller", "rotate-key", "payment", "--caller", "ops"]) == 0
    out = capsys.readouterr()
    assert out.out.strip().startswith("pdv_")
    assert "shown this once" in out.err
    assert main(["caller", "list", "--caller", "ops"]) == 0
    assert added["keyId"] in capsys.readouterr().out
    code = main(["caller", "revoke", "payment", "--key-id", added["keyId"], "--caller", "ops"])
    assert code == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["caller", "revoke", "payment", "--key-id", added["keyId"], "--caller", "ops"]) != 0
    assert main(["caller", "add", "payment", "--caller", "kyc"]) == 4


@pytest.mark.postgres
def test_a_revocation_holds_on_another_replica_within_a_second(
    tmp_path: Path, database_url_postgresql: str
) -> None:
    settings = Settings(
        addr="127.0.0.1:0",
        data_dir=tmp_path / "data",
        database_url=database_url_postgresql,
        retention_sweep_interval=0,
        audit_checkpoint_interval=0,
    )
    one, two = build_app(settings), build_app(settings, primary=False)
    try:
        with running(one) as a, running(two) as b:
            with a.client("ops") as ops:
                added = ops.callers().add("payment")
            tokenize_with(b.addr, added["apiKey"])  # replica b knows the key now
            with a.client("ops") as ops:
                ops.callers().revoke("payment", added["keyId"])
            # The key table refreshes every 30 s on its own; the notice must beat that by far.
            deadline = time.monotonic() + 5
            while True:
                try:
                    tokenize_with(b.addr, added["apiKey"])
                except UnauthenticatedError:
                    break
                assert time.monotonic() < deadline, "replica b still accepts the revoked key"
                time.sleep(0.05)
    finally:
        one.close()
        two.close()

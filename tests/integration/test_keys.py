"""Key administration through the API, on the local key file and on HashiCorp Vault Transit
(the emulator, with the deployed least-privilege policies), and the full service on Transit."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from sqlalchemy import select, update

from pdvault_client import (
    Client,
    DataLossError,
    FailedPreconditionError,
    Field,
    InvalidArgumentError,
    KeyAdmin,
    PermissionDeniedError,
    RetryPolicy,
    UnavailableError,
)
from tests.conftest import RunningServer, Transit, running
from vault.app import build_app
from vault.config import Settings
from vault.domain.types import SubjectId
from vault.storage.tables import audit_events, data_keys

PAN = "4111111111111111"


@pytest.fixture
def vault_settings(settings: Settings, transit: Transit) -> Settings:
    return dataclasses.replace(
        settings, kms="vault", vault_addr=transit.url, vault_token=transit.service_token
    )


@pytest.fixture
def vault_server(vault_settings: Settings) -> Iterator[RunningServer]:
    with running(build_app(vault_settings), close=True) as srv:
        yield srv


def ops(server: RunningServer, vault_token: str | None = None) -> tuple[Client, KeyAdmin]:
    client = server.client("ops")
    return client, client.keys(vault_token=vault_token)


def test_the_service_on_transit_reads_and_writes(vault_server: RunningServer) -> None:
    with vault_server.client("kyc") as kyc, vault_server.client("payment") as payment:
        [tok] = kyc.tokenize("user-42", [Field("card_number", PAN)])
        [got] = payment.detokenize([tok.token], "payment")
    assert got.value == PAN
    with vault_server.app.engine.connect() as conn:
        [row] = conn.execute(select(data_keys)).mappings().all()
    assert row["provider"] == "vault-transit"
    assert bytes(row["wrapped_key"]).startswith(b"vault:v1:")


def test_transit_calls_per_operation(vault_server: RunningServer, transit: Transit) -> None:
    """0 calls for a cached subject; a cold batch costs at most one call."""
    emulator = transit.emulator
    with vault_server.client("kyc") as kyc, vault_server.client("payment") as payment:
        emulator.reset_calls()
        tokens = [
            kyc.tokenize(f"user-{i}", [Field("card_number", PAN)])[0].token for i in range(20)
        ]
        assert emulator.calls["encrypt"] == 20  # one wrap per new subject, nothing else
        assert emulator.calls["decrypt"] == 0

        emulator.reset_calls()
        kyc.tokenize("user-3", [Field("card_expiry", "10/29")])  # a known, cached subject
        payment.detokenize(tokens, "payment")  # all cached
        assert sum(emulator.calls.values()) == 0

        assert vault_server.app.cache is not None
        vault_server.app.cache.clear()  # cold: as after a restart
        emulator.reset_calls()
        results = payment.detokenize(tokens, "payment")
        assert [r.value for r in results] == [PAN] * 20
        assert emulator.calls["decrypt"] == 1
        assert sum(emulator.calls.values()) == 1


def test_detokenize_rides_out_a_short_vault_outage(
    vault_server: RunningServer, transit: Transit
) -> None:
    with vault_server.client("kyc") as kyc:
        [cached] = kyc.tokenize("user-1", [Field("name", "Ann Lee")])
        [cold] = kyc.tokenize("user-2", [Field("name", "Bob Roe")])
    assert vault_server.app.cache is not None
    vault_server.app.cache.forget(SubjectId("user-2"))  # only user-1's key is in memory
    transit.emulator.seal()
    key = vault_server.credentials()["shipping"]
    # One attempt: the server's own words, not a client retry's last gasp near the deadline.
    with Client(vault_server.addr, key, timeout=3.0, retry=RetryPolicy(attempts=1)) as shipping:
        [ok] = shipping.detokenize([cached.token], "product_shipping")
        assert ok.value == "Ann Lee"
        with pytest.raises(UnavailableError, match="sealed"):
            shipping.detokenize([cold.token], "product_shipping")
    transit.emulator.unseal()


def test_rotate_rewrap_trim_on_transit(vault_server: RunningServer, transit: Transit) -> None:
    with vault_server.client("kyc") as kyc:
        tokens = [
            kyc.tokenize(f"user-{i}", [Field("name", f"Name {i}")])[0].token for i in range(7)
        ]
    with vault_server.app.engine.connect() as conn:
        before_rewrap = conn.execute(select(data_keys)).mappings().all()  # a "backup"

    client, admin = ops(vault_server, vault_token=transit.ops_token)
    with client:
        status = admin.status()
        assert (status.latest_version, status.data_keys_by_version) == (1, {1: 7})
        status = admin.rotate()
        assert status.latest_version == 2

        with pytest.raises(FailedPreconditionError, match="rewrap"):
            admin.trim(2)  # v1 still in use

        steps = []
        while True:
            step = admin.rewrap_batch(3)
            steps.append((step.rewrapped, step.remaining))
            if step.remaining == 0:
                break
        assert steps == [(3, 4), (3, 1), (1, 0)]
        assert admin.rewrap_batch(3).rewrapped == 0  # idempotent

        status = admin.trim().status
        assert (status.min_decryption_version, status.min_available_version) == (2, 2)
        assert status.data_keys_by_version == {2: 7}

    assert vault_server.app.cache is not None
    vault_server.app.cache.clear()
    with vault_server.client("shipping") as shipping:
        results = shipping.detokenize(tokens, "product_shipping")
    assert [r.value for r in results] == [f"Name {i}" for i in range(7)]

    # Restore the old copy of the data keys: v1 is retired, so nothing in it decrypts.
    with vault_server.app.engine.begin() as conn:
        for row in before_rewrap:
            conn.execute(
                update(data_keys)
                .where(data_keys.c.subject_id == row["subject_id"])
                .values(kek_version=row["kek_version"], wrapped_key=row["wrapped_key"])
            )
    assert vault_server.app.cache is not None
    vault_server.app.cache.clear()
    with vault_server.client("shipping") as shipping:
        results = shipping.detokenize(tokens, "product_shipping")
    assert all(isinstance(r.error, DataLossError) for r in results)
    # pdv keys status tells a version destroyed on purpose from a wrong key (issue #8 item 12).
    client, admin = ops(vault_server, vault_token=transit.ops_token)
    with client:
        status = admin.status()
    assert status.data_keys_by_version == {1: 7}
    assert status.version_states == {1: "destroyed"}


def test_key_administration_on_the_local_key_file(server: RunningServer) -> None:
    with server.client("kyc") as kyc:
        [tok] = kyc.tokenize("user-1", [Field("name", "Ann Lee")])
    client, admin = ops(server)
    with client:
        assert admin.rotate().latest_version == 2
        step = admin.rewrap_batch(100)
        assert (step.rewrapped, step.remaining, step.target_version) == (1, 0, 2)
        status = admin.trim().status
        assert (status.min_decryption_version, status.min_available_version) == (2, 2)
        assert status.cache is not None
    with server.client("shipping") as shipping:
        [got] = shipping.detokenize([tok.token], "product_shipping")
    assert got.value == "Ann Lee"
    key_file = server.app.settings.effective_key_file.read_text()
    assert '"1"' not in key_file  # version 1's key material is gone from the file
    with server.app.engine.connect() as conn:
        actions = conn.execute(select(audit_events.c.action, audit_events.c.detail)).all()
    assert ("key_rotate", "v1 -> v2") in actions
    assert ("key_rewrap", "1 data keys to v2") in actions


def test_only_operators_administer_keys(server: RunningServer) -> None:
    with server.client("payment") as payment:
        with pytest.raises(PermissionDeniedError, match="may not administer keys"):
            payment.keys().status()
        with pytest.raises(PermissionDeniedError):
            payment.keys().rotate()


def test_transit_rotation_needs_the_operators_vault_token(vault_server: RunningServer) -> None:
    client, admin = ops(vault_server)
    with client, pytest.raises(FailedPreconditionError, match="VAULT_TOKEN"):
        admin.rotate()


def test_the_services_own_token_cannot_rotate(
    vault_server: RunningServer, transit: Transit
) -> None:
    client, admin = ops(vault_server, vault_token=transit.service_token)
    with client, pytest.raises(PermissionDeniedError, match="pdvault-ops"):
        admin.rotate()


def test_rewrap_batch_size_is_validated(server: RunningServer) -> None:
    client, admin = ops(server)
    with client, pytest.raises(InvalidArgumentError, match="batch_size"):
        admin.rewrap_batch(5000)

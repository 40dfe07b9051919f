"""Dual control through a real server (issue #12 section 4), with two operator keys (`ops`,
who asks, and `security`, who decides): a held keys trim approved by the other operator and
carried out; self-approval refused; a rejection; an expired request; a revocation and an
operator's shred held, the subject's own shred not; two replicas approving one request at
once carrying it out once; and `pdv approval` through the real entry point."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from pdvault_client import Client, Field, aio
from pdvault_client.cli import main
from pdvault_client.errors import (
    FailedPreconditionError,
    NotFoundError,
    PdvaultError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from tests.conftest import ROOT, RunningServer, Transit, pdv_env, running
from vault.app import build_app
from vault.config import Settings
from vault.domain.policy_file import default_policy_text
from vault.storage.tables import approval_requests, audit_events

DUAL = """
[dual_control]
required = ["keys_trim", "caller_revoke", "operator_shred"]
expires = "PT2H"
"""


@pytest.fixture
def dual_settings(tmp_path: Path, database_url: str) -> Settings:
    policy = tmp_path / "policy.toml"
    policy.write_text(default_policy_text() + DUAL, encoding="utf-8")
    return Settings(
        addr="127.0.0.1:0",
        data_dir=tmp_path / "data",
        database_url=database_url,
        max_workers=8,
        policy_file=policy,
        retention_sweep_interval=0,
    )


@pytest.fixture
def dual(dual_settings: Settings) -> Iterator[RunningServer]:
    with running(build_app(dual_settings), close=True) as srv:
        yield srv


def held(call: Callable[[], object]) -> tuple[str, str]:
    """The request id and expiry a held call answers with."""
    with pytest.raises(FailedPreconditionError) as raised:
        call()
    error = raised.value
    assert error.reason == "APPROVAL_REQUIRED", error
    return error.metadata["request_id"], error.metadata["expires_at"]


def trim_ready(server: RunningServer) -> None:
    """A subject's data key under v1, then v2 and everything rewrapped: v1 may be trimmed."""
    with server.client("kyc") as kyc:
        kyc.tokenize("user-1", [Field("name", "Ann Lee")])
    rotate_and_rewrap(server)


def rotate_and_rewrap(server: RunningServer) -> None:
    with server.client("ops") as ops:
        ops.keys().rotate()
        while ops.keys().rewrap_batch(100).remaining:
            pass


def audited(server: RunningServer) -> list[tuple[str, str, str, str]]:
    with server.app.engine.connect() as conn:
        rows = conn.execute(
            select(
                audit_events.c.caller,
                audit_events.c.action,
                audit_events.c.outcome,
                audit_events.c.detail,
            ).where(audit_events.c.action.like("approval_%"))
        ).all()
    return [(r.caller, r.action, r.outcome, r.detail or "") for r in rows]


def test_a_held_trim_is_approved_by_the_other_operator_and_carried_out(
    dual: RunningServer,
) -> None:
    trim_ready(dual)
    with dual.client("ops") as ops, dual.client("security") as security:
        request_id, expires = held(lambda: ops.keys().trim())
        status = ops.keys().status()
        assert (status.min_decryption_version, status.latest_version) == (1, 2)  # not yet
        [pending] = security.approvals().list()
        assert pending["requestId"] == request_id
        assert pending["state"] == "APPROVAL_STATE_PENDING"
        assert pending["action"] == "APPROVAL_ACTION_KEYS_TRIM"
        assert pending["requestedBy"] == "ops"
        assert pending["parameters"] == {"min_version": "2"}
        assert pending["expiresAt"].startswith(expires[:16])
        done = security.approvals().approve(request_id)
        assert done["state"] == "APPROVAL_STATE_EXECUTED"
        assert done["decidedBy"] == "security"
        assert done["outcome"] == "destroyed v1"
        status = ops.keys().status()
        assert (status.min_decryption_version, status.min_available_version) == (2, 2)
        with pytest.raises(FailedPreconditionError) as again:
            security.approvals().approve(request_id)
        assert again.value.reason == "APPROVAL_DECIDED"
    trail = audited(dual)
    assert [a[:3] for a in trail] == [
        ("ops", "approval_request", "granted"),
        ("security", "approval_list", "granted"),
        ("security", "approval_approve", "granted"),
        ("ops", "approval_execute", "granted"),
    ]


def test_the_requester_cannot_approve_its_own_request(dual: RunningServer) -> None:
    trim_ready(dual)
    with dual.client("ops") as ops:
        request_id, _ = held(lambda: ops.keys().trim())
        with pytest.raises(PermissionDeniedError) as refused:
            ops.approvals().approve(request_id)
        assert refused.value.reason == "SELF_APPROVAL"
        with pytest.raises(PermissionDeniedError):
            ops.approvals().reject(request_id)
        assert ops.keys().status().min_decryption_version == 1
    with dual.client("kyc") as kyc, pytest.raises(PermissionDeniedError):
        kyc.approvals().approve(request_id)  # no approvals operation
    refusals = [a for a in audited(dual) if a[2] == "refused"]
    assert [(a[0], a[1]) for a in refusals] == [
        ("ops", "approval_approve"),
        ("ops", "approval_reject"),
        ("kyc", "approval_approve"),
    ]


def test_a_rejected_request_is_never_carried_out(dual: RunningServer) -> None:
    trim_ready(dual)
    with dual.client("ops") as ops, dual.client("security") as security:
        request_id, _ = held(lambda: ops.keys().trim())
        rejected = security.approvals().reject(request_id)
        assert rejected["state"] == "APPROVAL_STATE_REJECTED"
        with pytest.raises(FailedPreconditionError) as late:
            security.approvals().approve(request_id)
        assert late.value.reason == "APPROVAL_DECIDED"
        assert ops.keys().status().min_decryption_version == 1
        with pytest.raises(NotFoundError):
            security.approvals().approve("apr_" + "0" * 16)


def test_an_expired_request_cannot_be_approved(dual: RunningServer) -> None:
    trim_ready(dual)
    with dual.client("ops") as ops, dual.client("security") as security:
        request_id, _ = held(lambda: ops.keys().trim())
        # Two hours pass: the request's expiry moved into the past stands for them.
        with dual.app.engine.begin() as conn:
            conn.execute(
                update(approval_requests)
                .where(approval_requests.c.request_id == request_id)
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        with pytest.raises(FailedPreconditionError) as expired:
            security.approvals().approve(request_id)
        assert expired.value.reason == "APPROVAL_EXPIRED"
        [listed] = security.approvals().list()
        assert listed["state"] == "APPROVAL_STATE_EXPIRED"
        assert ops.keys().status().min_decryption_version == 1
    assert ("system:dual-control", "approval_expire", "granted") in [a[:3] for a in audited(dual)]


def test_a_revocation_and_an_operators_shred_are_held_the_subjects_own_shred_is_not(
    dual: RunningServer,
) -> None:
    with dual.client("ops") as ops, dual.client("security") as security:
        added = ops.callers().add("shipping")
        request_id, _ = held(lambda: ops.callers().revoke("shipping", added["keyId"]))
        with Client(dual.addr, added["apiKey"]) as shipping:  # still valid while pending
            shipping.tokenize("user-9", [Field("address", "1 Main St")])
        assert security.approvals().approve(request_id)["state"] == "APPROVAL_STATE_EXECUTED"
        with pytest.raises(UnauthenticatedError), Client(dual.addr, added["apiKey"]) as shipping:
            shipping.tokenize("user-9", [Field("address", "1 Main St")])
        with pytest.raises(NotFoundError):  # no live key: nothing to hold
            ops.callers().revoke("shipping", added["keyId"])

        with dual.client("kyc") as kyc:
            kyc.tokenize("user-1", [Field("name", "Ann Lee")])
            kyc.tokenize("user-2", [Field("name", "Bob Roe")])
        shred_id, _ = held(lambda: ops.subjects().shred("user-1"))
        assert ops.subjects().get("user-1")["subject"]["subject"] == "user-1"  # still there
        own = ops.subjects().shred("user-2", by_subject=True)  # the subject's own flow
        assert own["receipt"]["receiptId"]
        done = security.approvals().approve(shred_id)
        assert done["outcome"].startswith("shredded: receipt ")
        with pytest.raises(NotFoundError):
            ops.subjects().get("user-1")
        [settled] = [a for a in security.approvals().list() if a["requestId"] == shred_id]
        assert list(settled["parameters"]) == ["subject_digest"]
    with dual.app.engine.connect() as conn:
        stored = " ".join(conn.execute(select(approval_requests.c.parameters)).scalars())
    assert "user-1" not in stored
    assert "user-1" not in " ".join(a[3] for a in audited(dual))
    with dual.app.engine.connect() as conn:
        details = list(conn.execute(select(audit_events.c.detail)).scalars())
    assert "requested by the data subject's own flow (no second operator)" in details


def test_two_replicas_approving_one_request_at_once_carry_it_out_once(
    dual: RunningServer, dual_settings: Settings
) -> None:
    trim_ready(dual)
    racers = 6
    with running(build_app(dual_settings, primary=False), close=True) as other:
        addrs = [dual.addr, other.addr]
        key = dual.credentials()["security"]
        for round_ in range(3):
            if round_:
                rotate_and_rewrap(dual)  # a version to trim again
            with dual.client("ops") as ops:
                request_id, _ = held(lambda: ops.keys().trim())
            barrier = threading.Barrier(racers)
            results: list[str] = []

            def approve(
                i: int,
                rid: str = request_id,
                b: threading.Barrier = barrier,
                out: list[str] = results,
            ) -> None:
                with Client(addrs[i % 2], key) as security:
                    b.wait()
                    try:
                        out.append(security.approvals().approve(rid)["state"])
                    except PdvaultError as exc:
                        out.append(exc.reason)

            threads = [threading.Thread(target=approve, args=(i,)) for i in range(racers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(results) == ["APPROVAL_DECIDED"] * (racers - 1) + [
                "APPROVAL_STATE_EXECUTED"
            ]
    executions = [a for a in audited(dual) if a[1] == "approval_execute"]
    assert len(executions) == 3
    assert [a[1] for a in audited(dual)].count("approval_approve") == 3


def test_pdv_approval_through_the_entry_point(
    dual: RunningServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trim_ready(dual)
    monkeypatch.setenv("PDV_ADDR", dual.addr)
    monkeypatch.setenv("PDV_DATA_DIR", str(dual.app.settings.data_dir))
    monkeypatch.delenv("PDV_API_KEY", raising=False)
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    assert main(["keys", "trim", "--caller", "ops"]) == 4
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("FAILED_PRECONDITION: keys_trim needs a second operator's approval")
    request_id = err[0].split("request ")[1].split()[0]
    assert err[1].startswith(f"  next: another operator runs `pdv approval approve {request_id}`")
    assert len(err) == 2

    assert main(["approval", "list", "--caller", "security"]) == 0
    listing = capsys.readouterr().out
    assert request_id in listing
    assert "keys_trim" in listing
    assert "pending" in listing
    assert main(["approval", "approve", request_id, "--caller", "ops"]) == 4
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    assert main(["approval", "approve", request_id, "--caller", "security"]) == 0
    assert capsys.readouterr().out == (
        f"{request_id} (keys_trim requested by ops) executed by security: destroyed v1\n"
    )
    assert main(["approval", "reject", request_id, "--caller", "security"]) == 4
    assert "already executed" in capsys.readouterr().err
    assert main(["approval", "approve", "nonsense", "--caller", "security"]) == 3

    # And as a separate process, the way an operator types it.
    env = pdv_env(
        PDV_ADDR=dual.addr,
        PDV_DATA_DIR=str(dual.app.settings.data_dir),
    )
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pdvault_client.cli", "approval", "list"),
            *("--caller", "security", "--output", "json"),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [listed] = json.loads(done.stdout)
    assert listed["state"] == "APPROVAL_STATE_EXECUTED"
    assert listed["outcome"] == "destroyed v1"


def test_the_asyncio_client_decides_too(dual: RunningServer) -> None:
    trim_ready(dual)
    with dual.client("ops") as ops:
        first, _ = held(lambda: ops.keys().trim())
    keys = dual.credentials()

    async def work() -> None:
        async with aio.Client(dual.addr, keys["security"]) as security:
            [listed] = await security.approvals().list()
            assert listed["requestId"] == first
            rejected = await security.approvals().reject(first)
            assert rejected["state"] == "APPROVAL_STATE_REJECTED"
        async with aio.Client(dual.addr, keys["ops"]) as ops_aio:
            with pytest.raises(FailedPreconditionError) as raised:
                await ops_aio.subjects().shred("user-1")
            assert raised.value.reason == "APPROVAL_REQUIRED"
            own = await ops_aio.subjects().shred("user-1", by_subject=True)
            assert own["receipt"]["receiptId"]

    asyncio.run(work())


def test_on_transit_the_approver_sends_its_own_vault_token(
    dual_settings: Settings, transit: Transit
) -> None:
    settings = dataclasses.replace(
        dual_settings, kms="vault", vault_addr=transit.url, vault_token=transit.service_token
    )
    with running(build_app(settings), close=True) as srv:
        with srv.client("kyc") as kyc:
            kyc.tokenize("user-1", [Field("name", "Ann Lee")])
        with srv.client("ops") as ops:
            ops.keys(vault_token=transit.ops_token).rotate()
            while ops.keys().rewrap_batch(100).remaining:
                pass
            first, _ = held(lambda: ops.keys().trim())  # asking needs no Vault token
        with srv.client("security") as security:
            with pytest.raises(FailedPreconditionError) as refused:
                security.approvals().approve(first)  # without one the step refuses
            assert refused.value.reason == "VAULT_ADMIN_TOKEN_REQUIRED"
            [failed] = security.approvals().list()
            assert failed["state"] == "APPROVAL_STATE_FAILED"
            assert failed["outcome"] == "VAULT_ADMIN_TOKEN_REQUIRED"
            with srv.client("ops") as ops:
                second, _ = held(lambda: ops.keys().trim())
            done = security.approvals(vault_token=transit.ops_token).approve(second)
            assert done["outcome"] == "destroyed v1"
        with srv.client("ops") as ops:
            assert ops.keys().status().min_available_version == 2

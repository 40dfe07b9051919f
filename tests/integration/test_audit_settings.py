"""The audit log's settings, each through `pdv serve` as a user sets it:
PDV_AUDIT_CHECKPOINT_INTERVAL, PDV_AUDIT_CHECKPOINTS, PDV_AUDIT_SIGNING_KEY, PDV_AUDIT_ORIGIN,
PDV_AUDIT_SINK, and PDV_AUDIT_SIGNER=transit with PDV_VAULT_AUDIT_KEY (against the Transit
emulator). No timing assertion: each waits for its outcome, with a bound only so that a
regression fails."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hvac
import pytest

from pdvault_client import Client, Field
from tests.conftest import ROOT, hcl_policy, spawn_serve
from transit_emulator import TransitEmulator
from vault.crypto.notes import parse_checkpoint, parse_verifier_key, verify_note
from vault.domain.merkle import leaf_hash

pytestmark = pytest.mark.slow


@contextmanager
def serve(tmp_path: Path, **env: str) -> Iterator[tuple[str, dict[str, str]]]:
    proc, addr, log = spawn_serve(tmp_path, PDV_PROCESSES="1", **env)
    try:
        creds = json.loads((tmp_path / ".pdvault" / "dev-credentials.json").read_text())
        yield addr, creds
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in log.read_text(), log.read_text()


def eventually(check: Callable[[], bool], bound: float = 30.0) -> None:
    deadline = time.monotonic() + bound
    while not check():
        assert time.monotonic() < deadline, "not within the bound"
        time.sleep(0.1)


def pdv(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PDV_", "VAULT_"))}
    clean["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "clients" / "python")])
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "pdvault_client.cli", *args],
        cwd=tmp_path,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def some_traffic(addr: str, creds: dict[str, str]) -> None:
    with Client(addr, creds["payment"]) as payment:
        [card] = payment.tokenize("user-1", [Field("card_number", "4111111111111111")])
        payment.detokenize([card.token], "payment")


def notes(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["note"] for line in path.read_text().splitlines() if line]


def test_checkpoints_on_schedule_to_the_file_named_signed_by_the_key_named(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    env = {
        "PDV_AUDIT_CHECKPOINT_INTERVAL": "0.5",
        "PDV_AUDIT_CHECKPOINTS": str(outside / "checkpoints.jsonl"),
        "PDV_AUDIT_SIGNING_KEY": str(outside / "signing.key"),
        "PDV_AUDIT_ORIGIN": "pay.example/audit",
    }
    with serve(tmp_path, **env) as (addr, creds):
        some_traffic(addr, creds)
        eventually(lambda: bool(notes(outside / "checkpoints.jsonl")))
    assert (outside / "signing.key").stat().st_mode & 0o777 == 0o600
    key = pdv(tmp_path, "audit", "key", **env)
    assert key.returncode == 0, key.stderr
    verifier = parse_verifier_key(key.stdout.strip())
    assert verifier.name == "pay.example/audit"
    signed = notes(outside / "checkpoints.jsonl")[-1]
    last = parse_checkpoint(verify_note(signed, verifier.name, verifier.public_key))
    assert last.origin == "pay.example/audit"
    assert last.size >= 2
    checked = pdv(tmp_path, "audit", "verify", **env)
    assert checked.returncode == 0, checked.stderr
    assert "verified" in checked.stdout


def test_no_scheduled_checkpoint_with_an_interval_of_zero(tmp_path: Path) -> None:
    env = {"PDV_AUDIT_CHECKPOINT_INTERVAL": "0"}
    with serve(tmp_path, **env) as (addr, creds):
        some_traffic(addr, creds)
        time.sleep(1.0)  # not a timing assertion: nothing may appear at all
    # Not even at shutdown: the interval turns checkpoints off (pdv audit checkpoint signs one).
    assert notes(tmp_path / ".pdvault" / "audit-checkpoints.jsonl") == []
    made = pdv(tmp_path, "audit", "checkpoint", **env)
    assert made.returncode == 0, made.stderr
    assert len(notes(tmp_path / ".pdvault" / "audit-checkpoints.jsonl")) == 1


def test_a_file_sink_receives_every_entry_as_its_canonical_bytes(tmp_path: Path) -> None:
    sink = tmp_path / "siem.jsonl"
    with serve(tmp_path, PDV_AUDIT_SINK=str(sink)) as (addr, creds):
        some_traffic(addr, creds)
        eventually(lambda: sink.exists() and len(sink.read_text().splitlines()) >= 2)
    lines = sink.read_bytes().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(len(lines)))
    tail = pdv(tmp_path, "audit", "tail")
    assert tail.returncode == 0, tail.stderr
    assert tail.stdout.encode().splitlines() == lines
    assert all(len(leaf_hash(line)) == 32 for line in lines)
    assert b"4111111111111111" not in sink.read_bytes()


def test_checkpoints_signed_in_transit(tmp_path: Path) -> None:
    with TransitEmulator(root_token="root") as emulator:
        root: Any = hvac.Client(url=emulator.url, token="root")
        root.secrets.transit.create_key("pdvault", exportable=False)
        root.secrets.transit.create_key("book-audit", key_type="ed25519")
        root.secrets.transit.create_key("pdvault-naming")
        policy = hcl_policy("pdvault-service.hcl")
        policy["transit/sign/book-audit"] = ["update"]
        policy["transit/keys/book-audit"] = ["read"]
        token = emulator.create_token(policy, ttl=3600)
        env = {
            "PDV_KMS": "vault",
            "VAULT_ADDR": emulator.url,
            "VAULT_TOKEN": token,
            "PDV_AUDIT_SIGNER": "transit",
            "PDV_VAULT_AUDIT_KEY": "book-audit",
            "PDV_AUDIT_CHECKPOINT_INTERVAL": "0.5",
        }
        with serve(tmp_path, **env) as (addr, creds):
            some_traffic(addr, creds)
            eventually(lambda: bool(notes(tmp_path / ".pdvault" / "audit-checkpoints.jsonl")))
        key = pdv(tmp_path, "audit", "key", **env)
        assert key.returncode == 0, key.stderr
        public = root.secrets.transit.read_key("book-audit")["data"]["keys"]["1"]["public_key"]
        assert parse_verifier_key(key.stdout.strip()).public_key == base64.b64decode(public)
        checked = pdv(tmp_path, "audit", "verify", **env)
        assert checked.returncode == 0, checked.stderr

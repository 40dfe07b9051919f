"""The audit log as a Merkle log (issue #12 section 3), tried as an operator and as an attacker
with database access would: every request appends gap-free entries; `pdv audit verify` names
the entry changed, removed, reordered or inserted, and a rewrite of the hashes too; a proof
checks with nothing but the entry, the verifier key and RFC 9162; two replicas appending at
once leave no gap and no fork; entries never name a subject by id, and a shredded subject's
entries are linked to no one."""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from pdvault_client import Field
from pdvault_client.cli import main
from tests.conftest import RunningServer, running
from vault.app import build_app
from vault.crypto.notes import parse_checkpoint, parse_verifier_key, verify_note
from vault.domain.merkle import leaf_hash, verify_inclusion
from vault.storage.tables import audit_events

PAN = "4111111111111111"


@pytest.fixture
def pdv_env(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> RunningServer:
    settings = server.app.settings
    monkeypatch.setenv("PDV_ADDR", server.addr)
    monkeypatch.setenv("PDV_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("PDV_DATABASE_URL", settings.effective_database_url)
    monkeypatch.delenv("PDV_API_KEY", raising=False)
    return server


def traffic(server: RunningServer, subject: str = "user-1") -> list[str]:
    with server.client("payment") as payment, server.client("shipping") as shipping:
        [card] = payment.tokenize(subject, [Field("card_number", PAN)])
        payment.detokenize([card.token], "payment", justification="order-7")
        shipping.detokenize([card.token], "product_shipping")  # refused, audited
    return [card.token]


def verify(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, object]]:
    code = main(["audit", "verify", "--output", "json", *extra])
    return code, json.loads(capsys.readouterr().out)


def checkpoint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "checkpoint"]) == 0
    capsys.readouterr()


def test_entries_have_places_hashes_and_verify(
    pdv_env: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    traffic(pdv_env)
    checkpoint(capsys)
    code, answer = verify(capsys)
    assert code == 0, answer
    assert answer["ok"] is True
    assert answer["entries"] == 3
    with pdv_env.app.engine.connect() as conn:
        rows = conn.execute(select(audit_events).order_by(audit_events.c.seq)).all()
    assert [r.seq for r in rows] == [0, 1, 2]
    assert all(len(r.leaf_hash) == 32 for r in rows)
    assert all(r.policy_version == pdv_env.app.policy.version for r in rows)
    # No subject id anywhere; the refusal names no subject at all.
    assert all(r.subject_id is None or r.subject_id.startswith("ref:") for r in rows)
    assert [r.outcome for r in rows if r.subject_id is None] == ["refused"]


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        ("UPDATE audit_events SET outcome = 'refused' WHERE seq = 1", "entry 1 was changed"),
        ("UPDATE audit_events SET justification = 'order-8' WHERE seq = 1", "entry 1 was changed"),
        ("DELETE FROM audit_events WHERE seq = 1", "entry 1 is missing"),
        ("UPDATE audit_events SET seq = seq + 100 WHERE seq = 1", "entry 1 is missing"),
        (
            "UPDATE audit_events SET seq = CASE seq WHEN 0 THEN 1 WHEN 1 THEN 0 END "
            "WHERE seq IN (0, 1)",
            "entry 0 was changed",
        ),
    ],
)
def test_verify_names_the_entry_a_database_user_changed(
    pdv_env: RunningServer, capsys: pytest.CaptureFixture[str], tamper: str, named: str
) -> None:
    traffic(pdv_env)
    checkpoint(capsys)
    with pdv_env.app.engine.begin() as conn:
        if "CASE seq" in tamper:  # swap two places (through a free one: seq is unique)
            conn.execute(text("UPDATE audit_events SET seq = -1 WHERE seq = 0"))
            conn.execute(text("UPDATE audit_events SET seq = 0 WHERE seq = 1"))
            conn.execute(text("UPDATE audit_events SET seq = 1 WHERE seq = -1"))
        else:
            conn.execute(text(tamper))
    code, answer = verify(capsys)
    assert code == 1
    problems = answer["problems"]
    assert isinstance(problems, list)
    assert named in problems[0]["problem"], problems


def test_a_rewrite_of_the_hashes_is_caught_by_the_checkpoint(
    pdv_env: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """An attacker who changes an entry and recomputes its leaf hash (and could recompute the
    head) still cannot sign a checkpoint: verify names the range since the last good one."""
    from vault.domain.audit_log import entry_bytes

    traffic(pdv_env)
    checkpoint(capsys)
    [entry] = pdv_env.app.stores.audit.entries(1, 1)
    forged = dataclasses.replace(entry.event, justification="nothing to see")
    with pdv_env.app.engine.begin() as conn:
        conn.execute(
            update(audit_events)
            .where(audit_events.c.seq == 1)
            .values(
                justification="nothing to see",
                leaf_hash=leaf_hash(entry_bytes(forged, 1, entry.stored_subject)),
            )
        )
    code, answer = verify(capsys)
    assert code == 1
    problems = answer["problems"]
    assert isinstance(problems, list)
    assert "does not match the checkpoint of size 3" in problems[0]["problem"]
    assert "from 0 to 2" in problems[0]["problem"]


def test_removing_the_end_of_the_log_is_caught_by_the_file_outside_the_database(
    pdv_env: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    traffic(pdv_env)
    checkpoint(capsys)
    with pdv_env.app.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq = 2"))
        conn.execute(text("DELETE FROM audit_checkpoints"))
        conn.execute(text("UPDATE audit_head SET size = 2"))
    code, answer = verify(capsys)
    assert code == 1
    problems = answer["problems"]
    assert isinstance(problems, list)
    assert "beyond the 2 entries" in problems[-1]["problem"]


def test_a_forged_checkpoint_is_refused(
    pdv_env: RunningServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    traffic(pdv_env)
    checkpoint(capsys)
    forged = tmp_path / "forged.jsonl"
    from vault.crypto.notes import format_checkpoint, generate_signer, parse_signer_key, sign_note

    signer, _verifier = generate_signer("pdvault.local/audit")
    key = parse_signer_key(signer)
    note = sign_note(
        format_checkpoint("pdvault.local/audit", 3, b"\x00" * 32), key.name, key.private_key
    )
    forged.write_text(json.dumps({"size": 3, "note": note}) + "\n")
    code, answer = verify(capsys, "--checkpoints", str(forged))
    assert code == 1
    problems = answer["problems"]
    assert isinstance(problems, list)
    assert "not signed by the verifier key" in problems[0]["problem"]


def test_a_proof_checks_with_the_entry_the_key_and_rfc_9162_alone(
    pdv_env: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    traffic(pdv_env)
    checkpoint(capsys)
    assert main(["audit", "key"]) == 0
    verifier = parse_verifier_key(capsys.readouterr().out.strip())
    assert main(["audit", "proof", "1", "--output", "json"]) == 0
    proof = json.loads(capsys.readouterr().out)
    signed = parse_checkpoint(verify_note(proof["checkpoint"], verifier.name, verifier.public_key))
    entry = proof["entry"].encode("utf-8")
    assert json.loads(entry)["seq"] == 1
    assert base64.b64decode(proof["leaf_hash"]) == leaf_hash(entry)
    assert verify_inclusion(
        leaf_hash(entry),
        1,
        signed.size,
        [base64.b64decode(h) for h in proof["proof"]],
        signed.root,
    )
    # The same proof does not prove a changed entry.
    changed = entry.replace(b'"order-7"', b'"order-8"')
    assert not verify_inclusion(
        leaf_hash(changed),
        1,
        signed.size,
        [base64.b64decode(h) for h in proof["proof"]],
        signed.root,
    )


def test_tail_prints_the_bytes_the_hashes_cover(
    pdv_env: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    traffic(pdv_env)
    assert main(["audit", "tail", "--from", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2]
    stored = pdv_env.app.stores.audit.entries(1, 2)
    assert [leaf_hash(line.encode()) for line in lines] == [e.leaf_hash for e in stored]


def test_the_export_finds_its_entries_and_a_shred_leaves_them_linked_to_no_one(
    pdv_env: RunningServer,
) -> None:
    [card] = traffic(pdv_env)
    with pdv_env.client("ops") as ops:
        history = ops.subjects().export("user-1")["accessHistory"]
        assert len(history) == 3
        ops.subjects().shred("user-1")
    with pdv_env.app.engine.connect() as conn:
        named = set(
            conn.execute(
                select(audit_events.c.subject_id).where(audit_events.c.token == card)
            ).scalars()
        )
    # The entries keep their keyed digest; the key that made it is destroyed: no one can
    # compute it again from the id, and no row was rewritten.
    assert len(named - {None}) == 1
    assert next(iter(named - {None})).startswith("ref:")


@pytest.fixture
def pg_settings(tmp_path: Path, database_url_postgresql: str) -> object:
    from vault.config import Settings

    return Settings(
        addr="127.0.0.1:0",
        data_dir=tmp_path / "data",
        database_url=database_url_postgresql,
        max_workers=8,
        retention_sweep_interval=0,
        audit_checkpoint_interval=0,
    )


@pytest.mark.postgres
def test_replicas_share_one_gap_free_log(pg_settings: object) -> None:
    from vault.config import Settings

    assert isinstance(pg_settings, Settings)
    one, two = build_app(pg_settings), build_app(pg_settings, primary=False)
    try:
        with running(one) as a, running(two) as b:

            def work(server: RunningServer, n: int) -> None:
                with server.client("payment") as payment:
                    for i in range(15):
                        payment.tokenize(f"user-{n}-{i}", [Field("card_number", PAN)])

            threads = [
                threading.Thread(target=work, args=(srv, n)) for n, srv in enumerate([a, b, a, b])
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        seqs = [e.event.seq for e in one.stores.audit.entries(0, 1000)]
        assert seqs == list(range(60))
        assert one.checkpoints is not None
        one.checkpoints.checkpoint()
        from vault.kms.checkpoints import verify_audit

        result = verify_audit(one.stores.audit, one.checkpoints.verifier, [])
        assert result.ok, result.problems
        assert result.entries == 60
    finally:
        one.close()
        two.close()

"""The data subject's lifecycle over gRPC: stop and resume, crypto-shred (with restored backups),
export, correction, consent and legal bases. On SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from pdvault_client import (
    DataLossError,
    FailedPreconditionError,
    Field,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
)
from tests.conftest import RunningServer, running
from vault.app import build_app
from vault.domain.naming import unkeyed_subject_digest
from vault.domain.validation import luhn_valid
from vault.storage.tables import (
    audit_events,
    consents,
    data_keys,
    idempotency_keys,
    subjects,
    token_values,
)

PAN = "4111111111111111"
SNAPSHOT_TABLES = (subjects, data_keys, token_values)


def tokenize(server: RunningServer, subject: str, *fields: Field) -> list[str]:
    with server.client("kyc") as kyc:
        return [t.token for t in kyc.tokenize(subject, list(fields))]


def snapshot(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    with engine.connect() as conn:
        return {
            t.name: [dict(r) for r in conn.execute(select(t)).mappings()] for t in SNAPSHOT_TABLES
        }


def restore(engine: Engine, snap: dict[str, list[dict[str, Any]]]) -> None:
    """Put rows from an old copy back, as a restored backup would."""
    with engine.begin() as conn:
        for t in SNAPSHOT_TABLES:
            for row in snap[t.name]:
                if (
                    conn.execute(
                        select(t).filter_by(
                            **{t.primary_key.columns[0].name: row[t.primary_key.columns[0].name]}
                        )
                    ).first()
                    is None
                ):
                    conn.execute(insert(t).values(**row))


def restart(server: RunningServer, **changes: Any) -> Iterator[RunningServer]:
    """Another start of pdvault on the same data, as after a restore (a one-item loop)."""
    with running(build_app(dataclasses.replace(server.app.settings, **changes)), close=True) as srv:
        yield srv


# -- stop and resume ------------------------------------------------------------------------------


def test_a_stopped_account_keeps_its_data_but_refuses_use(server: RunningServer) -> None:
    [card] = tokenize(server, "user-1", Field("card_number", PAN))
    with server.client("ops") as ops:
        stopped = ops.subjects().stop("user-1")
    assert stopped["subject"]["state"] == "SUBJECT_STATE_STOPPED"

    with server.client("kyc") as kyc, pytest.raises(FailedPreconditionError) as err:
        kyc.tokenize("user-1", [Field("name", "Ann Lee")])
    assert err.value.reason == "SUBJECT_STOPPED"

    with server.client("payment") as payment:
        [paid] = payment.detokenize([card], "payment")
        [fraud] = payment.detokenize([card], "fraud_prevention")
    assert isinstance(paid.error, FailedPreconditionError)  # one code per reason (#10)
    assert paid.error.reason == "SUBJECT_STOPPED"
    assert "fraud_prevention" in paid.error.message
    assert fraud.value == PAN

    with server.client("ops") as ops:
        ops.subjects().resume("user-1")
    with server.client("payment") as payment:
        [again] = payment.detokenize([card], "payment")
    assert again.value == PAN
    with server.app.engine.connect() as conn:
        actions = conn.execute(select(audit_events.c.action)).scalars().all()
    assert "subject_stop" in actions
    assert "subject_resume" in actions


# -- shred ----------------------------------------------------------------------------------------


def test_shred_destroys_everything_and_tokens_answer_deleted(server: RunningServer) -> None:
    card, name = tokenize(server, "user-42", Field("card_number", PAN), Field("name", "Jane Doe"))
    with server.client("payment") as payment:
        payment.detokenize([card], "payment")  # a read, so the key is cached and audited
    with server.client("ops") as ops:
        ops.subjects().consent("user-42", "third_party_provision", True)
        receipt = ops.subjects().shred("user-42")["receipt"]
        again = ops.subjects().shred("user-42")["receipt"]
    assert again["receiptId"] == receipt["receiptId"]  # idempotent
    keyed = server.app.database.names.digest("user-42")
    assert receipt["subjectDigest"] == keyed  # keyed by the naming secret
    assert keyed != unkeyed_subject_digest("user-42")
    assert receipt["valuesDestroyed"] == 2  # numbers, not ProtoJSON's int64 strings
    assert receipt["dataKeysDestroyed"] == 1
    assert receipt["shreddedBy"] == "ops"
    assert "NIST SP 800-88" in receipt["method"]
    assert "user-42" not in json.dumps(receipt)

    with server.client("payment") as payment:
        [gone, other] = payment.detokenize([card, name], "payment")
    assert isinstance(gone.error, NotFoundError)
    assert gone.error.reason == "SUBJECT_DELETED"
    assert gone.value is None
    assert other.error is not None  # name is readable for payment too: also deleted
    with server.client("kyc") as kyc, pytest.raises(NotFoundError) as err:
        kyc.tokenize("user-42", [Field("name", "Jane Doe")])  # one code per reason (#10)
    assert err.value.reason == "SUBJECT_DELETED"
    with server.client("shipping") as shipping:
        [refused] = shipping.detokenize([card], "product_shipping")
    assert refused.error is not None
    assert refused.error.reason == "TOKEN_REFUSED"  # shipping could never read a card

    with server.app.engine.connect() as conn:
        for table in (subjects, data_keys, token_values, consents, idempotency_keys):
            assert conn.execute(select(table)).all() == [], table.name
        audit_subjects = set(conn.execute(select(audit_events.c.subject_id)).scalars())
    assert "user-42" not in audit_subjects
    assert f"hmac:{keyed}" in audit_subjects
    assert f"sha256:{unkeyed_subject_digest('user-42')}" not in audit_subjects
    assert server.app.cache is not None
    assert server.app.cache.stats().entries == 0
    log = server.app.settings.effective_shred_log.read_text()
    assert keyed in log
    assert unkeyed_subject_digest("user-42") not in log
    assert "user-42" not in log


def test_shred_of_an_unknown_subject_is_not_found(server: RunningServer) -> None:
    with server.client("ops") as ops, pytest.raises(NotFoundError, match="no data subject"):
        ops.subjects().shred("nobody")


def test_a_restored_backup_forgets_shredded_subjects_again(server: RunningServer) -> None:
    [card] = tokenize(server, "user-7", Field("card_number", PAN))
    [kept] = tokenize(server, "user-8", Field("card_number", PAN))
    old = snapshot(server.app.engine)  # the nightly backup
    with server.client("ops") as ops:
        ops.subjects().shred("user-7")
    restore(server.app.engine, old)  # the database is restored from that backup
    with server.app.engine.connect() as conn:
        assert conn.execute(select(subjects).filter_by(subject_id="user-7")).first() is not None

    for replica in restart(server):  # start-up re-applies the shred log
        with replica.client("payment") as payment:
            gone, alive = payment.detokenize([card, kept], "payment")
        assert gone.error is not None
        assert gone.error.reason == "SUBJECT_DELETED"
        assert alive.value == PAN
        with replica.app.engine.connect() as conn:
            assert conn.execute(select(subjects).filter_by(subject_id="user-7")).first() is None


def test_after_rotate_rewrap_trim_an_old_copy_cannot_be_decrypted(
    server: RunningServer,
) -> None:
    """Cryptographic erasure of backups: every copy of the key wrapping the data key is gone."""
    [card] = tokenize(server, "user-9", Field("card_number", PAN))
    old = snapshot(server.app.engine)
    with server.client("ops") as ops:
        ops.subjects().shred("user-9")
        keys = ops.keys()
        keys.rotate()
        while keys.rewrap_batch(100).next_page_token:
            pass
        keys.trim()
    # An attacker restores the old copy somewhere the shred log does not reach.
    restore(server.app.engine, old)
    for replica in restart(server, shred_log=server.app.settings.data_dir / "empty.jsonl"):
        with replica.client("payment") as payment:
            [got] = payment.detokenize([card], "payment")
        assert isinstance(got.error, DataLossError)
        assert got.value is None


# -- export ---------------------------------------------------------------------------------------


def test_export_holds_everything_and_who_read_it(server: RunningServer) -> None:
    card, doc = tokenize(
        server, "user-5", Field("card_number", PAN), Field("attachment", b"\x00scan")
    )
    with server.client("payment") as payment:
        payment.detokenize([card], "payment", justification="order-77")
    with server.client("shipping") as shipping:
        shipping.detokenize([card], "product_shipping")  # refused, and recorded as such
    with server.client("ops") as ops:
        ops.subjects().consent("user-5", "advertising", False)
        export = ops.subjects().export("user-5")
    values = {v["token"]: v for v in export["values"]}
    assert values[card]["value"] == {"text": PAN}
    assert values[card]["category"] == "card_number"
    assert values[doc]["value"] == {"binary": "AHNjYW4="}
    # A withdrawal prints as one: `granted: false`, not a consent without its answer.
    assert export["subject"]["consents"] == [{"purpose": "advertising", "granted": False}]
    reads = [
        (a["caller"], a["outcome"], a["purpose"], a["justification"])
        for a in export["accessHistory"]
        if a["action"] == "detokenize"
    ]
    assert reads == [
        ("payment", "granted", "payment", "order-77"),
        ("shipping", "refused", "product_shipping", ""),  # defaults are printed too
    ]
    with server.app.engine.connect() as conn:
        assert "subject_export" in conn.execute(select(audit_events.c.action)).scalars().all()


def test_only_operators_manage_subjects(server: RunningServer) -> None:
    tokenize(server, "user-1", Field("name", "Ann Lee"))
    with server.client("payment") as payment, pytest.raises(PermissionDeniedError):
        payment.subjects().export("user-1")
    with server.client("ops") as ops, pytest.raises(InvalidArgumentError):
        ops.subjects().stop("not a subject!")


# -- correction -----------------------------------------------------------------------------------


def test_correction_keeps_the_token_and_replaces_the_value(server: RunningServer) -> None:
    [address] = tokenize(server, "user-3", Field("address", "1 Old Street"))
    with server.app.engine.connect() as conn:
        before = conn.execute(select(token_values.c.ciphertext)).scalar_one()
    with server.client("ops") as ops:
        ops.subjects().correct(address, "2 New Street")
        with pytest.raises(InvalidArgumentError):
            ops.subjects().correct(address, " leading space")
    with server.client("shipping") as shipping:
        [got] = shipping.detokenize([address], "product_shipping")
    assert got.value == "2 New Street"
    with server.app.engine.connect() as conn:
        after = conn.execute(select(token_values.c.ciphertext)).scalar_one()
    assert after != before
    with server.client("support") as support, pytest.raises(PermissionDeniedError):
        support.subjects().correct(address, "3 Other Street")  # may not store addresses
    # Issue #8 item 11: correction is a lifecycle operation. A caller that may store addresses
    # may still not overwrite a subject's address.
    with server.client("shipping") as shipping, pytest.raises(PermissionDeniedError) as err:
        shipping.subjects().correct(address, "4 Shipping Street")
    assert err.value.metadata["rule"] == "caller:shipping:operations"
    with server.client("shipping") as shipping:
        [got] = shipping.detokenize([address], "product_shipping")
    assert got.value == "2 New Street"


def test_a_stopped_subject_is_not_corrected(server: RunningServer) -> None:
    [address] = tokenize(server, "user-3b", Field("address", "1 Old Street"))
    with server.client("ops") as ops:
        ops.subjects().stop("user-3b")
        with pytest.raises(FailedPreconditionError) as err:
            ops.subjects().correct(address, "2 New Street")
        assert err.value.reason == "SUBJECT_STOPPED"
        ops.subjects().resume("user-3b")
        ops.subjects().correct(address, "2 New Street")


def test_correction_refuses_what_is_not_a_token(server: RunningServer) -> None:
    with server.client("ops") as ops:
        for bad in ("x" * 74, "tok_\x00" + "a" * 25, PAN + "0"):
            with pytest.raises(InvalidArgumentError) as err:
                ops.subjects().correct(bad, "2 New Street")
            assert err.value.violations[0].rule == "token.syntax"
        with pytest.raises(PermissionDeniedError):
            ops.subjects().correct(PAN, "2 New Street")  # card-shaped, but no such token
    with server.app.engine.connect() as conn:
        audited = set(conn.execute(select(audit_events.c.token)).scalars())
    assert PAN not in audited
    assert "************" + PAN[-4:] in audited


# -- consent and legal bases ----------------------------------------------------------------------


def test_consent_bound_provision_and_its_legal_exceptions(server: RunningServer) -> None:
    [name] = tokenize(server, "user-6", Field("name", "Ann Lee"))
    with server.client("legal") as legal:
        [refused] = legal.detokenize([name], "third_party_provision")
        assert refused.error is not None
        assert refused.error.reason == "CONSENT_REQUIRED"
        [lawful] = legal.detokenize(
            [name],
            "third_party_provision",
            legal_basis="law_or_regulation",
            justification="court-order-12",
        )
        assert lawful.value == "Ann Lee"
    with server.client("ops") as ops:
        ops.subjects().consent("user-6", "third_party_provision", True)
    with server.client("legal") as legal:
        [given] = legal.detokenize([name], "third_party_provision")
    assert given.value == "Ann Lee"
    with server.app.engine.connect() as conn:
        bases = conn.execute(select(audit_events.c.legal_basis, audit_events.c.rule)).all()
    assert (
        "law_or_regulation",
        "purpose:third_party_provision:legal_basis:law_or_regulation",
    ) in bases


def test_withdrawal_stops_a_purpose_for_one_subject(server: RunningServer) -> None:
    [a] = tokenize(server, "user-a", Field("card_number", PAN))
    [b] = tokenize(server, "user-b", Field("card_number", PAN))
    with server.client("ops") as ops:
        ops.subjects().consent("user-a", "payment", False)
    with server.client("payment") as payment:
        got_a, got_b = payment.detokenize([a, b], "payment")
    assert got_a.error is not None
    assert got_a.error.reason == "CONSENT_WITHDRAWN"
    assert got_b.value == PAN
    with server.client("ops") as ops:
        shown = ops.subjects().consent("user-a", "payment", True)
    assert shown["subject"]["consents"] == [{"purpose": "payment", "granted": True}]


def test_a_legal_basis_reads_a_stopped_account(server: RunningServer) -> None:
    [name] = tokenize(server, "user-s", Field("name", "Ann Lee"))
    with server.client("ops") as ops:
        ops.subjects().stop("user-s")
    with server.client("legal") as legal:
        [got] = legal.detokenize([name], "third_party_provision", legal_basis="public_function")
    assert got.value == "Ann Lee"


def test_card_numbers_in_justifications_are_masked_in_the_audit(server: RunningServer) -> None:
    """Issue #8 item 16: whatever the separators; an order number passing Luhn without an
    issuer's prefix is kept as it is."""
    order = "9" * 15 + "5"  # passes Luhn; 9 is no card issuer's prefix
    assert luhn_valid(order)
    spaced = ["4111.1111.1111.1111", "4111_1111/1111|1111", "4111+1111 1111-1111", f"card {PAN}"]
    with server.client("payment") as payment:
        for text in [*spaced, f"order {order}"]:
            payment.detokenize(["tok_" + "a" * 26], "payment", justification=text)
    with server.app.engine.connect() as conn:
        kept = list(conn.execute(select(audit_events.c.justification)).scalars())
    for j in kept:
        assert PAN not in "".join(ch for ch in j or "" if ch.isdigit())
    assert "****.****.****.1111" in kept
    assert "****_****/****|1111" in kept
    assert f"order {order}" in kept

"""The use cases on the in-memory storage adapter: the domain's rules, without a database.

What the database adds (locks, transactions, retries) is the contract suites' business; here
the rules of tokenize, detokenize, the lifecycle and key administration run in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import ATTACHMENT_CATEGORY
from vault.crypto.aead import AesGcmCipher
from vault.domain.context import RequestContext
from vault.domain.keys import KeyAdministration
from vault.domain.lifecycle import SubjectAdministration
from vault.domain.policy_file import default_policy_text, parse_policy
from vault.domain.service import FieldInput, TokenService
from vault.domain.stores import Stores
from vault.domain.types import CallerName, LegalBasis, PlainValue, TokenFormat
from vault.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Reason,
    ResourceExhausted,
)
from vault.kms.local import LocalKeyFileProvider
from vault.kms.shred_log import FileShredLog
from vault.storage.memory import MEMORY_NAMES, memory_stores

POLICY = parse_policy(default_policy_text() + ATTACHMENT_CATEGORY)  # with a binary category
PAN = "4111111111111111"


def ctx(caller: str) -> RequestContext:
    return RequestContext(CallerName(caller))


@dataclass
class Domain:
    stores: Stores
    tokens: TokenService
    subjects: SubjectAdministration
    keys: KeyAdministration
    now: list[datetime]


@pytest.fixture
def domain(tmp_path: Path) -> Domain:
    stores = memory_stores()
    now = [datetime(2026, 11, 29, 12, 0, tzinfo=UTC)]
    keys = LocalKeyFileProvider(tmp_path / "kek.json")
    cipher = AesGcmCipher()
    return Domain(
        stores,
        TokenService(
            policy=POLICY,
            values=stores.values,
            subjects=stores.subjects,
            idempotency=stores.idempotency,
            audit=stores.audit,
            keys=keys,
            cipher=cipher,
            clock=lambda: now[0],
        ),
        SubjectAdministration(
            policy=POLICY,
            values=stores.values,
            subjects=stores.subjects,
            audit=stores.audit,
            keys=keys,
            cipher=cipher,
            shred_log=FileShredLog(tmp_path / "shred-log.jsonl", MEMORY_NAMES),
            names=MEMORY_NAMES,
            clock=lambda: now[0],
        ),
        KeyAdministration(
            policy=POLICY,
            inventory=stores.keys,
            audit=stores.audit,
            keys=keys,
            clock=lambda: now[0],
        ),
        now,
    )


def field(category: str, text: str, card: bool = False) -> FieldInput:
    fmt = TokenFormat.CARD_NUMBER if card else TokenFormat.OPAQUE
    return FieldInput(category, PlainValue.text(text), fmt)


def test_tokenize_then_detokenize_for_a_purpose(domain: Domain) -> None:
    [card] = domain.tokens.tokenize(ctx("kyc"), "u1", [field("card_number", PAN, card=True)])
    assert card.token != PAN
    assert card.token.endswith("1111")
    [paid] = domain.tokens.detokenize(ctx("payment"), [card.token], "payment")
    assert paid.value is not None
    assert paid.value.data.reveal_text() == PAN
    [masked] = domain.tokens.detokenize(ctx("support"), [card.token], "customer_support")
    assert masked.masked == "************1111"
    [refused] = domain.tokens.detokenize(ctx("shipping"), [card.token], "product_shipping")
    assert isinstance(refused.error, PermissionDenied)
    assert refused.error.reason is Reason.TOKEN_REFUSED
    assert [e.outcome.value for e in domain.stores.audit.of_subject([], [card.token])] == [
        "granted",
        "granted",
        "granted",
        "refused",
    ]


def test_a_retried_request_id_returns_the_first_answer(domain: Domain) -> None:
    rid = "7D5B8A3E-4F3C-4A43-9A5E-3B8D2F1F0C11"
    first = domain.tokens.tokenize(ctx("kyc"), "u1", [field("name", "Ann")], rid)
    again = domain.tokens.tokenize(ctx("kyc"), "u1", [field("name", "Ann")], rid.lower())
    assert again == first  # ids compare as UUIDs
    with pytest.raises(InvalidArgument) as err:
        domain.tokens.tokenize(ctx("kyc"), "u1", [field("name", "Bob")], rid)
    assert err.value.violations[0].rule == "request_id.reused"
    domain.now[0] += timedelta(hours=25)  # past the retention: a new request
    assert domain.tokens.tokenize(ctx("kyc"), "u1", [field("name", "Bob")], rid) != first


def test_a_shred_destroys_the_values_and_retires_the_id(domain: Domain) -> None:
    [name] = domain.tokens.tokenize(ctx("kyc"), "u1", [field("name", "Ann Lee")])
    receipt = domain.subjects.shred(ctx("ops"), "u1")
    assert (receipt.values_destroyed, receipt.data_keys_destroyed) == (1, 1)
    assert domain.subjects.shred(ctx("ops"), "u1") == receipt  # a repeat: unchanged
    [gone] = domain.tokens.detokenize(ctx("shipping"), [name.token], "product_shipping")
    assert isinstance(gone.error, NotFound)
    assert gone.error.reason is Reason.SUBJECT_DELETED
    with pytest.raises(NotFound) as err:
        domain.tokens.tokenize(ctx("kyc"), "u1", [field("name", "Ann")])
    assert err.value.reason is Reason.SUBJECT_DELETED


def test_stop_resume_and_the_purposes_allowed_on_a_stopped_account(domain: Domain) -> None:
    [card] = domain.tokens.tokenize(ctx("kyc"), "u1", [field("card_number", PAN)])
    domain.subjects.stop(ctx("ops"), "u1")
    [refused] = domain.tokens.detokenize(ctx("payment"), [card.token], "payment")
    assert isinstance(refused.error, FailedPrecondition)
    [fraud] = domain.tokens.detokenize(ctx("payment"), [card.token], "fraud_prevention")
    assert fraud.error is None
    with pytest.raises(FailedPrecondition):
        domain.tokens.tokenize(ctx("kyc"), "u1", [field("name", "Ann")])
    domain.subjects.resume(ctx("ops"), "u1")
    [paid] = domain.tokens.detokenize(ctx("payment"), [card.token], "payment")
    assert paid.error is None


def test_a_legal_basis_only_where_the_policy_allows_it(domain: Domain) -> None:
    [name] = domain.tokens.tokenize(ctx("kyc"), "u1", [field("name", "Ann Lee")])
    law = LegalBasis.LAW_OR_REGULATION
    with pytest.raises(PermissionDenied) as err:
        domain.tokens.detokenize(ctx("payment"), [name.token], "payment", legal_basis=law)
    assert err.value.reason is Reason.LEGAL_BASIS_REFUSED
    [provided] = domain.tokens.detokenize(
        ctx("legal"), [name.token], "third_party_provision", legal_basis=law
    )
    assert provided.error is None


def test_correction_and_export(domain: Domain) -> None:
    [address] = domain.tokens.tokenize(ctx("kyc"), "u1", [field("address", "1 Old Street")])
    with pytest.raises(PermissionDenied):
        domain.subjects.correct(ctx("shipping"), address.token, PlainValue.text("2 New Street"))
    domain.subjects.correct(ctx("ops"), address.token, PlainValue.text("2 New Street"))
    export = domain.subjects.export(ctx("ops"), "u1")
    [exported] = export.values
    assert exported.value is not None
    assert exported.value.data.reveal_text() == "2 New Street"
    assert {e.action.value for e in export.access_history} >= {"tokenize", "value_correct"}


def test_a_response_too_large_is_refused_before_decrypting(domain: Domain) -> None:
    doc = "x" * (512 * 1024)
    [big] = domain.tokens.tokenize(ctx("kyc"), "u1", [field("attachment", doc)])
    with pytest.raises(ResourceExhausted) as err:
        domain.tokens.detokenize(ctx("kyc"), [big.token] * 20, "identity_verification")
    assert err.value.reason is Reason.RESPONSE_TOO_LARGE


def test_key_rotation_rewrap_and_trim(domain: Domain) -> None:
    domain.tokens.tokenize(ctx("kyc"), "u1", [field("name", "Ann")])
    ops = ctx("ops")
    assert domain.keys.rotate(ops, None).kek.latest_version == 2
    nothing = domain.keys.trim(ops, None, None)
    assert (nothing.destroyed, nothing.still_in_use) == ((), {1: 1})
    assert domain.keys.rewrap(ops, 100).rewrapped == 1
    done = domain.keys.trim(ops, None, None)
    assert done.destroyed == (1,)
    assert done.report.data_keys_by_version == {2: 1}

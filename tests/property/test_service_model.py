"""A stateful model of tokenize / detokenize / row swaps, checked by Hypothesis on SQLite."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule
from sqlalchemy import select, update

from vault.crypto.aead import AesGcmCipher
from vault.domain.context import RequestContext
from vault.domain.policy_file import load_policy
from vault.domain.service import FieldInput, TokenService
from vault.domain.types import CallerName, Category, PlainValue, Purpose, TokenFormat, View
from vault.errors import IntegrityError, PermissionDenied, Reason
from vault.kms.local import LocalKeyFileProvider
from vault.storage import migrate
from vault.storage.memory import MEMORY_NAMES
from vault.storage.sql import Database, make_engine, sql_stores
from vault.storage.tables import token_values

POLICY = load_policy()
SUBJECTS = st.sampled_from(["user-1", "user-2", "user-3"])
VALUES = {
    "name": st.from_regex(r"[A-Z][a-z]{1,8} [A-Z][a-z]{1,8}", fullmatch=True),
    "email": st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.(com|jp)", fullmatch=True),
    "card_number": st.sampled_from(["4111111111111111", "5555555555554444", "378282246310005"]),
    "address": st.from_regex(r"[1-9]-[1-9] [A-Z][a-z]{2,8}", fullmatch=True),
}
CALLERS = st.sampled_from(sorted(POLICY.callers))


def as_caller(name: str) -> RequestContext:
    return RequestContext(CallerName(name))


class VaultModel(RuleBasedStateMachine):
    tokens = Bundle("tokens")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        root = Path(self.tmp.name)
        self.engine = make_engine(f"sqlite:///{root / 'db.sqlite'}")
        migrate.upgrade(self.engine)
        stores = sql_stores(Database(self.engine, names=MEMORY_NAMES), group_commit=False)
        self.service = TokenService(
            policy=POLICY,
            values=stores.values,
            subjects=stores.subjects,
            idempotency=stores.idempotency,
            audit=stores.audit,
            keys=LocalKeyFileProvider(root / "kek.json"),
            cipher=AesGcmCipher(),
            clock=lambda: datetime.now(UTC),
        )
        self.model: dict[str, tuple[str, str, str]] = {}
        # Whose ciphertext each row holds now (itself, until rows are swapped).
        self.holds: dict[str, str] = {}

    def teardown(self) -> None:
        self.engine.dispose()
        self.tmp.cleanup()

    @rule(target=tokens, subject=SUBJECTS, data=st.data(), card=st.booleans())
    def tokenize(self, subject: str, data: st.DataObject, card: bool) -> str:
        category = data.draw(st.sampled_from(sorted(VALUES)))
        value = data.draw(VALUES[category])
        fmt = TokenFormat.CARD_NUMBER if card and category == "card_number" else TokenFormat.OPAQUE
        [out] = self.service.tokenize(
            as_caller("kyc"), subject, [FieldInput(category, PlainValue.text(value), fmt)]
        )
        assert out.token not in self.model
        self.model[out.token] = (subject, category, value)
        self.holds[out.token] = out.token
        return out.token

    @rule(token=tokens, caller=CALLERS, data=st.data())
    def detokenize(self, token: str, caller: str, data: st.DataObject) -> None:
        rule_ = POLICY.callers[CallerName(caller)]
        if not rule_.purposes:
            return
        purpose = data.draw(st.sampled_from(sorted(rule_.purposes)))
        [got] = self.service.detokenize(as_caller(caller), [token], purpose)
        _subject, category, value = self.model[token]
        # The model: the category's purposes, then consent (nobody consents in this model).
        permitted = POLICY.permits(CallerName(caller), Purpose(purpose), Category(category))
        needs_consent = POLICY.purposes[Purpose(purpose)].consent_required
        if not permitted.allowed:
            assert isinstance(got.error, PermissionDenied)
            # ... and exactly what an unknown token gets:
            [unknown] = self.service.detokenize(as_caller(caller), ["tok_" + "a" * 26], purpose)
            assert unknown.error is not None
            assert unknown.error.message == got.error.message
        elif needs_consent:  # permitted, but the purpose needs consent nobody gave
            assert isinstance(got.error, PermissionDenied)
            assert got.error.reason is Reason.CONSENT_REQUIRED
        elif self.holds[token] != token:
            assert isinstance(got.error, IntegrityError)
        elif permitted.view is View.FULL:
            assert got.value is not None
            assert got.value.data.reveal_text() == value
        else:
            assert got.masked is not None
            assert value not in got.masked or len(value) <= 4

    @rule(a=tokens, b=tokens)
    def swap_ciphertexts(self, a: str, b: str) -> None:
        """An attacker with write access to the database swaps two rows' ciphertexts."""
        if a == b:
            return
        with self.engine.begin() as conn:
            ca = conn.execute(
                select(token_values.c.ciphertext).where(token_values.c.token == a)
            ).scalar_one()
            cb = conn.execute(
                select(token_values.c.ciphertext).where(token_values.c.token == b)
            ).scalar_one()
            conn.execute(
                update(token_values).where(token_values.c.token == a).values(ciphertext=cb)
            )
            conn.execute(
                update(token_values).where(token_values.c.token == b).values(ciphertext=ca)
            )
        self.holds[a], self.holds[b] = self.holds[b], self.holds[a]

    @invariant()
    def no_plaintext_in_storage(self) -> None:
        with self.engine.connect() as conn:
            stored = b"".join(
                bytes(c) for c in conn.execute(select(token_values.c.ciphertext)).scalars()
            )
        for _subject, _category, value in self.model.values():
            assert value.encode() not in stored


TestVaultModel = VaultModel.TestCase
TestVaultModel.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

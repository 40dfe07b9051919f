"""The TokenService's use cases, wired from one set of ports: tokenize (vault.domain.tokenization)
and detokenize for a stated purpose (vault.domain.detokenization)."""

from __future__ import annotations

from vault.domain.detokenization import Detokenization
from vault.domain.policy import Policy
from vault.domain.ports import Cipher, Clock, KeyProvider
from vault.domain.quotas import ItemQuotas
from vault.domain.requests import (
    GCM_RANDOM_NONCE_LIMIT,
    Detokenized,
    FieldInput,
    Limits,
    Tokenized,
)
from vault.domain.stores import AuditLog, IdempotencyStore, SubjectStore, ValueStore
from vault.domain.tokenization import Tokenization

__all__ = [
    "GCM_RANDOM_NONCE_LIMIT",
    "Detokenized",
    "FieldInput",
    "Limits",
    "TokenService",
    "Tokenized",
]


class TokenService:
    """Tokenize and detokenize. Stateless between calls; safe to share between threads."""

    def __init__(
        self,
        *,
        policy: Policy,
        values: ValueStore,
        subjects: SubjectStore,
        idempotency: IdempotencyStore,
        audit: AuditLog,
        keys: KeyProvider,
        cipher: Cipher,
        clock: Clock,
        limits: Limits | None = None,
        quotas: ItemQuotas | None = None,
    ) -> None:
        self.policy = policy
        self.limits = limits or Limits()
        self.tokenization = Tokenization(
            policy=policy,
            values=values,
            subjects=subjects,
            idempotency=idempotency,
            audit=audit,
            keys=keys,
            cipher=cipher,
            clock=clock,
            limits=self.limits,
        )
        self.detokenization = Detokenization(
            policy=policy,
            values=values,
            audit=audit,
            keys=keys,
            cipher=cipher,
            clock=clock,
            limits=self.limits,
            quotas=quotas,
        )
        self.tokenize = self.tokenization.tokenize
        self.detokenize = self.detokenization.detokenize

    def __repr__(self) -> str:
        return f"TokenService({self.policy.name} v{self.policy.version})"

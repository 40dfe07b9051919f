"""A subject's data key for a write: the existing one unwrapped, or a new one wrapped (which the
write's transaction creates with the subject). Shared by every use case that stores under a
subject (Tokenize, document uploads), with the refusals they share."""

from __future__ import annotations

from dataclasses import dataclass

from vault.domain.context import RequestContext
from vault.domain.ports import Cipher, KeyProvider
from vault.domain.secrets import Secret
from vault.domain.stores import SubjectStore, ValueStore
from vault.domain.types import SubjectId, SubjectState, WrappedKey
from vault.errors import FailedPrecondition, IntegrityError, NotFound, Reason

__all__ = [
    "SubjectKeys",
    "deleted_subject",
    "key_exhausted",
    "stopped_for_new_data",
]


@dataclass(frozen=True)
class SubjectKeys:
    values: ValueStore
    subjects: SubjectStore
    keys: KeyProvider
    cipher: Cipher

    def acquire(self, ctx: RequestContext, subject: SubjectId) -> tuple[Secret, WrappedKey | None]:
        """The subject's data key (the caller wipes it), and the wrapped key to create the
        subject with when it has none yet (None: it exists). Refuses a stopped subject, and
        the id of a shredded one (the save refuses it again inside its transaction)."""
        existing = self.values.data_keys([subject]).get(subject)
        if existing is not None and existing.state is SubjectState.STOPPED:
            raise stopped_for_new_data()
        if existing is not None:
            return self.unwrap(ctx, subject, existing.wrapped), None
        if self.subjects.shred_receipt_of(subject) is not None:
            raise deleted_subject()
        dek = self.cipher.new_data_key()
        try:
            return dek, self.keys.wrap(ctx, [(subject, dek)])[0]
        except BaseException:
            dek.wipe()
            raise

    def unwrap(self, ctx: RequestContext, owner: SubjectId, wrapped: WrappedKey) -> Secret:
        key = self.keys.unwrap(ctx, [(owner, wrapped)])[0]
        if key is None:
            raise IntegrityError()
        return key


def stopped_for_new_data() -> FailedPrecondition:
    return FailedPrecondition(
        "the data subject's account is stopped: its data is kept, but no new data is stored "
        "until it is resumed",
        reason=Reason.SUBJECT_STOPPED,
    )


def deleted_subject() -> NotFound:
    return NotFound(
        "this data subject was deleted (crypto-shredded); its id cannot be used again",
        reason=Reason.SUBJECT_DELETED,
    )


def key_exhausted() -> FailedPrecondition:
    return FailedPrecondition(
        "the subject's data key reached its encryption limit (NIST SP 800-38D: 2^32 with random "
        "nonces; pdvault stops at 2^31): no more data can be stored for this subject; tell the "
        "operators",
        reason=Reason.DATA_KEY_EXHAUSTED,
    )

"""The storage ports in memory: the domain's unit tests use it instead of a database.

Same contract as `vault.storage.sql` (the contract suites in tests/contract run against both):
outcomes, refusals and atomicity are the same. One lock per state plays the transaction: every
write checks everything first and changes nothing unless all checks pass. Nothing persists.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from vault.domain.audit_log import entry_bytes
from vault.domain.documents import DocumentId, ScanResult, Variant
from vault.domain.merkle import MerkleTree, leaf_hash
from vault.domain.naming import KEYED_PREFIX, SubjectNames
from vault.domain.retention import RETENTION_SUBJECT_PREFIX
from vault.domain.secrets import Secret
from vault.domain.stores import (
    ApiKeyRecord,
    ApprovalChange,
    ApprovalRecord,
    AuditHead,
    DocumentRecord,
    DocumentTombstone,
    Hold,
    KeyInfo,
    Lookup,
    NewDocument,
    RetentionKey,
    ShreddedRecord,
    ShredResult,
    StoredCheckpoint,
    StoredEntry,
    Stores,
    WriteOutcome,
)
from vault.domain.types import (
    AuditEvent,
    CallerName,
    Category,
    IdempotencyRecord,
    Purpose,
    StoredDataKey,
    StoredValue,
    SubjectId,
    SubjectRecord,
    SubjectState,
    Token,
    WrappedKey,
)
from vault.errors import IntegrityError

__all__ = ["MEMORY_NAMES", "MemoryState", "memory_stores"]

MEMORY_NAMES = SubjectNames(Secret(b"pdvault memory store naming key!"))
"""The in-memory stores' naming secret (they are for tests: nothing they hold outlives them)."""


@dataclass
class _Subject:
    state: SubjectState
    created_at: datetime
    state_changed_at: datetime | None = None


@dataclass
class MemoryState:
    """Every table, in dicts, behind one lock."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    # The keyed digest of subject ids (as the SQL stores' `Database.names`).
    names: SubjectNames = field(default_factory=lambda: MEMORY_NAMES)
    subjects: dict[SubjectId, _Subject] = field(default_factory=dict)
    consents: dict[tuple[SubjectId, Purpose], bool] = field(default_factory=dict)
    keys: dict[SubjectId, StoredDataKey] = field(default_factory=dict)
    values: dict[Token, tuple[StoredValue, datetime]] = field(default_factory=dict)
    shredded_subjects: dict[str, ShreddedRecord] = field(default_factory=dict)
    shredded_tokens: dict[Token, Category] = field(default_factory=dict)
    expired_tokens: set[Token] = field(default_factory=set)
    moved_tokens: dict[Token, str] = field(default_factory=dict)
    documents: dict[DocumentId, DocumentRecord] = field(default_factory=dict)
    document_tombstones: dict[DocumentId, DocumentTombstone] = field(default_factory=dict)
    blob_marks: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    segments: dict[str, dict[int, bytes]] = field(default_factory=dict)
    retention_owners: set[str] = field(default_factory=set)
    idempotency: dict[tuple[CallerName, str], IdempotencyRecord] = field(default_factory=dict)
    audit: list[AuditEvent] = field(default_factory=list)
    audit_leaves: list[bytes] = field(default_factory=list)
    audit_tree: MerkleTree = field(default_factory=MerkleTree)
    audit_checkpoints: dict[int, StoredCheckpoint] = field(default_factory=dict)
    policy_version: int | None = None
    api_keys: dict[str, ApiKeyRecord] = field(default_factory=dict)
    # key id -> (created, last used, revoked)
    key_times: dict[str, tuple[datetime, datetime | None, datetime | None]] = field(
        default_factory=dict
    )
    kek_checks: dict[tuple[str, int], WrappedKey] = field(default_factory=dict)
    approvals: dict[str, ApprovalRecord] = field(default_factory=dict)
    quota_usage: dict[tuple[CallerName, Purpose, int], int] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"MemoryState(subjects={len(self.subjects)}, values={len(self.values)})"

    def record_audit(self, events: Sequence[AuditEvent]) -> None:
        """As the SQL log: the subject column is the keyed ref (or a shred's digest), each
        entry gets its place and leaf hash."""
        for e in events:
            stored = e.subject_ref
            if (
                stored is None
                and e.subject is not None
                and e.subject.startswith(("sha256:", KEYED_PREFIX))
            ):
                stored = e.subject
            seq = len(self.audit)
            entry = replace(
                e,
                subject=SubjectId(stored) if stored else None,
                subject_ref=stored,
                seq=seq,
                policy_version=e.policy_version or self.policy_version,
            )
            leaf = leaf_hash(entry_bytes(entry, seq, stored))
            self.audit.append(entry)
            self.audit_leaves.append(leaf)
            self.audit_tree.append(leaf)


def memory_stores(state: MemoryState | None = None) -> Stores:
    s = state or MemoryState()
    return Stores(
        values=MemoryValueStore(s),
        subjects=MemorySubjectStore(s),
        idempotency=MemoryIdempotencyStore(s),
        audit=MemoryAuditLog(s),
        credentials=MemoryCredentialStore(s),
        keys=MemoryKeyInventory(s),
        documents=MemoryDocumentStore(s),
        blobs=MemoryBlobStore(s),
        approvals=MemoryApprovalStore(s),
        quotas=MemoryQuotaStore(s),
    )


class MemoryApprovalStore:
    def __init__(self, state: MemoryState) -> None:
        self._s = state

    def __repr__(self) -> str:
        return "MemoryApprovalStore()"

    def add_approval(self, record: ApprovalRecord, audit: Sequence[AuditEvent]) -> None:
        with self._s.lock:
            if record.request_id in self._s.approvals:
                raise ValueError("a request with this id exists")  # the primary key, in SQL
            self._s.approvals[record.request_id] = replace(
                record, parameters=dict(record.parameters)
            )
            self._s.record_audit(audit)

    def approval(self, request_id: str) -> ApprovalRecord | None:
        with self._s.lock:
            return self._s.approvals.get(request_id)

    def approvals(self, limit: int) -> list[ApprovalRecord]:
        with self._s.lock:
            found = sorted(
                self._s.approvals.values(),
                key=lambda r: (r.created_at, r.request_id),
                reverse=True,
            )
        return found[:limit]

    def change_approval(self, change: ApprovalChange, audit: Sequence[AuditEvent]) -> bool:
        with self._s.lock:
            record = self._s.approvals.get(change.request_id)
            if record is None or record.state is not change.before:
                return False
            if change.by is not None and change.by == record.requested_by:
                return False
            if change.unexpired is not None and change.unexpired != (change.at < record.expires_at):
                return False
            decided = change.by is not None or change.unexpired is False
            self._s.approvals[change.request_id] = replace(
                record,
                state=change.after,
                parameters=dict(change.parameters)
                if change.parameters is not None
                else record.parameters,
                decided_by=change.by if change.by is not None else record.decided_by,
                decided_at=change.at if decided else record.decided_at,
                outcome=change.outcome if change.outcome is not None else record.outcome,
            )
            self._s.record_audit(audit)
            return True


class MemoryValueStore:
    def __init__(self, state: MemoryState) -> None:
        self._s = state

    def __repr__(self) -> str:
        return "MemoryValueStore()"

    def _key(self, subject: SubjectId) -> StoredDataKey:
        key = self._s.keys[subject]
        return replace(key, state=self._s.subjects[subject].state)

    def data_keys(self, subjects: Collection[SubjectId]) -> dict[SubjectId, StoredDataKey]:
        with self._s.lock:
            return {s: self._key(s) for s in subjects if s in self._s.keys}

    def lookup(self, tokens: Collection[Token], purpose: Purpose | None = None) -> Lookup:
        with self._s.lock:
            out = Lookup({}, {}, {}, {})
            for t in tokens:
                held = self._s.values.get(t)
                if held is not None:
                    value = held[0]
                    out.values[t] = value
                    out.keys[value.subject] = self._key(value.subject)
                    out.consent[value.subject] = (
                        self._s.consents.get((value.subject, purpose)) if purpose else None
                    )
                elif t in self._s.shredded_tokens:
                    out.shredded[t] = self._s.shredded_tokens[t]
                    if t in self._s.expired_tokens:
                        out.expired.add(t)
                    if t in self._s.moved_tokens:
                        out.moved[t] = self._s.moved_tokens[t]
            return out

    def subject_values(self, subject: SubjectId) -> list[tuple[StoredValue, datetime]]:
        with self._s.lock:
            held = [(v, at) for v, at in self._s.values.values() if v.subject == subject]
        return sorted(held, key=lambda pair: (pair[1], pair[0].token))

    def save_tokenized(
        self,
        *,
        subject: SubjectId,
        new_key: WrappedKey | None,
        encryption_limit: int,
        values: Sequence[StoredValue],
        audit: Sequence[AuditEvent],
        idempotency: IdempotencyRecord | None,
        now: datetime,
    ) -> WriteOutcome:
        s = self._s
        n = len(values)
        with s.lock:
            if idempotency is not None and (idempotency.caller, idempotency.request_id) in (
                s.idempotency
            ):
                return WriteOutcome.DUPLICATE_REQUEST
            if new_key is not None:
                if subject in s.subjects:
                    return WriteOutcome.SUBJECT_RACE
                if s.names.digest(subject) in s.shredded_subjects:
                    return WriteOutcome.SUBJECT_SHREDDED
                if n > encryption_limit:
                    return WriteOutcome.KEY_EXHAUSTED
            else:
                held = s.subjects.get(subject)
                if held is None or subject not in s.keys:
                    return WriteOutcome.SUBJECT_RACE
                if held.state is not SubjectState.ACTIVE:
                    return WriteOutcome.SUBJECT_STOPPED
                if s.keys[subject].encryptions + n > encryption_limit:
                    return WriteOutcome.KEY_EXHAUSTED
            tokens = [v.token for v in values]
            if len(set(tokens)) != n or any(t in s.values for t in tokens):
                return WriteOutcome.TOKEN_COLLISION
            # Every check passed: write it all.
            if idempotency is not None:
                s.idempotency[(idempotency.caller, idempotency.request_id)] = idempotency
            if new_key is not None:
                s.subjects[subject] = _Subject(SubjectState.ACTIVE, now)
                s.keys[subject] = StoredDataKey(subject, new_key, n)
            else:
                key = s.keys[subject]
                s.keys[subject] = replace(key, encryptions=key.encryptions + n)
            for v in values:
                s.values[v.token] = (v, now)
            s.record_audit(audit)
        return WriteOutcome.DONE

    def replace_value(
        self,
        value: StoredValue,
        encryption_limit: int,
        audit: Sequence[AuditEvent],
        allow_stopped: bool = False,
    ) -> WriteOutcome:
        s = self._s
        with s.lock:
            held = s.subjects.get(value.subject)
            if held is None:
                return WriteOutcome.GONE
            if held.state is not SubjectState.ACTIVE and not allow_stopped:
                return WriteOutcome.SUBJECT_STOPPED
            key = s.keys[value.subject]
            if key.encryptions + 1 > encryption_limit:
                return WriteOutcome.KEY_EXHAUSTED
            current = s.values.get(value.token)
            if current is None or current[0].subject != value.subject:
                return WriteOutcome.GONE
            s.keys[value.subject] = replace(key, encryptions=key.encryptions + 1)
            s.values[value.token] = (replace(current[0], ciphertext=value.ciphertext), current[1])
            s.record_audit(audit)
        return WriteOutcome.DONE

    def values_stored_before(
        self, category: Category, before: datetime, limit: int
    ) -> list[tuple[Token, SubjectId]]:
        with self._s.lock:
            found = sorted(
                (at, v.token, v.subject)
                for v, at in self._s.values.values()
                if v.category == category and at < before
            )
        return [(t, subject) for _at, t, subject in found[:limit]]

    def values_of_ended_relationships(
        self, category: Category, ended_before: datetime, limit: int
    ) -> list[tuple[Token, SubjectId]]:
        with self._s.lock:
            found = sorted(
                (v.token, v.subject)
                for v, _at in self._s.values.values()
                if v.category == category
                and self._s.subjects[v.subject].state is SubjectState.STOPPED
                and (self._s.subjects[v.subject].state_changed_at or ended_before) < ended_before
            )
        return found[:limit]

    def erase_values(
        self, tokens: Sequence[Token], receipt_id: str, audit: Sequence[AuditEvent]
    ) -> int:
        s = self._s
        with s.lock:
            found = [s.values[t][0] for t in tokens if t in s.values]
            for v in found:
                del s.values[v.token]
                s.shredded_tokens[v.token] = v.category
                s.expired_tokens.add(v.token)
            if found:
                s.record_audit(audit)
        return len(found)


class MemorySubjectStore:
    def __init__(self, state: MemoryState) -> None:
        self._s = state

    def __repr__(self) -> str:
        return "MemorySubjectStore()"

    def subject_record(self, subject: SubjectId) -> SubjectRecord | None:
        with self._s.lock:
            held = self._s.subjects.get(subject)
            if held is None:
                return None
            given = {p: g for (s, p), g in self._s.consents.items() if s == subject}
            return SubjectRecord(subject, held.state, given, held.state_changed_at)

    def subjects_with_digests(self, digests: Collection[str]) -> list[SubjectId]:
        wanted = set(digests)
        with self._s.lock:
            return [s for s in self._s.subjects if self._s.names.digest(s) in wanted]

    def shred_receipt(self, digest: str) -> ShreddedRecord | None:
        with self._s.lock:
            return self._s.shredded_subjects.get(digest)

    def shred_receipt_of(self, subject: SubjectId) -> ShreddedRecord | None:
        return self.shred_receipt(self._s.names.digest(subject))

    def set_state(
        self, subject: SubjectId, state: SubjectState, now: datetime, audit: Sequence[AuditEvent]
    ) -> bool:
        with self._s.lock:
            held = self._s.subjects.get(subject)
            if held is None:
                return False
            held.state, held.state_changed_at = state, now
            self._s.record_audit(audit)
        return True

    def set_consent(
        self,
        subject: SubjectId,
        purpose: Purpose,
        granted: bool,
        now: datetime,
        audit: Sequence[AuditEvent],
    ) -> bool:
        with self._s.lock:
            if subject not in self._s.subjects:
                return False
            self._s.consents[(subject, purpose)] = granted
            self._s.record_audit(audit)
        return True

    def shred(
        self,
        subject: SubjectId,
        receipt: ShreddedRecord,
        audit: Sequence[AuditEvent],
        examined: Collection[str] | None = None,
    ) -> ShredResult:
        s = self._s
        digest = receipt.subject_digest
        with s.lock:
            earlier = s.shredded_subjects.get(digest)
            if subject not in s.subjects:
                return ShredResult(earlier, None)
            docs = [d for d in s.documents.values() if d.subject == subject]
            if any(d.holds for d in docs):
                return ShredResult(None, None)  # a hold placed since the retain step: retry
            if examined is not None and any(d.document_id not in examined for d in docs):
                return ShredResult(None, None)  # uploaded since the retain step: retry
            blobs: list[str] = []
            for d in docs:
                del s.documents[d.document_id]
                s.document_tombstones[d.document_id] = DocumentTombstone(
                    d.document_id, d.document_type, digest, receipt.shredded_at, "shred"
                )
                for variant in d.variants:
                    blobs.append(variant.blob)
                    s.blob_marks[variant.blob] = ("doomed", receipt.shredded_at)
            held = [v for v, _at in s.values.values() if v.subject == subject]
            for v in held:
                s.shredded_tokens.setdefault(v.token, v.category)
                del s.values[v.token]
            keys = 1 if s.keys.pop(subject, None) is not None else 0
            for asked in [k for k, r in s.idempotency.items() if r.subject == subject]:
                del s.idempotency[asked]
            for given in [k for k in s.consents if k[0] == subject]:
                del s.consents[given]
            del s.subjects[subject]
            previous = earlier.receipt_id if earlier is not None else receipt.previous_receipt_id
            done = replace(
                receipt,
                values_destroyed=len(held),
                previous_receipt_id=previous,
                documents_destroyed=len(docs),
            )
            s.shredded_subjects[digest] = done
            s.record_audit(audit)
        return ShredResult(done, (keys, len(held)), tuple(blobs))

    def scrub(self) -> bool:
        return True  # nothing persists


class MemoryIdempotencyStore:
    def __init__(self, state: MemoryState) -> None:
        self._s = state

    def __repr__(self) -> str:
        return "MemoryIdempotencyStore()"

    def idempotency(self, caller: CallerName, request_id: str) -> IdempotencyRecord | None:
        with self._s.lock:
            return self._s.idempotency.get((caller, request_id))

    def forget_idempotency(self, caller: CallerName, request_id: str) -> None:
        with self._s.lock:
            self._s.idempotency.pop((caller, request_id), None)

    def purge_idempotency(self, before: datetime) -> int:
        with self._s.lock:
            old = [k for k, r in self._s.idempotency.items() if r.created_at < before]
            for k in old:
                del self._s.idempotency[k]
        return len(old)


class MemoryAuditLog:
    def __init__(self, state: MemoryState) -> None:
        self._s = state

    def __repr__(self) -> str:
        return f"MemoryAuditLog(events={len(self._s.audit)})"

    def append(self, events: Sequence[AuditEvent]) -> None:
        with self._s.lock:
            self._s.record_audit(events)

    def of_subject(self, names: Collection[str], items: Collection[str]) -> list[AuditEvent]:
        wanted, things = set(names), set(items)
        with self._s.lock:
            return [
                e
                for e in self._s.audit
                if (e.subject_ref is not None and e.subject_ref in wanted)
                or (e.token is not None and e.token in things)
            ]

    def close(self) -> None:
        return None

    def head(self) -> AuditHead:
        with self._s.lock:
            return AuditHead(self._s.audit_tree.size, self._s.audit_tree.root())

    def entries(self, first: int, limit: int) -> list[StoredEntry]:
        with self._s.lock:
            return [
                StoredEntry(e, e.subject_ref, self._s.audit_leaves[i])
                for i, e in enumerate(self._s.audit)
                if i >= first
            ][:limit]

    def leaf_hashes(self, first: int, end: int) -> list[bytes]:
        with self._s.lock:
            if end > len(self._s.audit_leaves):
                raise IntegrityError("audit entries are missing")
            return self._s.audit_leaves[first:end]

    def checkpoints(self) -> list[StoredCheckpoint]:
        with self._s.lock:
            return [self._s.audit_checkpoints[k] for k in sorted(self._s.audit_checkpoints)]

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> bool:
        with self._s.lock:
            if checkpoint.size in self._s.audit_checkpoints:
                return False
            self._s.audit_checkpoints[checkpoint.size] = checkpoint
            return True

    def seal_legacy(self) -> int:
        return 0  # every entry has its place from the start


class MemoryCredentialStore:
    def __init__(self, state: MemoryState) -> None:
        self._s = state

    def __repr__(self) -> str:
        return "MemoryCredentialStore()"

    def api_keys(self) -> list[ApiKeyRecord]:
        with self._s.lock:
            return list(self._s.api_keys.values())

    def add_api_key(
        self, record: ApiKeyRecord, audit: Sequence[AuditEvent] = (), now: datetime | None = None
    ) -> None:
        at = now or datetime.now(UTC)
        with self._s.lock:
            if record.key_id in self._s.api_keys:
                raise ValueError("a key with this id exists")  # the primary key, in SQL
            self._s.api_keys[record.key_id] = record
            self._s.key_times[record.key_id] = (at, None, at if record.revoked else None)
            self._s.record_audit(audit)

    def callers_with_keys(self) -> set[CallerName]:
        with self._s.lock:
            return {r.caller for r in self._s.api_keys.values() if not r.revoked}

    def key_infos(self) -> list[KeyInfo]:
        with self._s.lock:
            infos = [
                KeyInfo(r.key_id, r.caller, *self._s.key_times[r.key_id])
                for r in self._s.api_keys.values()
            ]
        return sorted(infos, key=lambda k: (k.created_at, k.key_id))

    def revoke(
        self, caller: CallerName, key_id: str, now: datetime, audit: Sequence[AuditEvent]
    ) -> bool:
        with self._s.lock:
            record = self._s.api_keys.get(key_id)
            if record is None or record.caller != caller or record.revoked:
                return False
            self._s.api_keys[key_id] = replace(record, revoked=True)
            created, used, _ = self._s.key_times[key_id]
            self._s.key_times[key_id] = (created, used, now)
            self._s.record_audit(audit)
            return True

    def touch(self, used: dict[str, datetime]) -> None:
        with self._s.lock:
            for key_id, at in used.items():
                if key_id in self._s.key_times:
                    created, last, revoked = self._s.key_times[key_id]
                    if last is None or last < at:
                        self._s.key_times[key_id] = (created, at, revoked)


class MemoryKeyInventory:
    def __init__(self, state: MemoryState) -> None:
        self._s = state

    def __repr__(self) -> str:
        return "MemoryKeyInventory()"

    def kek_version_counts(self) -> dict[tuple[str, int], int]:
        counts: dict[tuple[str, int], int] = {}
        with self._s.lock:
            for key in self._s.keys.values():
                at = (key.wrapped.provider, key.wrapped.kek_version)
                counts[at] = counts.get(at, 0) + 1
        return counts

    def data_keys_to_rewrap(
        self, provider: str, below_version: int, limit: int, after: SubjectId | None = None
    ) -> list[StoredDataKey]:
        with self._s.lock:
            due = sorted(
                (
                    k
                    for s, k in self._s.keys.items()
                    if k.wrapped.provider == provider
                    and k.wrapped.kek_version < below_version
                    and (after is None or s > after)
                ),
                key=lambda k: k.subject,
            )
        return due[:limit]

    def replace_wrapped_keys(
        self, updates: Sequence[tuple[StoredDataKey, WrappedKey]], audit: Sequence[AuditEvent]
    ) -> int:
        replaced = 0
        with self._s.lock:
            for old, new in updates:
                current = self._s.keys.get(old.subject)
                if current is not None and current.wrapped.blob == old.wrapped.blob:
                    self._s.keys[old.subject] = replace(current, wrapped=new)
                    replaced += 1
            self._s.record_audit(audit)
        return replaced

    def kek_checks(self, provider: str) -> dict[int, WrappedKey]:
        with self._s.lock:
            return {v: w for (p, v), w in self._s.kek_checks.items() if p == provider}

    def add_kek_check(self, check: WrappedKey, now: datetime) -> None:
        with self._s.lock:
            self._s.kek_checks.setdefault((check.provider, check.kek_version), check)


class MemoryDocumentStore:
    def __init__(self, state: MemoryState) -> None:
        self._s = state

    def __repr__(self) -> str:
        return "MemoryDocumentStore()"

    def begin_upload(self, blobs: Sequence[str], now: datetime) -> None:
        with self._s.lock:
            for b in blobs:
                self._s.blob_marks[b] = ("writing", now)

    def add(self, new: NewDocument, audit: Sequence[AuditEvent]) -> WriteOutcome:
        s = self._s
        record = new.record
        subject = record.subject
        if subject is None:
            raise ValueError("a new document belongs to a subject")
        n = len(record.variants)
        with s.lock:
            if new.new_key is not None:
                if subject in s.subjects:
                    return WriteOutcome.SUBJECT_RACE
                if s.names.digest(subject) in s.shredded_subjects:
                    return WriteOutcome.SUBJECT_SHREDDED
                if n > new.encryption_limit:
                    return WriteOutcome.KEY_EXHAUSTED
                s.subjects[subject] = _Subject(SubjectState.ACTIVE, record.created_at)
                s.keys[subject] = StoredDataKey(subject, new.new_key, n)
            elif new.replaces is not None:
                if subject not in s.subjects or subject not in s.keys:
                    return WriteOutcome.SUBJECT_RACE
                key = s.keys[subject]
                if key.encryptions + n > new.encryption_limit:
                    return WriteOutcome.KEY_EXHAUSTED
                held_value = s.values.get(new.replaces)
                if held_value is None or held_value[0].subject != subject:
                    return WriteOutcome.GONE
                s.keys[subject] = replace(key, encryptions=key.encryptions + n)
                del s.values[new.replaces]
                s.shredded_tokens[new.replaces] = held_value[0].category
                s.moved_tokens[new.replaces] = record.document_id
            else:
                held = s.subjects.get(subject)
                if held is None or subject not in s.keys:
                    return WriteOutcome.SUBJECT_RACE
                if held.state is not SubjectState.ACTIVE:
                    return WriteOutcome.SUBJECT_STOPPED
                key = s.keys[subject]
                if key.encryptions + n > new.encryption_limit:
                    return WriteOutcome.KEY_EXHAUSTED
                s.keys[subject] = replace(key, encryptions=key.encryptions + n)
            s.documents[record.document_id] = record
            for v in record.variants:
                s.blob_marks.pop(v.blob, None)
            s.record_audit(audit)
        return WriteOutcome.DONE

    def document(self, document_id: DocumentId) -> DocumentRecord | None:
        with self._s.lock:
            return self._s.documents.get(document_id)

    def tombstone(self, document_id: DocumentId) -> DocumentTombstone | None:
        with self._s.lock:
            return self._s.document_tombstones.get(document_id)

    def documents_of(self, subject: SubjectId) -> list[DocumentRecord]:
        with self._s.lock:
            found = [d for d in self._s.documents.values() if d.subject == subject]
        return sorted(found, key=lambda d: (d.created_at, d.document_id))

    def _change(
        self, document_id: DocumentId, audit: Sequence[AuditEvent], **changes: object
    ) -> bool:
        with self._s.lock:
            held = self._s.documents.get(document_id)
            if held is None:
                return False
            self._s.documents[document_id] = replace(held, **changes)  # type: ignore[arg-type]
            self._s.record_audit(audit)
        return True

    def set_verified(
        self,
        document_id: DocumentId,
        at: datetime,
        due_at: datetime | None,
        audit: Sequence[AuditEvent],
    ) -> bool:
        with self._s.lock:
            held = self._s.documents.get(document_id)
            if held is None or held.subject is None:
                return False
            if held.verified_at is not None:
                self._s.record_audit(audit)
                return True
            return self._change(document_id, audit, verified_at=at, due_at=due_at)

    def set_scan(
        self, document_id: DocumentId, scan: ScanResult, audit: Sequence[AuditEvent]
    ) -> bool:
        return self._change(document_id, audit, scan=scan)

    def add_hold(self, document_id: DocumentId, hold: Hold, audit: Sequence[AuditEvent]) -> bool:
        with self._s.lock:
            held = self._s.documents.get(document_id)
            if held is None:
                return False
            return self._change(document_id, audit, holds=(*held.holds, hold))

    def release_hold(
        self, document_id: DocumentId, hold_id: str | None, audit: Sequence[AuditEvent]
    ) -> int:
        with self._s.lock:
            held = self._s.documents.get(document_id)
            if held is None:
                return 0
            kept = tuple(h for h in held.holds if hold_id is not None and h.hold_id != hold_id)
            released = len(held.holds) - len(kept)
            if released:
                self._change(document_id, audit, holds=kept)
            return released

    def set_due_dates(self, dates: Sequence[tuple[DocumentId, datetime | None]]) -> None:
        with self._s.lock:
            for document_id, due_at in dates:
                held = self._s.documents.get(document_id)
                if held is not None:
                    self._s.documents[document_id] = replace(held, due_at=due_at)

    def destroy(
        self,
        document_id: DocumentId,
        variants: Collection[Variant] | None,
        tombstone: DocumentTombstone,
        audit: Sequence[AuditEvent],
        due_at: datetime | None = None,
        unless_held: bool = True,
    ) -> list[str] | None:
        s = self._s
        with s.lock:
            held = s.documents.get(document_id)
            if held is None or (unless_held and held.holds):
                return None
            doomed = [v for v in held.variants if variants is None or v.variant in set(variants)]
            if len(doomed) == len(held.variants):
                del s.documents[document_id]
                s.document_tombstones.setdefault(document_id, tombstone)
            else:
                s.documents[document_id] = replace(
                    held, variants=tuple(v for v in held.variants if v not in doomed), due_at=due_at
                )
            for v in doomed:
                s.blob_marks[v.blob] = ("doomed", tombstone.destroyed_at)
            s.record_audit(audit)
            return [v.blob for v in doomed]

    def retain(
        self,
        document_id: DocumentId,
        owner: RetentionKey,
        rewrapped: Sequence[tuple[Variant, bytes]],
        due_at: datetime,
        expected_owner: str,
    ) -> bool:
        s = self._s
        with s.lock:
            held = s.documents.get(document_id)
            if held is None or held.key_owner != expected_owner:
                return False
            keys = dict(rewrapped)
            s.documents[document_id] = replace(
                held,
                subject=None,
                key_owner=owner.owner,
                due_at=due_at,
                variants=tuple(
                    replace(v, wrapped_key=keys.get(v.variant, v.wrapped_key))
                    for v in held.variants
                ),
            )
        return True

    def due(self, now: datetime, limit: int) -> list[DocumentRecord]:
        with self._s.lock:
            found = [
                d for d in self._s.documents.values() if d.due_at is not None and d.due_at <= now
            ]
        found.sort(key=lambda d: (d.due_at or now, d.document_id))
        return found[:limit]

    def retention_key(self, owner: str) -> RetentionKey | None:
        with self._s.lock:
            key = self._s.keys.get(SubjectId(owner))
            if owner not in self._s.retention_owners or key is None:
                return None
            return RetentionKey(owner, key.wrapped)

    def add_retention_key(self, key: RetentionKey, now: datetime) -> RetentionKey:
        if not key.owner.startswith(RETENTION_SUBJECT_PREFIX):
            raise ValueError("a retention key's owner is reserved")
        with self._s.lock:
            held = self.retention_key(key.owner)
            if held is not None:
                return held
            self._s.retention_owners.add(key.owner)
            self._s.keys[SubjectId(key.owner)] = StoredDataKey(SubjectId(key.owner), key.wrapped, 0)
            return key

    def drop_unused_retention_keys(self) -> list[str]:
        s = self._s
        with s.lock:
            used = {d.key_owner for d in s.documents.values()}
            unused = sorted(o for o in s.retention_owners if o not in used)
            for o in unused:
                s.retention_owners.discard(o)
                s.keys.pop(SubjectId(o), None)
        return unused

    def stale_blobs(self, before: datetime) -> list[str]:
        with self._s.lock:
            return [
                b
                for b, (state, since) in self._s.blob_marks.items()
                if state == "doomed" or since < before
            ]

    def forget_blobs(self, blobs: Collection[str]) -> None:
        with self._s.lock:
            for b in blobs:
                self._s.blob_marks.pop(b, None)


class MemoryBlobStore:
    def __init__(self, state: MemoryState) -> None:
        self._s = state

    def __repr__(self) -> str:
        return "MemoryBlobStore()"

    def write(self, blob: str, first: int, segments: Sequence[bytes]) -> None:
        with self._s.lock:
            held = self._s.segments.setdefault(blob, {})
            for i, segment in enumerate(segments):
                held[first + i] = bytes(segment)

    def read(self, blob: str, first: int, count: int) -> list[bytes]:
        with self._s.lock:
            held = self._s.segments.get(blob, {})
            out = []
            for i in range(first, first + count):
                if i not in held:
                    break
                out.append(held[i])
            return out

    def delete(self, blobs: Collection[str]) -> None:
        with self._s.lock:
            for b in blobs:
                self._s.segments.pop(b, None)


class MemoryQuotaStore:
    def __init__(self, state: MemoryState) -> None:
        self._s = state

    def __repr__(self) -> str:
        return "MemoryQuotaStore()"

    def take_items(
        self, caller: CallerName, purpose: Purpose, window_start: int, items: int, limit: int
    ) -> int | None:
        with self._s.lock:
            key = (caller, purpose, window_start)
            used = self._s.quota_usage.get(key, 0) + items
            if items > limit or used > limit:
                return None
            self._s.quota_usage[key] = used
            return used

    def used_items(self, caller: CallerName, purpose: Purpose, window_start: int) -> int:
        with self._s.lock:
            return self._s.quota_usage.get((caller, purpose, window_start), 0)

    def purge_quotas(self, before: int) -> int:
        with self._s.lock:
            old = [k for k in self._s.quota_usage if k[2] < before]
            for k in old:
                del self._s.quota_usage[k]
            return len(old)

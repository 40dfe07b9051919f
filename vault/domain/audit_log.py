"""The audit log as a verifiable Merkle log (RFC 9162): what an entry is, how it names its
subject, and how the log is checked against its signed checkpoints.

- **Entries.** Every audit event becomes one entry, at a gap-free place (`seq`, from 0), whose
  bytes are `canonical_entry` of its fields (JSON canonicalization, RFC 8785) and whose leaf hash
  is RFC 9162's. The fields: the event's, the policy version that decided it, and its place.
- **Subjects.** An entry never holds a subject id: it names its subject by a digest keyed by
  that subject's own data key (`SubjectRefs`). While the subject exists, its export computes the
  digest and finds its entries; once the subject is shredded (the data key destroyed), nobody
  can link them to anyone, and no shred rewrites an entry (the privacy policy's "anonymize").
  A shred's own entry names the subject by the receipt's digest.
- **Checkpoints.** A signed note (C2SP tlog-checkpoint) of the tree's size and root, written to
  the database and to a file outside it. `verify` recomputes every leaf and the tree and checks
  it against each checkpoint: it names the first entry changed, missing, reordered or inserted.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC

from vault.domain.merkle import MerkleTree, canonical_entry, leaf_hash, verify_inclusion
from vault.domain.ports import Cipher
from vault.domain.secrets import Secret
from vault.domain.types import AuditEvent, SubjectId

__all__ = [
    "REF_PREFIX",
    "Checkpoint",
    "Problem",
    "SubjectRefs",
    "Verification",
    "check_inclusion",
    "encode_hash",
    "entry_bytes",
    "entry_fields",
    "verify_log",
]

REF_PREFIX = "ref:"
_REF_LABEL = b"pdvault.v1.audit-subject\x00"


class SubjectRefs:
    """The digest an audit entry names a subject by: HMAC-SHA256 under a subkey of the
    subject's own data key (the cipher's fingerprint subkey, with a label of its own). It dies
    with the key: after a shred, and in a backup once the key-encryption key version that
    wrapped the data key is trimmed."""

    def __init__(self, cipher: Cipher) -> None:
        self._cipher = cipher

    def __repr__(self) -> str:
        return "SubjectRefs()"

    def ref(self, data_key: Secret, subject: SubjectId) -> str:
        mac = self._cipher.fingerprint(data_key, _REF_LABEL + subject.encode("utf-8"))
        return REF_PREFIX + mac.hex()


def _timestamp(event: AuditEvent) -> str:
    return event.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_fields(
    event: AuditEvent, seq: int, stored_subject: str | None, policy_version: int | None = None
) -> dict[str, str | int | None]:
    """The fields an entry's hash covers, as stored (`stored_subject`: the column's value;
    `policy_version`: the one stored when the event names none)."""
    return {
        "seq": seq,
        "occurred_at": _timestamp(event),
        "caller": event.caller,
        "action": event.action.value,
        "outcome": event.outcome.value,
        "rule": event.rule,
        "token": event.token,
        "subject": stored_subject,
        "category": event.category,
        "purpose": event.purpose,
        "view": event.view.value if event.view else None,
        "justification": event.justification,
        "request_id": event.request_id,
        "detail": event.detail,
        "legal_basis": event.legal_basis.value if event.legal_basis else None,
        "policy_version": (
            event.policy_version if event.policy_version is not None else policy_version
        ),
    }


def entry_bytes(
    event: AuditEvent, seq: int, stored_subject: str | None, policy_version: int | None = None
) -> bytes:
    return canonical_entry(entry_fields(event, seq, stored_subject, policy_version))


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed tree head, as found (in the database or the file); `note` the signed text."""

    size: int
    root: bytes
    note: str
    where: str  # "database" or the file's path


@dataclass(frozen=True, slots=True)
class Problem:
    """The first thing wrong, in words an operator can act on; `seq` the first entry concerned."""

    seq: int | None
    text: str


@dataclass
class Verification:
    entries: int = 0
    checkpoints: int = 0
    root: bytes = b""
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_log(
    rows: Iterable[tuple[int | None, bytes | None, bytes]],
    checkpoints: Iterable[Checkpoint],
    head_size: int | None = None,
) -> Verification:
    """Check a log: `rows` are (seq, stored leaf hash, the entry's bytes recomputed from the
    stored fields) in seq order; `checkpoints` are verified signed heads (signature already
    checked) of any sizes. Names the first entry changed (its fields do not hash to its leaf),
    missing or inserted (a gap or a repeat in the sequence), and the first checkpoint whose
    root the log does not reproduce (a change that also rewrote the hashes: it lies among the
    entries since the previous good checkpoint)."""
    result = Verification()
    wanted: dict[int, list[Checkpoint]] = {}
    for c in checkpoints:
        wanted.setdefault(c.size, []).append(c)
    tree = MerkleTree()
    good_size = 0
    for c in wanted.pop(0, []):  # a checkpoint of the empty log
        if not hmac.compare_digest(tree.root(), c.root):
            result.problems.append(Problem(0, f"the checkpoint of size 0 ({c.where}) is wrong"))
            return result
        result.checkpoints += 1
    for seq, stored, recomputed in rows:
        expected = tree.size
        if seq is None:
            result.problems.append(Problem(expected, "an entry has no place in the log"))
            return result
        if seq != expected:
            what = "is missing" if seq > expected else "appears twice, or was inserted"
            result.problems.append(
                Problem(min(seq, expected), f"entry {min(seq, expected)} {what}")
            )
            return result
        leaf = leaf_hash(recomputed)
        if stored is None or not hmac.compare_digest(leaf, stored):
            result.problems.append(
                Problem(seq, f"entry {seq} was changed: its fields do not hash to its leaf")
            )
            return result
        tree.append(leaf)
        result.entries += 1
        for c in wanted.pop(tree.size, []):
            if not hmac.compare_digest(tree.root(), c.root):
                result.problems.append(
                    Problem(
                        good_size,
                        f"the log does not match the checkpoint of size {c.size} ({c.where}): "
                        f"an entry from {good_size} to {c.size - 1} was changed, removed, "
                        "reordered or inserted, and its hashes rewritten",
                    )
                )
                return result
            result.checkpoints += 1
            good_size = c.size
    result.root = tree.root()
    if head_size is not None and head_size != tree.size:
        result.problems.append(
            Problem(
                min(head_size, tree.size),
                f"the log's head says {head_size} entries, the table holds {tree.size}: entries "
                f"from {min(head_size, tree.size)} are missing",
            )
        )
    for size in sorted(wanted):
        c = wanted[size][0]
        result.problems.append(
            Problem(
                tree.size,
                f"the checkpoint of size {size} ({c.where}) is beyond the {tree.size} entries "
                "the log holds: entries were removed from its end",
            )
        )
        break
    return result


def encode_hash(h: bytes) -> str:
    return base64.b64encode(h).decode("ascii")


def check_inclusion(entry: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """What a third party runs: the entry's bytes, its place, the proof and a signed root."""
    return verify_inclusion(leaf_hash(entry), index, size, proof, root)

"""Signed checkpoints of the audit log, and its verification.

A checkpoint is the log's size and root in the C2SP tlog-checkpoint format, in a signed note
(Ed25519; vault.crypto.notes), written to the database and appended to a file outside it
(`PDV_AUDIT_CHECKPOINTS`, one JSON object per line, fsynced), like the shred log beside the key
provider. The signing key is a file (`PDV_AUDIT_SIGNING_KEY`, made on first use, mode 0600) or
an `ed25519` key in HashiCorp Vault Transit (`PDV_AUDIT_SIGNER=transit`), which never leaves
Vault. Anyone holding the verifier key (`pdv audit key`) checks a checkpoint, and with
`pdv audit proof` that an entry is in the log it signs.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vault.crypto.notes import (
    VerifierKey,
    format_checkpoint,
    generate_signer,
    parse_checkpoint,
    parse_signer_key,
    parse_verifier_key,
    sign_note,
    verifier_key,
    verify_note,
)
from vault.domain.audit_log import Checkpoint, Problem, Verification, entry_bytes, verify_log
from vault.domain.context import RequestContext
from vault.domain.merkle import inclusion_proof, subtree_hashes_from_leaves
from vault.domain.ports import Clock
from vault.domain.stores import AuditLog, StoredCheckpoint
from vault.errors import ConfigurationError, IntegrityError
from vault.kms.transit import TransitSigner

__all__ = [
    "AuditCheckpoints",
    "CheckpointSigner",
    "FileCheckpointSigner",
    "InclusionProof",
    "TransitCheckpointSigner",
    "file_checkpoints",
    "inclusion",
    "verify_audit",
]

_VERIFY_BATCH = 5000


class CheckpointSigner:
    """Signs checkpoint notes as `name` (the log's origin) with an Ed25519 key."""

    name: str
    public_key: bytes  # raw, 32 bytes

    def sign(self, message: bytes) -> bytes:
        """The raw 64-byte Ed25519 signature of `message`."""
        raise NotImplementedError

    def verifier(self) -> str:
        """The verifier key string a third party checks checkpoints with."""
        return verifier_key(self.name, self.public_key)


class FileCheckpointSigner(CheckpointSigner):
    """The signing key in a file (the C2SP signer key string), made on first use (0600)."""

    def __init__(self, path: Path, name: str) -> None:
        if not path.exists():
            signer, _ = generate_signer(name)
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(signer + "\n")
        try:
            key = parse_signer_key(path.read_text("ascii").strip())
        except (ValueError, IntegrityError, UnicodeDecodeError):
            raise ConfigurationError(
                f"PDV_AUDIT_SIGNING_KEY {path} is not a signer key (C2SP signed-note format)"
            ) from None
        if key.name != name:
            raise ConfigurationError(
                f"the audit signing key {path} signs as '{key.name}', not as the log's origin "
                f"'{name}' (PDV_AUDIT_ORIGIN)"
            )
        self.name = name
        self._key = key
        self.public_key = key.verifier().public_key

    def __repr__(self) -> str:
        return f"FileCheckpointSigner({self.name!r})"

    def sign(self, message: bytes) -> bytes:
        return self._key.private_key.sign(message)


class TransitCheckpointSigner(CheckpointSigner):
    """The signing key in HashiCorp Vault Transit (an `ed25519` key): it never leaves Vault."""

    def __init__(self, transit: TransitSigner, name: str) -> None:
        self._transit = transit
        self.name = name
        self.public_key = transit.public_key(RequestContext.system("audit-checkpoint"))

    def __repr__(self) -> str:
        return f"TransitCheckpointSigner({self.name!r})"

    def sign(self, message: bytes) -> bytes:
        signed = self._transit.sign(RequestContext.system("audit-checkpoint"), message)
        raw = base64.b64decode(signed.decode("ascii").rsplit(":", 1)[-1])
        if len(raw) != 64:
            raise IntegrityError("Transit returned a signature that is not Ed25519")
        return raw


class AuditCheckpoints:
    """Writes checkpoints of the current head: to the database, then to the file."""

    def __init__(self, audit: AuditLog, signer: CheckpointSigner, file: Path, clock: Clock):
        self._audit = audit
        self._signer = signer
        self._file = file
        self._clock = clock
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AuditCheckpoints({self._signer!r}, {str(self._file)!r})"

    @property
    def verifier(self) -> str:
        return self._signer.verifier()

    def checkpoint(self) -> StoredCheckpoint | None:
        """A signed checkpoint of the head, unless one of its size exists (nothing new)."""
        with self._lock:
            head = self._audit.head()
            done = self._audit.checkpoints()
            if head.size == 0 or (done and done[-1].size >= head.size):
                return None
            text = format_checkpoint(self._signer.name, head.size, head.root)
            note = sign_note(
                text, self._signer.name, self._signer.sign, public_key=self._signer.public_key
            )
            made = StoredCheckpoint(head.size, head.root, note, self._clock())
            if not self._audit.add_checkpoint(made):
                return None  # another process signed this size first
            self._append_file(made)
            return made

    def _append_file(self, made: StoredCheckpoint) -> None:
        line = json.dumps(
            {"size": made.size, "at": made.created_at.isoformat(), "note": made.note},
            sort_keys=True,
        )
        self._file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, (line + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)


def file_checkpoints(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, note) of each checkpoint in a checkpoint file; torn lines skipped."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except FileNotFoundError:
        return
    for number, line in enumerate(lines, 1):
        try:
            note = json.loads(line)["note"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(note, str):
            yield number, note


def _checked(
    note: str, where: str, verifier: VerifierKey, problems: list[Problem]
) -> Checkpoint | None:
    try:
        text = verify_note(note, verifier.name, verifier.public_key)
        parsed = parse_checkpoint(text)
    except (IntegrityError, ValueError):
        problems.append(Problem(None, f"a checkpoint in {where} is not signed by the verifier key"))
        return None
    if parsed.origin != verifier.name:
        problems.append(Problem(None, f"a checkpoint in {where} is of another log"))
        return None
    return Checkpoint(parsed.size, parsed.root, note, where)


def verify_audit(audit: AuditLog, verifier: str, files: list[Path]) -> Verification:
    """Recompute the whole log against every checkpoint in the database and in `files`."""
    try:
        key = parse_verifier_key(verifier)
    except (ValueError, IntegrityError):
        raise ConfigurationError("the verifier key is not a C2SP verifier key") from None
    problems: list[Problem] = []
    checkpoints = [
        c
        for c in (_checked(s.note, "the database", key, problems) for s in audit.checkpoints())
        if c is not None
    ]
    for path in files:
        for number, note in file_checkpoints(path):
            found = _checked(note, f"{path}:{number}", key, problems)
            if found is not None:
                checkpoints.append(found)

    def rows() -> Iterator[tuple[int | None, bytes | None, bytes]]:
        first = 0
        while True:
            batch = audit.entries(first, _VERIFY_BATCH)
            for e in batch:
                seq = e.event.seq
                yield seq, e.leaf_hash, entry_bytes(e.event, seq or 0, e.stored_subject)
            if len(batch) < _VERIFY_BATCH:
                return
            last = batch[-1].event.seq
            if last is None:
                return
            first = last + 1

    result = verify_log(rows(), checkpoints, audit.head().size)
    result.problems[:0] = problems
    return result


@dataclass(frozen=True, slots=True)
class InclusionProof:
    seq: int
    entry: bytes  # the entry's canonical bytes (what its leaf hash is over)
    leaf_hash: bytes
    size: int
    root: bytes
    proof: list[bytes]
    checkpoint: str  # the signed note of `size`


def inclusion(audit: AuditLog, seq: int) -> InclusionProof:
    """A proof that entry `seq` is in the log as of the latest checkpoint that covers it."""
    covering = [c for c in audit.checkpoints() if c.size > seq]
    if not covering:
        raise ConfigurationError(
            f"no checkpoint covers entry {seq} yet: run pdv audit checkpoint, then ask again"
        )
    checkpoint = covering[-1]
    found = audit.entries(seq, 1)
    stored = found[0] if found else None
    if stored is None or stored.event.seq != seq or stored.leaf_hash is None:
        raise ConfigurationError(f"the log has no entry {seq}")
    proof = inclusion_proof(seq, checkpoint.size, subtree_hashes_from_leaves(audit.leaf_hashes))
    return InclusionProof(
        seq,
        entry_bytes(stored.event, seq, stored.stored_subject),
        stored.leaf_hash,
        checkpoint.size,
        checkpoint.root,
        proof,
        checkpoint.note,
    )

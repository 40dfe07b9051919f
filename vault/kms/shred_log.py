"""The shred log: which subjects were crypto-shredded, kept outside the database.

One JSON object per line, `{"digest": ..., "receipt_id": ..., "scheme": "hmac-sha256",
"shredded_at": ...}` (`scheme` on subjects' lines only), appended
and fsynced before the database transaction of the shred, in a file beside the key provider's
(by default next to the local key file; set PDV_SHRED_LOG to storage every replica shares and
that database restores do not roll back). At start-up pdvault shreds again every subject of the
database that the log names, so a restored old copy forgets them again.

A subject has one entry: the first shred writes it, under an exclusive lock on the file, and
every later shred of the same id (a retry, a second replica, a re-shred of a restored copy)
reads it back and uses the same receipt id and time.

The digest is keyed by the service-wide naming secret (vault.domain.naming): a dictionary of
subject ids does not find a subject in this file. Lines written before keyed digests carry no
`scheme` and an unkeyed digest: they are read as the keyed digest of the same subject (never
rewritten: the file is append-only). Entries that name no subject (a deleted document's
`document:<id>`) are read as written.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
from datetime import datetime
from pathlib import Path

from vault.domain.naming import NAMING_SCHEME, SubjectNames
from vault.domain.ports import ShredLogEntry

__all__ = ["FileShredLog"]


log = logging.getLogger(__name__)

_HEX64 = re.compile(r"[0-9a-f]{64}")


class FileShredLog:
    """`ShredLog` over an append-only file (mode 0600). Thread- and process-safe."""

    def __init__(self, path: Path, names: SubjectNames) -> None:
        self._path = path
        self._names = names
        self._lock = threading.Lock()
        self._entries: dict[str, ShredLogEntry] = {}
        self._read_up_to = 0  # bytes of the file already parsed into _entries

    def __repr__(self) -> str:
        return f"FileShredLog({str(self._path)!r})"

    def record(self, digest: str, receipt_id: str, at: datetime) -> ShredLogEntry:
        with self._lock:
            self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            created = not self._path.exists()
            fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # another process may be appending this digest
                self._catch_up()
                earlier = self._entries.get(digest)
                if earlier is not None:
                    return earlier
                entry = ShredLogEntry(digest, receipt_id, at)
                fields = {"digest": digest, "receipt_id": receipt_id, "shredded_at": at.isoformat()}
                if _HEX64.fullmatch(digest):  # a subject's keyed digest (not `document:<id>`)
                    fields["scheme"] = NAMING_SCHEME
                line = json.dumps(fields, sort_keys=True)
                os.write(fd, (line + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)  # releases the lock
        if created:  # the new directory entry must survive a crash too
            dir_fd = os.open(self._path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return entry

    def entries(self) -> dict[str, ShredLogEntry]:
        with self._lock:
            self._catch_up()
            return dict(self._entries)

    def _catch_up(self) -> None:
        """Parse what was appended since the last read (by this process or another)."""
        try:
            with self._path.open("rb") as f:
                f.seek(self._read_up_to)
                tail = f.read()
        except FileNotFoundError:
            return
        complete = tail[: tail.rfind(b"\n") + 1]  # a line being written is read next time
        for line in complete.decode("ascii", "replace").splitlines():
            try:
                raw = json.loads(line)
                digest = str(raw["digest"])
                scheme = raw.get("scheme")
                if scheme is None and _HEX64.fullmatch(digest):
                    # A subject's line written before keyed digests: its unkeyed SHA-256.
                    # (Other keys, such as deleted documents' `document:<id>`, stay as they are.)
                    digest = self._names.from_unkeyed(digest)
                elif scheme not in (None, NAMING_SCHEME):
                    raise ValueError("unknown scheme")
                entry = ShredLogEntry(
                    digest,
                    str(raw["receipt_id"]),
                    datetime.fromisoformat(str(raw["shredded_at"])),
                )
            except (ValueError, KeyError, TypeError):
                # A torn line after a crash: its shred never reached the database either.
                log.warning("shred log %s: a line is not an entry; skipped", self._path)
                continue
            self._entries.setdefault(entry.digest, entry)
        self._read_up_to += len(complete)

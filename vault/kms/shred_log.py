"""The shred log: which subjects were crypto-shredded, kept outside the database.

One JSON object per line, `{"digest": ..., "receipt_id": ..., "shredded_at": ...}`, appended
and fsynced before the database transaction of the shred, in a file beside the key provider's
(by default next to the local key file; set PDV_SHRED_LOG to storage every replica shares and
that database restores do not roll back). At start-up pdvault shreds again every subject of the
database that the log names, so a restored old copy forgets them again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import datetime
from pathlib import Path

log = logging.getLogger(__name__)


class FileShredLog:
    """`ShredLog` over an append-only file (mode 0600). Thread-safe within a process; appends
    from several processes are whole lines (O_APPEND, one write each)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FileShredLog({str(self._path)!r})"

    def append(self, digest: str, receipt_id: str, at: datetime) -> None:
        line = json.dumps(
            {"digest": digest, "receipt_id": receipt_id, "shredded_at": at.isoformat()},
            sort_keys=True,
        )
        created = not self._path.exists()
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._lock:
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
        if created:  # the new directory entry must survive a crash too
            dir_fd = os.open(self._path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def digests(self) -> dict[str, str]:
        try:
            text = self._path.read_text("ascii")
        except FileNotFoundError:
            return {}
        out: dict[str, str] = {}
        for n, line in enumerate(text.splitlines(), 1):
            try:
                entry = json.loads(line)
                out[str(entry["digest"])] = str(entry["receipt_id"])
            except (ValueError, KeyError, TypeError):
                # A torn last line after a crash: its shred never reached the database either.
                log.warning("shred log %s: line %d is not an entry; skipped", self._path, n)
        return out

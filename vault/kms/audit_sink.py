"""Audit entries as JSON lines for a SIEM, as HashiCorp Vault's audit devices write them: each
line is the entry's canonical bytes (the very bytes its leaf hash is over, so a SIEM can check
an entry against a proof), in place order.

The database is the log of record: every entry is committed there before its request is
answered (if that fails, nothing is returned). A sink follows the database (`PDV_AUDIT_SINK`
in the server, `pdv audit tail --follow` as a sidecar): it lags by at most its poll interval,
and a sink that fails (a full disk) is logged and retried without failing requests. A file
sink resumes after the last place it holds.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from vault.domain.audit_log import entry_bytes
from vault.domain.stores import AuditLog

__all__ = ["AuditTail", "last_place", "open_sink"]

log = logging.getLogger(__name__)

_BATCH = 1000


def last_place(path: Path) -> int | None:
    """The place of the last complete entry in a sink file, or None."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(tail):
        try:
            seq = json.loads(line)["seq"]
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(seq, int):
            return seq
    return None


class AuditTail:
    """Copies entries from place `start` on to `out`, one canonical line each."""

    def __init__(self, audit: AuditLog, out: BinaryIO, start: int) -> None:
        self._audit = audit
        self._out = out
        self.next = start

    def __repr__(self) -> str:
        return f"AuditTail(next={self.next})"

    def step(self) -> int:
        """Write what was appended since the last step; returns how many entries."""
        written = 0
        while True:
            batch = [e for e in self._audit.entries(self.next, _BATCH) if e.event.seq is not None]
            for e in batch:
                seq = e.event.seq
                assert seq is not None  # noqa: S101  (filtered above)
                if seq != self.next:
                    return written  # a gap: written once the entry is there
                self._out.write(entry_bytes(e.event, seq, e.stored_subject) + b"\n")
                self.next += 1
                written += 1
            self._out.flush()
            if len(batch) < _BATCH:
                return written

    def follow(self, stopping: threading.Event, interval: float = 0.5) -> None:
        while True:
            try:
                self.step()
            except Exception:
                log.exception("audit sink: could not write; retried")
            if stopping.wait(interval):
                self.step()
                return


def open_sink(target: str, audit: AuditLog) -> tuple[AuditTail, Callable[[], None]]:
    """The sink `target` (`stdout` or a file path) and how to close it. A file resumes after
    its last entry; stdout starts at the log's head."""
    if target == "stdout":
        return AuditTail(audit, sys.stdout.buffer, audit.head().size), lambda: None
    path = Path(target)
    last = last_place(path)
    start = audit.head().size if last is None else last + 1
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    out = os.fdopen(fd, "ab")
    return AuditTail(audit, out, start), out.close

"""Malware scans through ClamAV's daemon, clamd, over its INSTREAM protocol.

The protocol (clamd(8), documents.md §3): on a fresh connection, the command `zINSTREAM\\0`, then
the content in chunks of a 4-byte big-endian length and that many bytes, then a zero-length
chunk; clamd answers one NUL-terminated line, `stream: OK`, `stream: <signature> FOUND` or
`... ERROR`, and closes. Content over clamd's `StreamMaxLength` makes it answer
`INSTREAM size limit exceeded. ERROR` and close the connection while it is still being sent.

The scanner fails closed: anything but a clean answer (clamd down, slow, refusing the size,
answering nonsense) is a `ScanState.ERROR` result, never an exception, so the document stays
unreadable until a later scan says CLEAN.
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from dataclasses import dataclass

from vault.domain.documents import ScanResult, ScanState
from vault.errors import ConfigurationError

Content = bytes | bytearray  # the upload's buffer: a bytearray, wiped after

__all__ = ["DEFAULT_CHUNK_SIZE", "ClamdAddress", "ClamdScanner", "NullScanner"]

log = logging.getLogger(__name__)

# clamd's own default for StreamMaxLength's chunks is unbounded; 64 KiB keeps writes small.
DEFAULT_CHUNK_SIZE = 64 * 1024
_MAX_REPLY = 4096  # a reply is one short line; more than this is not clamd
_MAX_SIGNATURE = 200
_TCP_PREFIX = "tcp://"


@dataclass(frozen=True, slots=True)
class ClamdAddress:
    """Where clamd listens: a Unix socket path, or `tcp://host:port` (exactly one is set)."""

    unix_path: str | None = None
    tcp: tuple[str, int] | None = None

    @classmethod
    def parse(cls, address: str) -> ClamdAddress:
        if address.startswith(_TCP_PREFIX):
            host, sep, port = address[len(_TCP_PREFIX) :].rpartition(":")
            host = host.removeprefix("[").removesuffix("]")  # [::1]:3310
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigurationError("clamd address: expected tcp://host:port")
            return cls(tcp=(host, int(port)))
        if not address.startswith("/"):
            raise ConfigurationError(
                "clamd address: expected an absolute Unix socket path or tcp://host:port"
            )
        return cls(unix_path=address)

    def __str__(self) -> str:
        if self.tcp is not None:
            return f"{_TCP_PREFIX}{self.tcp[0]}:{self.tcp[1]}"
        return str(self.unix_path)


class _Refused(Exception):
    """clamd could not be used for this scan; `why` says how (for the log line)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class ClamdScanner:
    """`MalwareScanner` over clamd. Thread-safe: each call opens its own connections.

    `timeout` bounds a whole scan (both connections, every send and receive), so a clamd that
    trickles its answer cannot hold an upload longer. `max_bytes` is the content this scanner
    sends at most: set it to clamd's `StreamMaxLength` (at least the document size limit), so
    that a larger content is an ERROR without a round trip."""

    name = "clamd"

    def __init__(
        self,
        address: str,
        timeout: float,
        max_bytes: int,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if timeout <= 0 or max_bytes < 1 or chunk_size < 1:
            raise ConfigurationError("clamd: timeout, max_bytes and chunk_size must be positive")
        self.address = ClamdAddress.parse(address)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.chunk_size = chunk_size

    def scan(self, content: Content) -> ScanResult:
        deadline = time.monotonic() + self.timeout
        try:
            if len(content) > self.max_bytes:
                raise _Refused("the content is larger than the scanner's size limit")
            engine = self._command(b"zVERSION\0", deadline)
            reply = self._instream(content, deadline)
        except _Refused as refused:
            log.warning("clamd at %s: no scan (%s)", self.address, refused.why)
            return ScanResult(ScanState.ERROR, engine=self.name)
        return _result(reply, engine)

    def _connect(self, deadline: float) -> socket.socket:
        remaining = _remaining(deadline)
        try:
            if self.address.tcp is not None:
                return socket.create_connection(self.address.tcp, timeout=remaining)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(remaining)
                sock.connect(str(self.address.unix_path))
            except BaseException:
                sock.close()
                raise
        except TimeoutError:
            raise _Refused("connecting timed out") from None
        except OSError as exc:
            raise _Refused(f"cannot connect: {type(exc).__name__}") from None
        return sock

    def _command(self, command: bytes, deadline: float) -> str:
        with self._connect(deadline) as sock:
            _send(sock, command, deadline)
            return _receive(sock, deadline)

    def _instream(self, content: Content, deadline: float) -> str:
        with self._connect(deadline) as sock:
            view = memoryview(content)
            try:
                _send(sock, b"zINSTREAM\0", deadline)
                for start in range(0, len(view), self.chunk_size):
                    chunk = view[start : start + self.chunk_size]
                    _send(sock, struct.pack(">I", len(chunk)), deadline)
                    _send(sock, chunk, deadline)
                _send(sock, struct.pack(">I", 0), deadline)
            except _Refused:
                # clamd closes the connection mid-stream when the content passes its
                # StreamMaxLength, after saying so: read what it said, if it can be read.
                try:
                    said = _receive(sock, deadline)
                except _Refused:
                    raise _Refused("the connection closed while sending") from None
                raise _Refused(f"clamd stopped the stream: {_printable(said)}") from None
            return _receive(sock, deadline)


class NullScanner:
    """`MalwareScanner` for a server without a scanner configured: every document is
    NOT_SCANNED, which the read policy treats as it is configured to."""

    name = "none"

    def scan(self, content: Content) -> ScanResult:
        return ScanResult(ScanState.NOT_SCANNED, engine=self.name)


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _Refused("timed out")
    return remaining


def _send(sock: socket.socket, data: bytes | memoryview, deadline: float) -> None:
    sock.settimeout(_remaining(deadline))
    try:
        sock.sendall(data)
    except TimeoutError:
        raise _Refused("sending timed out") from None
    except OSError as exc:
        raise _Refused(f"sending failed: {type(exc).__name__}") from None


def _receive(sock: socket.socket, deadline: float) -> str:
    """One NUL-terminated reply (clamd closes the connection after it, in this mode)."""
    reply = bytearray()
    while b"\0" not in reply and len(reply) < _MAX_REPLY:
        sock.settimeout(_remaining(deadline))
        try:
            data = sock.recv(_MAX_REPLY - len(reply))
        except TimeoutError:
            raise _Refused("waiting for the answer timed out") from None
        except OSError as exc:
            raise _Refused(f"receiving failed: {type(exc).__name__}") from None
        if not data:
            break
        reply += data
    if not reply:
        raise _Refused("the connection closed without an answer")
    return reply.split(b"\0", 1)[0].decode("utf-8", "replace").strip()


def _result(reply: str, engine: str) -> ScanResult:
    # `stream: OK` / `stream: Eicar-Signature FOUND` / `<reason> ERROR`
    engine = _printable(engine) or ClamdScanner.name
    verdict = reply.removeprefix("stream:").strip()
    if verdict == "OK":
        return ScanResult(ScanState.CLEAN, engine=engine)
    if verdict.endswith(" FOUND") and not reply.endswith("ERROR"):
        signature = _printable(verdict.removesuffix(" FOUND").strip())
        if signature:
            return ScanResult(ScanState.INFECTED, signature=signature, engine=engine)
    log.warning("clamd: no scan (it answered: %s)", _printable(reply))
    return ScanResult(ScanState.ERROR, engine=engine)


def _printable(text: str) -> str:
    """clamd's words, safe for a log line or a stored field: printable, and bounded."""
    return "".join(c for c in text if c.isprintable())[:_MAX_SIGNATURE]

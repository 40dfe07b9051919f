"""The malware scan through clamd (vault.media.clamd): against a fake clamd speaking INSTREAM, for
every answer and failure; and against a real clamd (Debian's clamav-daemon) started here with a
signature database of this test's own, on a Unix socket in a temporary folder.

The real clamd is needed under CI=true (the Makefile installs clamav-daemon there); elsewhere its
test skips with the reason when clamd is not installed. It never uses ClamAV's official
signatures, nor the network: its database holds two signatures written here, a hash signature
of a file made at run time and a body signature of a marker string.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import socket
import socketserver
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from vault.domain.documents import ScanResult, ScanState
from vault.errors import ConfigurationError
from vault.media.clamd import ClamdAddress, ClamdScanner, NullScanner

VERSION = "ClamAV 1.4.6/27800/Sun Nov 29 08:00:00 2026"
SIZE_LIMIT_ERROR = "INSTREAM size limit exceeded. ERROR"


# A fake clamd


@dataclass
class Behaviour:
    """How the fake answers an INSTREAM: `answer` after the last chunk, or nothing until the
    test ends (`hold`); and `limit`, its StreamMaxLength."""

    answer: str = "stream: OK"
    hold: bool = False
    limit: int | None = None
    scanned: list[bytes] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    connections: int = 0
    release: threading.Event = field(default_factory=threading.Event)


def _read_exactly(stream: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        more = stream.recv(size - len(data))
        if not more:
            raise ConnectionError("the client closed the connection")
        data += more
    return bytes(data)


def _read_command(stream: socket.socket) -> bytes:
    command = bytearray()
    while not command.endswith(b"\0"):
        command += _read_exactly(stream, 1)
    return bytes(command)


class _Handler(socketserver.BaseRequestHandler):
    server: _UnixServer | _TcpServer

    def handle(self) -> None:
        behaviour = self.server.behaviour
        behaviour.connections += 1
        sock: socket.socket = self.request
        try:
            command = _read_command(sock)
            if command == b"zVERSION\0":
                sock.sendall(VERSION.encode() + b"\0")
                return
            assert command == b"zINSTREAM\0", command
            content = bytearray()
            while True:
                (length,) = struct.unpack(">I", _read_exactly(sock, 4))
                if behaviour.limit is not None and len(content) + length > behaviour.limit:
                    # clamd: it says so, and closes the connection while the client sends
                    sock.sendall(SIZE_LIMIT_ERROR.encode() + b"\0")
                    return
                if length == 0:
                    break
                behaviour.chunks.append(length)
                content += _read_exactly(sock, length)
            behaviour.scanned.append(bytes(content))
            if behaviour.hold:
                behaviour.release.wait(timeout=60)  # bounded: the test sets it when it ends
                return
            sock.sendall(behaviour.answer.encode() + b"\0")
        except (ConnectionError, OSError):
            return


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    behaviour: Behaviour


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    behaviour: Behaviour


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder for Unix sockets: their paths must stay under about 100 bytes, which pytest's
    own temporary folders do not promise."""
    path = Path(tempfile.mkdtemp(prefix="pdv-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Fake:
    address: str
    behaviour: Behaviour


def _serve(server: _UnixServer | _TcpServer, behaviour: Behaviour) -> Iterator[None]:
    server.behaviour = behaviour
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        behaviour.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(params=["unix", "tcp"])
def fake(request: pytest.FixtureRequest, short_dir: Path) -> Iterator[Fake]:
    """A fake clamd on a Unix socket, or on TCP at 127.0.0.1."""
    behaviour = Behaviour()
    server: _UnixServer | _TcpServer
    if request.param == "unix":
        path = str(short_dir / "clamd.sock")
        server = _UnixServer(path, _Handler)
        address = path
    else:
        server = _TcpServer(("127.0.0.1", 0), _Handler)
        address = f"tcp://127.0.0.1:{server.server_address[1]}"
    for _ in _serve(server, behaviour):
        yield Fake(address, behaviour)


def scanner(
    address: str, timeout: float = 10.0, max_bytes: int = 1 << 20, chunk: int = 7
) -> ClamdScanner:
    return ClamdScanner(address, timeout=timeout, max_bytes=max_bytes, chunk_size=chunk)


# Against the fake


def test_clean_content_is_clean_and_arrives_whole(fake: Fake) -> None:
    content = b"a passport scan, " * 10

    result = scanner(fake.address).scan(content)

    assert result == ScanResult(ScanState.CLEAN, engine=VERSION)
    assert fake.behaviour.scanned == [content]
    assert set(fake.behaviour.chunks[:-1]) == {7}  # in chunks of the scanner's size


def test_a_signature_found_is_infected(fake: Fake) -> None:
    fake.behaviour.answer = "stream: Win.Test.EICAR_HDB-1 FOUND"
    result = scanner(fake.address).scan(b"content")
    assert result == ScanResult(
        ScanState.INFECTED, signature="Win.Test.EICAR_HDB-1", engine=VERSION
    )


@pytest.mark.parametrize(
    "answer",
    [
        "stream: Can't allocate memory ERROR",
        "INSTREAM: Can't write to temporary file ERROR",
        "stream: FOUND",
        "UNKNOWN COMMAND",
        "",
    ],
)
def test_an_error_or_anything_else_is_error(fake: Fake, answer: str) -> None:
    fake.behaviour.answer = answer
    result = scanner(fake.address).scan(b"content")
    assert result.state is ScanState.ERROR
    assert result.signature is None


def test_content_over_clamds_size_limit_is_error(fake: Fake) -> None:
    fake.behaviour.limit = 1000
    result = scanner(fake.address, chunk=64 * 1024).scan(secrets.token_bytes(4 << 20))
    assert result == ScanResult(ScanState.ERROR, engine="clamd")
    assert fake.behaviour.scanned == []


def test_content_over_the_scanners_size_limit_is_error_without_a_call(fake: Fake) -> None:
    result = scanner(fake.address, max_bytes=10).scan(b"eleven bytes")
    assert result.state is ScanState.ERROR
    assert fake.behaviour.connections == 0


def test_a_clamd_that_does_not_answer_is_error(fake: Fake) -> None:
    fake.behaviour.hold = True
    result = scanner(fake.address, timeout=0.5).scan(b"content")
    assert result == ScanResult(ScanState.ERROR, engine="clamd")
    assert fake.behaviour.scanned == [b"content"]


def test_a_clamd_that_cannot_be_reached_is_error(short_dir: Path) -> None:
    assert scanner(str(short_dir / "absent.sock")).scan(b"x").state is ScanState.ERROR
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    assert scanner(f"tcp://127.0.0.1:{port}").scan(b"x").state is ScanState.ERROR


def test_the_log_says_why_and_nothing_of_the_content(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="vault.media.clamd"):
        scanner(str(short_dir / "absent.sock")).scan(b"user-42's passport")
    assert "cannot connect" in caplog.text
    assert "passport" not in caplog.text


def test_the_null_scanner_scans_nothing() -> None:
    assert NullScanner().scan(b"content") == ScanResult(ScanState.NOT_SCANNED, engine="none")


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        ("/run/clamav/clamd.ctl", ClamdAddress(unix_path="/run/clamav/clamd.ctl")),
        ("tcp://127.0.0.1:3310", ClamdAddress(tcp=("127.0.0.1", 3310))),
        ("tcp://[::1]:3310", ClamdAddress(tcp=("::1", 3310))),
        ("tcp://clamd.internal:3310", ClamdAddress(tcp=("clamd.internal", 3310))),
    ],
)
def test_addresses(address: str, parsed: ClamdAddress) -> None:
    assert ClamdAddress.parse(address) == parsed
    assert str(parsed) in {address, address.replace("[::1]", "::1")}


@pytest.mark.parametrize(
    "address", ["clamd.sock", "tcp://host", "tcp://:3310", "tcp://host:0", "tcp://host:x"]
)
def test_bad_addresses_are_refused(address: str) -> None:
    with pytest.raises(ConfigurationError):
        ClamdAddress.parse(address)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        ClamdScanner("/run/clamd.sock", timeout=0, max_bytes=1)
    with pytest.raises(ConfigurationError):
        ClamdScanner("/run/clamd.sock", timeout=1, max_bytes=0)


# Against a real clamd

CLAMD = shutil.which("clamd") or next(
    (path for path in ("/usr/sbin/clamd", "/usr/local/sbin/clamd") if os.access(path, os.X_OK)),
    None,
)
STREAM_MAX = 1 << 20
# A body signature (.ndb): this marker anywhere in any file.
MARKER = b"pdvault-clamd-test-marker:" + b"7f3a9c"


@dataclass
class RealClamd:
    socket: str
    infected: bytes  # the file the hash signature (.hdb) names


def _ping(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(b"zPING\0")
            return sock.recv(16).startswith(b"PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def real_clamd() -> Iterator[RealClamd]:
    if CLAMD is None:
        reason = "clamd is not installed (Debian: apt-get install clamav-daemon)"
        if IN_CI:
            pytest.fail(f"CI=true and {reason}: the Makefile installs it under CI", pytrace=False)
        pytest.skip(reason)
    folder = Path(tempfile.mkdtemp(prefix="pdv-clamd-"))
    database = folder / "db"
    database.mkdir()
    # An EICAR-like test file, different on every run, named by its hash alone.
    infected = b"PDVAULT-CLAMD-TEST-FILE!" + secrets.token_hex(16).encode()
    digest = hashlib.sha256(infected).hexdigest()
    (database / "pdvault-test.hdb").write_text(f"{digest}:{len(infected)}:Pdvault.Test.File\n")
    (database / "pdvault-test.ndb").write_text(f"Pdvault.Test.Marker:0:*:{MARKER.hex()}\n")
    path = folder / "clamd.sock"
    config = folder / "clamd.conf"
    config.write_text(
        f"LocalSocket {path}\n"
        f"DatabaseDirectory {database}\n"
        f"TemporaryDirectory {folder}\n"
        f"LogFile {folder / 'clamd.log'}\n"
        "Foreground yes\n"
        f"StreamMaxLength {STREAM_MAX}\n"
        "MaxThreads 2\n"
    )
    process = subprocess.Popen(
        [CLAMD, f"--config-file={config}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120  # bounded: a loaded machine, two signatures
        while not _ping(str(path)):
            log = folder / "clamd.log"
            said = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            if process.poll() is not None:
                pytest.fail(f"clamd exited ({process.returncode}):\n{said}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"clamd did not answer PING within 120 s:\n{said}", pytrace=False)
            time.sleep(0.1)
        yield RealClamd(str(path), infected)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def real_scanner(clamd: RealClamd, max_bytes: int = 8 << 20) -> ClamdScanner:
    return ClamdScanner(clamd.socket, timeout=60, max_bytes=max_bytes)


@pytest.mark.slow
def test_real_clamd_finds_the_test_file(real_clamd: RealClamd) -> None:
    result = real_scanner(real_clamd).scan(real_clamd.infected)
    assert result.state is ScanState.INFECTED
    # clamd marks a signature from an unsigned database as UNOFFICIAL.
    assert result.signature == "Pdvault.Test.File.UNOFFICIAL"
    assert result.engine.startswith("ClamAV ")


@pytest.mark.slow
def test_real_clamd_finds_the_marker_inside_a_larger_file(real_clamd: RealClamd) -> None:
    content = secrets.token_bytes(300_000) + MARKER + secrets.token_bytes(300_000)
    result = real_scanner(real_clamd).scan(content)
    assert (result.state, result.signature) == (
        ScanState.INFECTED,
        "Pdvault.Test.Marker.UNOFFICIAL",
    )


@pytest.mark.slow
def test_real_clamd_passes_a_clean_file(real_clamd: RealClamd) -> None:
    clean = real_clamd.infected + b"."  # one byte more: another hash, no marker
    result = real_scanner(real_clamd).scan(clean)
    assert result.state is ScanState.CLEAN
    assert result.signature is None
    assert result.engine.startswith("ClamAV ")


@pytest.mark.slow
def test_real_clamd_over_its_stream_limit_is_error(real_clamd: RealClamd) -> None:
    result = real_scanner(real_clamd).scan(secrets.token_bytes(2 * STREAM_MAX))
    assert result.state is ScanState.ERROR
    # ... and clamd still serves the next scan.
    assert real_scanner(real_clamd).scan(b"clean").state is ScanState.CLEAN

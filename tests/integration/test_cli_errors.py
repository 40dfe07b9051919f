"""A user's mistake gets one line naming what to fix and a non-zero exit, never a traceback:
`pdv` run as a user runs it (a subprocess), with the settings, files and servers they got wrong."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, pdv_env, spawn_serve
from tests.integration.test_tls import _self_signed

pytestmark = pytest.mark.slow

PDV = [sys.executable, "-m", "pdvault_client.cli"]
TOKEN = "tok_" + "a" * 26


def pdv(cwd: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PDV, *args],
        cwd=cwd,
        env=pdv_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line(out: subprocess.CompletedProcess[str], starts: str) -> str:
    """The whole of standard error: one line, starting with `starts`; exit status 2."""
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if not line.startswith("pdv: API keys")]
    lines = [line for line in lines if " INFO " not in line]  # the start-up log line
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(starts), out.stderr
    assert out.returncode == 2, out.stderr
    return lines[0]


# -- the server side: `pdv serve` and `pdv db upgrade` --------------------------------------------


def test_serve_and_db_upgrade_without_a_database(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://pdvault:hunter2@127.0.0.1:{free_port()}/pdvault"
    for command in (["serve"], ["db", "upgrade"]):
        out = pdv(tmp_path, *command, PDV_DATABASE_URL=url, PDV_PROCESSES="1")
        line = one_line(out, f"pdv {' '.join(command)}: database postgresql+psycopg://")
        assert "Connection refused" in line or "connection failed" in line
        assert "hunter2" not in out.stderr  # the URL is shown redacted


def test_several_processes_off_loopback_without_tls_is_one_line(tmp_path: Path) -> None:
    """Issue #9 item 9: the parent refuses before it spawns a child or says it serves."""
    out = pdv(tmp_path, "serve", PDV_ADDR=f"0.0.0.0:{free_port()}", PDV_PROCESSES="2")
    line = one_line(out, "pdv serve: refusing to serve 0.0.0.0:")
    assert "PDV_TLS_CERT" in line
    assert "listening" not in out.stderr


def test_a_server_nobody_can_call_says_so(tmp_path: Path) -> None:
    """With PDV_DEV_CREDENTIALS=false and no key in the database, the start-up log warns."""
    proc, _addr, log = spawn_serve(tmp_path, PDV_DEV_CREDENTIALS="false", PDV_PROCESSES="1")
    proc.terminate()
    proc.wait(timeout=30)
    assert "no caller of the policy has an API key: nobody can call this server" in (
        log.read_text()
    )


def test_an_unknown_log_level_is_one_line(tmp_path: Path) -> None:
    line = one_line(pdv(tmp_path, "serve", PDV_LOG_LEVEL="verbose"), "pdv serve: PDV_LOG_LEVEL=")
    assert "DEBUG, INFO, WARNING, ERROR" in line
    flag = pdv(tmp_path, "serve", "--log-level", "verbose")
    assert flag.returncode == 2
    assert "invalid choice" in flag.stderr


def test_serve_names_a_missing_policy_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    line = one_line(
        pdv(tmp_path, "serve", PDV_POLICY=str(missing), PDV_PROCESSES="1"), "pdv serve: "
    )
    assert str(missing) in line


def test_db_upgrade_names_a_data_directory_it_cannot_create(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    one_line(pdv(tmp_path, "db", "upgrade", PDV_DATA_DIR=str(blocker / "data")), "pdv db upgrade")


# -- the client side ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    ['["payment"]', '{"payment": 5}', '{"payment": "pdv_hunter2', "\xff"],
    ids=["a list", "not strings", "not JSON", "not UTF-8"],
)
def test_a_corrupt_credentials_file(tmp_path: Path, content: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "dev-credentials.json").write_bytes(content.encode("latin-1"))
    out = pdv(
        tmp_path,
        *("detokenize", "--caller", "payment", "--purpose", "payment", TOKEN),
        PDV_DATA_DIR=str(data),
    )
    line = one_line(out, "pdv detokenize: ")
    assert "not a JSON object of caller names to API keys" in line
    assert "hunter2" not in out.stderr


@pytest.mark.parametrize(
    "addr", ["127.0.0.1", "http://127.0.0.1:50051", "127.0.0.1:0", "h:65536", "::1:50051", ""]
)
def test_a_bad_server_address(tmp_path: Path, addr: str) -> None:
    argv = ["detokenize", "--purpose", "payment", TOKEN]
    if addr:
        line = one_line(pdv(tmp_path, *argv, PDV_ADDR=addr, PDV_API_KEY="k"), "pdv detokenize: ")
        assert line.startswith(f"pdv detokenize: PDV_ADDR={addr!r}: expected HOST:PORT")
    # The flag is checked the same way, and named as the flag.
    flag = one_line(pdv(tmp_path, "--addr", addr or "x", *argv, PDV_API_KEY="k"), "pdv detokenize")
    assert "--addr" in flag


def test_a_tls_ca_that_is_no_certificate(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    for ca in (tmp_path / "ca.pem", tmp_path / "missing.pem"):
        line = one_line(
            pdv(
                tmp_path,
                *("detokenize", "--purpose", "payment", TOKEN),
                PDV_API_KEY="k",
                PDV_TLS_CA=str(ca),
            ),
            "pdv detokenize: ",
        )
        assert f"PDV_TLS_CA={ca}" in line


@pytest.fixture
def tls_serve(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert, key = _self_signed(tmp_path)
    proc, addr, log = spawn_serve(
        tmp_path, PDV_TLS_CERT=str(cert), PDV_TLS_KEY=str(key), PDV_PROCESSES="1"
    )
    try:
        yield addr, cert
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        assert proc.returncode == 0, log.read_text()


def test_tls_on_the_server_and_none_on_the_client_says_so(
    tls_serve: tuple[str, Path], tmp_path: Path
) -> None:
    addr, cert = tls_serve
    argv = ["detokenize", "--caller", "payment", "--purpose", "payment", "--timeout", "2", TOKEN]
    plain = pdv(tmp_path, *argv, PDV_ADDR=addr)
    assert plain.returncode == 5, plain.stderr
    lines = plain.stderr.splitlines()
    assert lines[0].startswith("UNAVAILABLE: ")
    assert "PDV_TLS_CA" in lines[1]
    assert len(lines) == 2, plain.stderr  # and nothing from gRPC's own logging

    ok = pdv(tmp_path, *argv, PDV_ADDR=addr, PDV_TLS_CA=str(cert))
    assert ok.returncode == 4, ok.stderr  # through TLS to the server, which refuses the token
    assert ok.stderr.startswith("PERMISSION_DENIED")


def test_tls_on_the_client_and_none_on_the_server_says_so(tmp_path: Path) -> None:
    cert, _key = _self_signed(tmp_path)
    proc, addr, log = spawn_serve(tmp_path, PDV_PROCESSES="1")
    try:
        out = pdv(
            tmp_path,
            *("detokenize", "--caller", "payment", "--purpose", "payment", "--timeout", "2"),
            TOKEN,
            PDV_ADDR=addr,
            PDV_TLS_CA=str(cert),
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()
    assert out.returncode == 5, out.stderr
    lines = out.stderr.splitlines()
    assert "does not answer in TLS: unset PDV_TLS_CA" in lines[1]
    assert len(lines) == 2, out.stderr


def test_nothing_listening_says_what_to_check(tmp_path: Path) -> None:
    addr = f"127.0.0.1:{free_port()}"
    out = pdv(
        tmp_path,
        *("detokenize", "--purpose", "payment", "--timeout", "1", TOKEN),
        PDV_ADDR=addr,
        PDV_API_KEY="k",
    )
    assert out.returncode == 5
    hint = out.stderr.splitlines()[-1]
    assert f"is `pdv serve` running at {addr}?" in hint
    assert "PDV_TLS_CA" in hint

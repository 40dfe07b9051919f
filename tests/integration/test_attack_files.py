"""Issue #8, items 3 and 14: what a running server's files hold after a shred, and files whose
modes let other users read them."""

from __future__ import annotations

import datetime
import json
import sqlite3
import stat
import struct
from base64 import b64decode
from contextlib import closing
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from pdvault_client import Field
from pdvault_client.cli import main
from tests.conftest import RunningServer
from tests.integration.attack_support import Started, serving, start_once

# -- item 3 ---------------------------------------------------------------------------------------

# The formats of vault/crypto/aead.py's module docstring, rebuilt here from the documentation
# alone, as an attacker holding the files and the key file would.
_HEADER = 5
_NONCE = 12


def _lp(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def unwrap(kek: bytes, subject: str, blob: bytes) -> bytes | None:
    header, nonce, body = blob[:_HEADER], blob[_HEADER : _HEADER + _NONCE], blob[_HEADER + _NONCE :]
    try:
        return AESGCM(kek).decrypt(nonce, body, b"pdvault.v1.dek\x00" + header + _lp(subject))
    except (InvalidTag, ValueError):
        return None


def open_value(dek: bytes, token: str, subject: str, category: str, blob: bytes) -> bytes | None:
    header, nonce, body = blob[:_HEADER], blob[_HEADER : _HEADER + _NONCE], blob[_HEADER + _NONCE :]
    ad = b"pdvault.v1.value\x00" + header + _lp(token) + _lp(subject) + _lp(category)
    try:
        return AESGCM(dek).decrypt(nonce, body, ad)[1:]  # after the kind byte
    except (InvalidTag, ValueError):
        return None


@pytest.mark.slow
def test_a_shredded_value_cannot_be_recovered_from_a_running_servers_files(
    tmp_path: Path,
) -> None:
    """issue #8 item 3: after ShredSubject returned, the running SQLite server's files
    (pdvault.db, -wal, -shm) hold neither the wrapped data key nor the ciphertext, so with
    kek.json beside them the value cannot be decrypted."""
    data, subject, value = tmp_path / "data", "user-3", "Zebulon Quixote-Wintermute"
    with serving(tmp_path, "serve", data) as srv:
        with srv.client("kyc") as kyc:
            [tok] = kyc.tokenize(subject, [Field("name", value)])
        # What an attacker would look for, read as the rows hold it before the shred.
        with closing(sqlite3.connect(f"file:{data / 'pdvault.db'}?mode=ro", uri=True)) as db:
            [(wrapped,)] = db.execute(
                "SELECT wrapped_key FROM data_keys WHERE subject_id = ?", (subject,)
            ).fetchall()
            [(ciphertext,)] = db.execute(
                "SELECT ciphertext FROM token_values WHERE token = ?", (tok.token,)
            ).fetchall()
        with srv.client("ops") as ops:
            ops.subjects().shred(subject)
        # The server still runs: its files as they are now.
        files = {p.name: p.read_bytes() for p in data.glob("pdvault.db*")}
        key_file = json.loads((data / "kek.json").read_text())
    keks = [b64decode(v["key"]) for v in key_file["versions"].values()]

    held = {
        name: [
            what for what, blob in (("data key", wrapped), ("ciphertext", ciphertext)) if blob in b
        ]
        for name, b in files.items()
    }
    everything = b"".join(files.values())  # an attacker combines what each file holds
    recovered = []
    if wrapped in everything and ciphertext in everything:
        for kek in keks:
            dek = unwrap(kek, subject, wrapped)
            plain = dek and open_value(dek, tok.token, subject, "name", ciphertext)
            if plain:
                recovered.append(plain.decode())
    assert recovered == [], f"the shredded value decrypted from the server's files {held}"
    assert all(what == [] for what in held.values()), f"the subject's bytes are still in {held}"


# -- item 14 --------------------------------------------------------------------------------------


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def fixed_or_refused(started: Started, path: Path) -> None:
    """Either pdvault started, made `path` private and warned naming it, or it refused to start
    with a message naming it (and no traceback)."""
    assert "Traceback" not in started.output
    naming = [line for line in started.output.splitlines() if path.name in line]
    if started.listened:
        assert private(path), f"{path} is still {oct(stat.S_IMODE(path.stat().st_mode))}"
        assert any("warn" in line.lower() for line in naming), started.output
    else:
        assert started.returncode not in (0, None)
        assert any(path.name in line for line in started.stderr.splitlines()), started.stderr


@pytest.mark.slow
def test_an_open_credentials_file_is_fixed_or_refused(tmp_path: Path) -> None:
    """issue #8 item 14: an existing dev-credentials.json readable by all (0644)."""
    data = tmp_path / "data"
    with serving(tmp_path, "first", data):
        pass
    creds = data / "dev-credentials.json"
    creds.chmod(0o644)
    fixed_or_refused(
        start_once(tmp_path, "again", PDV_DATA_DIR=str(data), PDV_PROCESSES="1"), creds
    )


@pytest.mark.slow
def test_a_database_in_an_open_directory_is_fixed_or_refused(tmp_path: Path) -> None:
    """issue #8 item 14: an existing database in a directory others may list and enter (0755)."""
    data = tmp_path / "vaultdir"
    with serving(tmp_path, "first", data):
        pass
    data.chmod(0o755)
    started = start_once(tmp_path, "again", PDV_DATA_DIR=str(data), PDV_PROCESSES="1")
    fixed_or_refused(started, data)


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pdvault.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "server-cert.pem", tmp / "server-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.slow
def test_a_tls_key_readable_by_all_is_fixed_or_refused(tmp_path: Path) -> None:
    """issue #8 item 14: PDV_TLS_KEY names a private key readable by all (0644)."""
    cert, key = self_signed(tmp_path)
    key.chmod(0o644)
    started = start_once(
        tmp_path,
        "tls",
        PDV_DATA_DIR=str(tmp_path / "data"),
        PDV_PROCESSES="1",
        PDV_TLS_CERT=str(cert),
        PDV_TLS_KEY=str(key),
    )
    fixed_or_refused(started, key)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_export_into_an_open_file_is_fixed_or_refused(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """issue #8 item 14: `pdv subject export --file` into an existing file readable by all."""
    monkeypatch.setenv("PDV_ADDR", server.addr)
    monkeypatch.setenv("PDV_DATA_DIR", str(server.app.settings.data_dir))
    monkeypatch.delenv("PDV_API_KEY", raising=False)
    with server.client("kyc") as kyc:
        kyc.tokenize("user-1", [Field("name", "Ann Lee")])
    out = server.app.settings.data_dir.parent / "user-1.json"
    out.write_text("old\n")
    out.chmod(0o644)
    code = main(["subject", "export", "user-1", "--caller", "ops", "--file", str(out)])
    err = capsys.readouterr().err
    if code == 0:
        assert private(out), f"the export was written into a {oct(out.stat().st_mode & 0o777)} file"
        assert out.name in err  # the warning
    else:
        assert out.read_text() == "old\n"
        assert out.name in err

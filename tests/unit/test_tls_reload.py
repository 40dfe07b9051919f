"""The TLS files reload when they change, and only when they are whole (vault.transport.tls);
what gRPC does with a new configuration is tests/integration/test_mtls.py's."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tests.pki import Authority
from vault.errors import ConfigurationError
from vault.transport.tls import TlsFiles, TlsReloader, read_material


@pytest.fixture
def files(tmp_path: Path) -> TlsFiles:
    ca = Authority()
    cert, key = ca.server().write(tmp_path, "server")
    return TlsFiles(cert, key, ca.write(tmp_path / "clients.pem"))


def replace(path: Path, data: bytes) -> None:
    """As a rotation does: a new file moved over the old (a new inode)."""
    new = path.with_suffix(".new")
    new.write_bytes(data)
    if path.stat().st_mode & 0o777 == 0o600:
        new.chmod(0o600)
    os.replace(new, path)


def test_unchanged_files_are_not_read_again(files: TlsFiles) -> None:
    tls = TlsReloader(files)
    fetch = tls.fetcher(with_client_ca=True)
    assert fetch() is None
    assert fetch() is None
    assert tls.version == 0


def test_a_new_client_ca_is_served_once_to_each_port(
    files: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    tls = TlsReloader(files)
    mtls, plain = tls.fetcher(with_client_ca=True), tls.fetcher(with_client_ca=False)
    assert files.client_ca is not None
    replace(files.client_ca, Authority("another CA").pem)
    with caplog.at_level(logging.INFO, "vault.transport.tls"):
        assert mtls() is not None
    assert mtls() is None
    assert plain() is not None  # the other port gets it at its next connection
    assert plain() is None
    assert tls.version == 1
    assert "TLS files reloaded" in caplog.text


def test_a_rotation_caught_half_way_keeps_the_previous_files(
    files: TlsFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tls = TlsReloader(files)
    fetch = tls.fetcher(with_client_ca=True)
    next_server = Authority("next CA").server()
    replace(files.cert, next_server.cert)  # its key is not written yet
    with caplog.at_level(logging.WARNING, "vault.transport.tls"):
        assert fetch() is None
        assert fetch() is None
    warnings = [r for r in caplog.records if "previous TLS files stay" in r.getMessage()]
    assert len(warnings) == 1  # once per change, not once per connection
    assert "not the key of the certificate" in warnings[0].getMessage()
    replace(files.key, next_server.key)
    assert fetch() is not None
    assert tls.version == 1
    assert next_server.key_body() not in caplog.text


def test_a_missing_or_open_key_file_keeps_the_previous_files(
    files: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    tls = TlsReloader(files)
    fetch = tls.fetcher(with_client_ca=False)
    kept = files.key.read_bytes()
    files.key.unlink()
    with caplog.at_level(logging.WARNING, "vault.transport.tls"):
        assert fetch() is None
        assert fetch() is None
    assert caplog.text.count("cannot read the TLS files") == 1
    files.key.write_bytes(kept)
    files.key.chmod(0o644)
    with caplog.at_level(logging.WARNING, "vault.transport.tls"):
        assert fetch() is None
    assert "readable by others" in caplog.text
    files.key.chmod(0o600)
    assert fetch() is not None


def test_start_up_refuses_what_reload_would_keep_out(files: TlsFiles) -> None:
    files.key.chmod(0o644)  # others may read it (a root-owned key may be read by its group)
    with pytest.raises(ConfigurationError, match="readable by others"):
        read_material(files)
    files.key.chmod(0o600)
    assert files.client_ca is not None
    files.client_ca.write_text("not a certificate")
    with pytest.raises(ConfigurationError, match="client CA file holds no PEM certificate"):
        TlsReloader(files)


def test_material_keeps_the_key_out_of_repr(files: TlsFiles) -> None:
    material = read_material(files)
    assert b"PRIVATE KEY" in material.key
    assert "PRIVATE" not in repr(material)

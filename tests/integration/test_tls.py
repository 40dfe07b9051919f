"""TLS on the gRPC port, and no plaintext port off loopback."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pdvault_client import Client, Field, UnavailableError
from tests.conftest import RunningServer
from vault.app import App, build_app
from vault.config import Settings
from vault.errors import ConfigurationError
from vault.transport.server import ServerThread


def _self_signed(tmp: Path) -> tuple[Path, Path]:
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
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("pdvault.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
def tls_server(settings: Settings, tmp_path: Path) -> Iterator[tuple[RunningServer, bytes]]:
    cert, key = _self_signed(tmp_path)
    app = build_app(dataclasses.replace(settings, tls_cert=cert, tls_key=key))
    srv = ServerThread(app, "127.0.0.1:0")
    try:
        yield RunningServer(app, f"127.0.0.1:{srv.port}", srv.port), cert.read_bytes()
    finally:
        srv.stop(grace=None)
        app.close()


def test_tls_round_trip(tls_server: tuple[RunningServer, bytes]) -> None:
    server, ca = tls_server
    key = server.credentials()["kyc"]
    with Client(server.addr, key, tls_ca=ca, tls_server_name="pdvault.test") as kyc:
        [tok] = kyc.tokenize("user-1", [Field("date_of_birth", "1990-01-02")])
        [got] = kyc.detokenize([tok.token], "identity_verification")
    assert got.value == "1990-01-02"


def test_a_plaintext_client_cannot_talk_to_a_tls_port(
    tls_server: tuple[RunningServer, bytes],
) -> None:
    server, _ca = tls_server
    with (
        Client(server.addr, server.credentials()["kyc"], timeout=2.0) as plain,
        pytest.raises(UnavailableError),
    ):
        plain.detokenize(["tok_" + "a" * 26], "name_verification")


def test_no_plaintext_port_off_loopback(app: App) -> None:
    with pytest.raises(ConfigurationError, match="without TLS"):
        ServerThread(app, "0.0.0.0:0")
    insecure = dataclasses.replace(
        app, settings=dataclasses.replace(app.settings, allow_insecure=True)
    )
    srv = ServerThread(insecure, "0.0.0.0:0")
    assert srv.port > 0
    srv.stop(None)

"""mTLS through the real entry points (issue #12 §1): `pdv serve` started with each new setting
(PDV_TLS_CLIENT_CA, PDV_TLS_CLIENT_AUTH, PDV_MTLS_ADDR), the `pdv` client commands with a client
certificate (flags and variables), start-up refusals of settings that cannot work together, and
no key or certificate private part in the server's log. No assertion on elapsed time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pdvault_client import Client, Field, RetryPolicy, UnavailableError
from tests.conftest import free_port, pdv_env, policy_with
from tests.integration.attack_support import Serving, serving, start_once
from tests.integration.test_attack_startup import refused_to_start
from tests.pki import Authority, Issued

pytestmark = pytest.mark.slow

PDV = [sys.executable, "-m", "pdvault_client.cli"]
PAYMENTS = "spiffe://example.org/ns/payments/sa/api"
OPS = "spiffe://example.org/ns/ops/sa/cli"
CARD = "4111111111111111"


@dataclass
class Files:
    """The files an operator gives `pdv serve`, and the client certificates of two workloads."""

    dir: Path
    ca: Authority
    server: Issued
    payments: Issued
    ops: Issued

    def env(self, **more: str) -> dict[str, str]:
        cert, key = self.server.write(self.dir, "server")
        return {
            "PDV_TLS_CERT": str(cert),
            "PDV_TLS_KEY": str(key),
            "PDV_TLS_CLIENT_CA": str(self.ca.write(self.dir / "clients-ca.pem")),
            "PDV_POLICY": str(self.dir / "policy.toml"),
            **more,
        }

    def client(self, addr: str, cert: Issued | None = None, key: str | None = None) -> Client:
        return Client(
            addr,
            key,
            tls_ca=self.ca.pem,
            tls_cert=cert.cert if cert else None,
            tls_key=cert.key if cert else None,
            timeout=10.0,
            retry=RetryPolicy(attempts=1),
        )

    def secrets(self) -> list[str]:
        return [i.key_body() for i in (self.server, self.payments, self.ops)]


@pytest.fixture
def files(tmp_path: Path) -> Files:
    ca = Authority()
    d = tmp_path / "tls"
    d.mkdir()
    (d / "policy.toml").write_text(
        policy_with(payment=f'spiffe_id = "{PAYMENTS}"', ops=f'spiffe_id = "{OPS}"')
    )
    return Files(d, ca, ca.server(), ca.client(PAYMENTS), ca.client(OPS))


def nothing_secret_in(srv: Serving, files: Files) -> None:
    log = srv.log.read_text()
    assert "Traceback" not in log
    for secret in [*files.secrets(), *(k[len("pdv_") + 17 :] for k in srv.creds().values())]:
        assert secret not in log


def pdv(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PDV, *args],
        cwd=cwd,
        env=pdv_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_client_ca_requires_certificates(tmp_path: Path, files: Files) -> None:
    """PDV_TLS_CLIENT_CA alone: client certificates are required (the default)."""
    with serving(tmp_path, "serve", tmp_path / "data", **files.env()) as srv:
        assert "client certificates required" in srv.log.read_text()
        with files.client(srv.addr, files.payments) as payment:
            [tok] = payment.tokenize("user-1", [Field("card_number", CARD)])
            [got] = payment.detokenize([tok.token], "payment")
        assert got.value == CARD
        with (
            files.client(srv.addr, None, srv.creds()["payment"]) as keyed,
            pytest.raises(UnavailableError),
        ):
            keyed.detokenize([tok.token], "payment")
        # `pdv` with the certificate from its flags, then from its variables.
        cert, key = files.payments.write(files.dir, "payments")
        common = {"PDV_ADDR": srv.addr, "PDV_TLS_CA": str(files.dir / "clients-ca.pem")}
        flags = pdv(
            tmp_path,
            "detokenize",
            "--purpose",
            "payment",
            "--tls-client-cert",
            str(cert),
            "--tls-client-key",
            str(key),
            tok.token,
            **common,
        )
        assert flags.returncode == 0, flags.stderr
        assert flags.stdout.strip() == CARD
        ops_cert, ops_key = files.ops.write(files.dir, "ops")
        variables = pdv(
            tmp_path,
            "keys",
            "status",
            "--output",
            "json",
            PDV_TLS_CLIENT_CERT=str(ops_cert),
            PDV_TLS_CLIENT_KEY=str(ops_key),
            **common,
        )
        assert variables.returncode == 0, variables.stderr
        key_only = srv.creds()["payment"]
        without = pdv(
            tmp_path,
            "detokenize",
            "--purpose",
            "payment",
            tok.token,
            PDV_API_KEY=key_only,
            **common,
        )
        assert without.returncode != 0
        assert key_only not in without.stderr
        assert "UNAVAILABLE" in without.stderr
        assert "--tls-client-cert" in without.stderr  # the hint names what to give
        nothing_secret_in(srv, files)
        for run in (flags, variables, without):
            for secret in files.secrets():
                assert secret not in run.stdout + run.stderr


def test_optional_client_certificates_take_a_port_of_their_own(
    tmp_path: Path, files: Files
) -> None:
    """PDV_TLS_CLIENT_AUTH=optional with PDV_MTLS_ADDR, on two processes."""
    mtls_addr = f"127.0.0.1:{free_port()}"
    env = files.env(PDV_TLS_CLIENT_AUTH="optional", PDV_MTLS_ADDR=mtls_addr, PDV_PROCESSES="2")
    with serving(tmp_path, "serve", tmp_path / "data", **env) as srv:
        assert f"client certificates on {mtls_addr}" in srv.log.read_text()
        with files.client(srv.addr, None, srv.creds()["payment"]) as keyed:
            [tok] = keyed.tokenize("user-1", [Field("card_number", CARD)])
        with files.client(mtls_addr, files.payments) as certified:
            [got] = certified.detokenize([tok.token], "payment")
        assert got.value == CARD
        with (
            files.client(mtls_addr, None, srv.creds()["payment"]) as keyed_on_mtls,
            pytest.raises(UnavailableError),
        ):
            keyed_on_mtls.detokenize([tok.token], "payment")
        nothing_secret_in(srv, files)


def test_a_rotated_client_ca_ends_old_connections_at_their_maximum_age(
    tmp_path: Path, files: Files
) -> None:
    """The client CA reloads without a restart, and PDV_MAX_CONNECTION_AGE makes it bite on
    connections made before: their client reconnects and is refused."""
    env = files.env(PDV_MAX_CONNECTION_AGE="1")
    with serving(tmp_path, "serve", tmp_path / "data", **env) as srv:
        held = files.client(srv.addr, files.payments)
        [tok] = held.tokenize("user-1", [Field("card_number", CARD)])
        next_ca = Authority("the next client CA")
        ca_file = files.dir / "clients-ca.pem"
        new = ca_file.with_suffix(".new")
        new.write_bytes(next_ca.pem)
        os.replace(new, ca_file)
        with files.client(srv.addr, next_ca.client(PAYMENTS)) as rotated:
            [got] = rotated.detokenize([tok.token], "payment")  # a new connection: the new CA
        assert got.value == CARD
        deadline = time.monotonic() + 60
        with held:
            while True:  # the held client's connection ends within a second or two
                assert time.monotonic() < deadline, "the old connection was never ended"
                try:
                    held.detokenize([tok.token], "payment")
                except UnavailableError:
                    break
                time.sleep(0.2)
        assert "TLS files reloaded" in srv.log.read_text()
        nothing_secret_in(srv, files)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PDV_TLS_CERT": "", "PDV_TLS_KEY": ""}, "PDV_TLS_CLIENT_CA needs PDV_TLS_CERT"),
        ({"PDV_TLS_CLIENT_AUTH": "optional"}, "PDV_TLS_CLIENT_AUTH=optional needs PDV_MTLS_ADDR"),
        ({"PDV_TLS_CLIENT_AUTH": "maybe"}, "PDV_TLS_CLIENT_AUTH='maybe'"),
        ({"PDV_MTLS_ADDR": "127.0.0.1:1"}, "PDV_MTLS_ADDR is for PDV_TLS_CLIENT_AUTH=optional"),
        ({"PDV_POLICY": ""}, "no caller of the policy has a spiffe_id"),
        ({"PDV_TLS_CLIENT_CA": "/nonexistent/ca.pem"}, "cannot read the TLS files"),
        ({"PDV_TLS_CLIENT_CA": "policy.toml"}, "the client CA file holds no PEM certificate"),
    ],
)
def test_settings_that_cannot_work_together_stop_the_start(
    tmp_path: Path, files: Files, env: dict[str, str], names: str
) -> None:
    given = files.env(PDV_PROCESSES="1")
    given.update(env)
    if given["PDV_TLS_CLIENT_CA"] == "policy.toml":
        given["PDV_TLS_CLIENT_CA"] = str(files.dir / "policy.toml")
    set_ = {k: v for k, v in given.items() if v}
    started = start_once(tmp_path, "start", 60.0, **set_)
    refused_to_start(started, names)
    for secret in files.secrets():
        assert secret not in started.output


def test_a_client_ca_without_tls_is_refused_even_with_client_only_variables(
    tmp_path: Path, files: Files
) -> None:
    """The client's variables (PDV_TLS_CLIENT_CERT/KEY) are not the server's: `pdv serve`
    ignores them, and refuses a client CA without its own certificate."""
    cert, key = files.payments.write(files.dir, "payments")
    started = start_once(
        tmp_path,
        "start",
        PDV_PROCESSES="1",
        PDV_TLS_CLIENT_CA=str(files.ca.write(files.dir / "ca.pem")),
        PDV_TLS_CLIENT_CERT=str(cert),
        PDV_TLS_CLIENT_KEY=str(key),
    )
    refused_to_start(started, "PDV_TLS_CLIENT_CA needs PDV_TLS_CERT")

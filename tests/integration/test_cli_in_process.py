"""The client side of `pdv` in-process against a test server (the subprocess tests in
test_cli.py run the real thing; these give the same paths to coverage and run on PostgreSQL)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pdvault_client.cli import main
from tests.conftest import RunningServer, free_port
from vault.config import Settings
from vault.errors import ConfigurationError


@pytest.fixture
def pdv_env(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> RunningServer:
    monkeypatch.setenv("PDV_ADDR", server.addr)
    monkeypatch.setenv("PDV_DATA_DIR", str(server.app.settings.data_dir))
    monkeypatch.delenv("PDV_API_KEY", raising=False)
    return server


def test_tokenize_and_detokenize(
    pdv_env: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["tokenize", "--caller", "kyc", "--subject", "u1", "--category", "name", "Ann Lee"])
        == 0
    )
    token = capsys.readouterr().out.strip()
    assert main(["detokenize", "--caller", "shipping", "--purpose", "product_shipping", token]) == 0
    assert capsys.readouterr().out.strip() == "Ann Lee"
    assert main(["detokenize", "--caller", "support", "--purpose", "customer_support", token]) == 0
    assert capsys.readouterr().out.strip() == "A. L."


def test_many_tokens_and_a_refusal(
    pdv_env: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["tokenize", "--caller", "kyc", "--subject", "u1", "--category", "name", "Ann Lee"])
    name = capsys.readouterr().out.strip()
    main(
        [
            "tokenize",
            "--caller",
            "kyc",
            "--subject",
            "u1",
            "--category",
            "card_number",
            "4111111111111111",
        ]
    )
    card = capsys.readouterr().out.strip()
    code = main(["detokenize", "--caller", "shipping", "--purpose", "product_shipping", name, card])
    out = capsys.readouterr()
    assert code == 4  # refused
    # One line per token, in order, labelled with its token: refusals included.
    lines = out.out.splitlines()
    assert lines[0] == f"{name}\tAnn Lee"
    assert lines[1].startswith(f"{card}\tPERMISSION_DENIED: ")
    assert len(lines) == 2
    assert out.err == ""


def test_binary_values(
    pdv_env: RunningServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    main(
        [
            "tokenize",
            "--caller",
            "kyc",
            "--subject",
            "u1",
            "--category",
            "attachment",
            "--binary",
            "scan",
        ]
    )
    token = capsys.readouterr().out.strip()
    main(["detokenize", "--caller", "kyc", "--purpose", "identity_verification", token])
    assert capsys.readouterr().out.strip() == "base64:c2Nhbg=="


def test_errors(pdv_env: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tokenize", "--caller", "kyc", "--subject", "u 1", "--category", "name", "A"]) == 3
    assert "subject.syntax" in capsys.readouterr().err
    assert (
        main(["detokenize", "--caller", "shipping", "--purpose", "payment", "tok_" + "a" * 26]) == 4
    )
    assert "may not claim" in capsys.readouterr().err
    assert main(["detokenize", "--purpose", "payment", "tok_" + "a" * 26]) == 2
    assert "--caller" in capsys.readouterr().err


def test_policy_check_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check"]) == 0
    assert "decision date-of-birth-has-no-row" in capsys.readouterr().out


def test_keys_commands(pdv_env: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    main(["tokenize", "--caller", "kyc", "--subject", "u1", "--category", "name", "Ann Lee"])
    token = capsys.readouterr().out.strip()
    assert main(["keys", "status", "--caller", "ops"]) == 0
    out = capsys.readouterr().out
    assert "latest v1" in out
    assert "v1: 1 data keys" in out
    assert f"cache of process {os.getpid()} on " in out  # issue #9 item 6: which process
    assert main(["keys", "rotate", "--caller", "ops"]) == 0
    assert "latest v2" in capsys.readouterr().out
    # Issue #9 item 3: a trim before the rewrap says why it did nothing.
    assert main(["keys", "trim", "--caller", "ops"]) == 0
    assert "nothing to trim: v1 still wraps 1 data keys; run pdv keys rewrap first" in (
        capsys.readouterr().out
    )
    assert main(["keys", "trim", "--caller", "ops", "--min-version", "2"]) == 4
    assert "run pdv keys rewrap first" in capsys.readouterr().err
    assert main(["keys", "rewrap", "--caller", "ops", "--batch-size", "10"]) == 0
    assert "rewrapped 1 data keys to v2; 0 left" in capsys.readouterr().out
    assert main(["keys", "trim", "--caller", "ops"]) == 0
    out = capsys.readouterr().out
    assert "destroyed v1: what they wrapped can no longer be decrypted" in out
    assert "decrypting from v2, destroyed below v2" in out
    assert main(["detokenize", "--caller", "shipping", "--purpose", "product_shipping", token]) == 0
    assert capsys.readouterr().out.strip() == "Ann Lee"
    assert main(["keys", "status", "--caller", "payment"]) == 4
    assert "PERMISSION_DENIED" in capsys.readouterr().err


def test_legal_basis_is_sent(pdv_env: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    """Provision to third parties without consent: refused, unless a legal basis is stated."""
    main(["tokenize", "--caller", "kyc", "--subject", "u1", "--category", "name", "Ann Lee"])
    token = capsys.readouterr().out.strip()
    refuse = ["detokenize", "--caller", "legal", "--purpose", "third_party_provision", token]
    assert main(refuse) != 0
    assert "consent" in capsys.readouterr().err
    assert main([*refuse, "--legal-basis", "law_or_regulation"]) == 0
    assert capsys.readouterr().out.strip() == "Ann Lee"


# -- the same mistakes as test_cli_errors.py, in-process (for coverage) ---------------------------


def test_usage_errors_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PDV_API_KEY", raising=False)
    monkeypatch.setenv("PDV_LOG_LEVEL", "verbose")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err.startswith("pdv serve: PDV_LOG_LEVEL='verbose'")
    monkeypatch.delenv("PDV_LOG_LEVEL")

    monkeypatch.setenv("PDV_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PDV_ADDR", "")  # main() copies --addr there: restored after the test
    assert main(["--addr", "127.0.0.1", "keys", "status", "--caller", "ops"]) == 2
    assert "--addr '127.0.0.1': expected HOST:PORT" in capsys.readouterr().err
    monkeypatch.setenv("PDV_ADDR", "127.0.0.1:1")
    assert main(["keys", "status", "--caller", "ops"]) == 2
    assert "no " in capsys.readouterr().err  # no credentials file yet
    (tmp_path / "dev-credentials.json").write_text('{"ops": 1}')
    assert main(["keys", "status", "--caller", "ops"]) == 2
    assert "not a JSON object of caller names" in capsys.readouterr().err
    monkeypatch.setenv("PDV_API_KEY", "pdv_x")
    monkeypatch.setenv("PDV_TLS_CA", str(tmp_path / "missing.pem"))
    assert main(["subject", "show", "u1"]) == 2
    assert "cannot read PDV_TLS_CA" in capsys.readouterr().err


def test_db_upgrade_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PDV_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("PDV_DATABASE_URL", raising=False)
    assert main(["db", "upgrade"]) == 0
    assert "at revision" in capsys.readouterr().out
    monkeypatch.setenv(
        "PDV_DATABASE_URL", f"postgresql+psycopg://u:hunter2@127.0.0.1:{free_port()}/x"
    )
    assert main(["db", "upgrade"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pdv db upgrade: database postgresql+psycopg://u:***@")
    assert "hunter2" not in err
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("PDV_DATA_DIR", str(blocker / "data"))
    monkeypatch.delenv("PDV_DATABASE_URL")
    assert main(["db", "upgrade"]) == 2
    assert str(blocker) in capsys.readouterr().err


@pytest.mark.parametrize(
    ("message", "tls", "hint"),
    [
        ("failed to connect to all addresses; Connection refused", False, "set PDV_TLS_CA"),
        ("failed to connect to all addresses; Connection refused", True, "PDV_TLS_CA is set"),
        ("Socket closed", False, "If it serves TLS (PDV_TLS_CERT), set PDV_TLS_CA"),
        ("Tls handshake failed: WRONG_VERSION_NUMBER", True, "does not answer in TLS"),
        ("Tls handshake failed: CERTIFICATE_VERIFY_FAILED", True, "PDV_TLS_SERVER_NAME"),
        ("errors resolving nowhere.invalid:1: lookup failed", False, "cannot resolve"),
    ],
)
def test_the_hint_after_unavailable(
    monkeypatch: pytest.MonkeyPatch, message: str, tls: bool, hint: str
) -> None:
    from pdvault_client.cli.report import connection_hint

    monkeypatch.setenv("PDV_ADDR", "127.0.0.1:1")
    if tls:
        monkeypatch.setenv("PDV_TLS_CA", "ca.pem")
    else:
        monkeypatch.delenv("PDV_TLS_CA", raising=False)
    assert hint in connection_hint(message)


# -- the server's commands, in-process (test_cli_errors.py runs them as a user would) ------------


def test_serve_runs_one_process_or_several(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import vault.runtime
    import vault.transport.server
    from vault.app import App

    served: list[object] = []

    def serve_app(app: App, addr: str) -> None:
        served.append(addr)
        app.close()

    def serve_processes(settings: Settings, processes: int) -> int:
        served.append(processes)
        return 0

    monkeypatch.setattr(vault.transport.server, "serve", serve_app)
    monkeypatch.setattr(vault.runtime, "serve_processes", serve_processes)
    monkeypatch.setattr(os, "umask", lambda _mask: 0o022)  # this process's stays as it is
    monkeypatch.setenv("PDV_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PDV_ADDR", "127.0.0.1:0")
    monkeypatch.setenv("PDV_PROCESSES", "1")
    assert main(["serve", "--log-level", "warning"]) == 0
    monkeypatch.setenv("PDV_PROCESSES", "3")
    assert main(["serve"]) == 0
    assert served == ["127.0.0.1:0", 3]
    assert f"API keys of the demo callers are in {tmp_path}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (ConfigurationError("PDV_POLICY: no such file"), "pdv serve: PDV_POLICY: no such file"),
        (PermissionError(13, "Permission denied", "/k/kek.json"), "Permission denied: /k/kek.json"),
    ],
)
def test_a_start_up_error_is_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    error: Exception,
    line: str,
) -> None:
    import vault.cli

    def fail(_settings: Settings) -> int:
        raise error

    monkeypatch.setattr(vault.cli, "_run_server", fail)
    monkeypatch.setattr(os, "umask", lambda _mask: 0o022)
    monkeypatch.setenv("PDV_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PDV_DEV_CREDENTIALS", "false")
    assert main(["serve"]) == 2
    assert capsys.readouterr().err.endswith(f"{line}\n")


def test_a_bug_at_start_up_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import vault.cli

    def fail(_settings: Settings) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(vault.cli, "_run_server", fail)
    monkeypatch.setattr(os, "umask", lambda _mask: 0o022)
    monkeypatch.setenv("PDV_DEV_CREDENTIALS", "false")
    with pytest.raises(RuntimeError, match="a bug"):
        main(["serve"])


def test_client_certificate_usage_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The client certificate's files: both or neither, readable, PEM of the right kind; a
    private key's content never reaches the message."""
    for var in ("PDV_API_KEY", "PDV_TLS_CA", "PDV_TLS_CLIENT_CERT", "PDV_TLS_CLIENT_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PDV_ADDR", "127.0.0.1:1")
    monkeypatch.setenv("PDV_DATA_DIR", str(tmp_path))
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    key.write_text("not a key: s3cr3t-bytes\n")
    show = ["subject", "show", "u1"]
    assert main([*show, "--tls-client-cert", str(cert)]) == 2
    assert "a client certificate goes with its key" in capsys.readouterr().err
    monkeypatch.setenv("PDV_TLS_CLIENT_KEY", str(tmp_path / "missing.pem"))
    assert main([*show, "--tls-client-cert", str(cert)]) == 2
    assert f"cannot read PDV_TLS_CLIENT_KEY={tmp_path / 'missing.pem'}" in capsys.readouterr().err
    assert main([*show, "--tls-client-cert", str(cert), "--tls-client-key", str(key)]) == 2
    err = capsys.readouterr().err
    assert f"--tls-client-key {key} holds no PEM private key" in err
    assert "s3cr3t" not in err
    assert main([*show, "--tls-client-cert", str(key), "--tls-client-key", str(key)]) == 2
    assert "holds no PEM certificate" in capsys.readouterr().err
    monkeypatch.delenv("PDV_TLS_CLIENT_KEY")
    assert main(show) == 2
    assert "or give a client certificate (--tls-client-cert" in capsys.readouterr().err

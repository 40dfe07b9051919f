"""The client side of `pdv` in-process against a test server (the subprocess tests in
test_cli.py run the real thing; these give the same paths to coverage and run on PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.conftest import RunningServer
from vault.cli import main


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
            "identity_document",
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
    assert "cache (this server process)" in out
    assert main(["keys", "rotate", "--caller", "ops"]) == 0
    assert "latest v2" in capsys.readouterr().out
    assert main(["keys", "trim", "--caller", "ops", "--min-version", "2"]) == 4
    assert "run pdv keys rewrap first" in capsys.readouterr().err
    assert main(["keys", "rewrap", "--caller", "ops", "--batch-size", "10"]) == 0
    assert "rewrapped 1 data keys to v2; 0 left" in capsys.readouterr().out
    assert main(["keys", "trim", "--caller", "ops"]) == 0
    assert "decrypting from v2, destroyed below v2" in capsys.readouterr().out
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

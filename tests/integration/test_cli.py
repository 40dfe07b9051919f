"""The README's walk-through, as a new user runs it: `pdv serve` and the CLI in subprocesses."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, pdv_env, spawn_serve
from vault.storage import migrate

pytestmark = pytest.mark.slow

PDV = [sys.executable, "-m", "pdvault_client.cli"]


@dataclass
class Cli:
    cwd: Path
    env: dict[str, str]

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PDV, *args],
            cwd=self.cwd,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    proc, addr, log = spawn_serve(tmp_path)
    try:
        yield Cli(tmp_path, pdv_env(PDV_ADDR=addr))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        assert proc.returncode == 0, log.read_text()


def test_readme_walk_through(cli: Cli) -> None:
    tokenized = cli.run(
        "tokenize",
        "--caller",
        "kyc",
        "--subject",
        "user-42",
        "--category",
        "card_number",
        "4111111111111111",
    )
    assert tokenized.returncode == 0, tokenized.stderr
    token = tokenized.stdout.strip()
    assert token.startswith("tok_")

    paid = cli.run("detokenize", "--caller", "payment", "--purpose", "payment", token)
    assert paid.returncode == 0, paid.stderr
    assert paid.stdout.strip() == "4111111111111111"

    refused = cli.run("detokenize", "--caller", "shipping", "--purpose", "product_shipping", token)
    assert refused.returncode == 4  # refused
    assert refused.stdout == ""
    assert "PERMISSION_DENIED" in refused.stderr
    assert "product_shipping" in refused.stderr
    assert "does not exist, or purpose" in refused.stderr  # never says whether it exists

    unknown = cli.run(
        "detokenize", "--caller", "shipping", "--purpose", "product_shipping", "tok_" + "a" * 26
    )
    assert unknown.stderr == refused.stderr

    claim = cli.run("detokenize", "--caller", "shipping", "--purpose", "payment", token)
    assert claim.returncode == 4
    assert "may not claim purpose 'payment'" in claim.stderr

    masked = cli.run("detokenize", "--caller", "support", "--purpose", "customer_support", token)
    assert masked.stdout.strip() == "************1111"


def test_credentials_file_and_data_directory(cli: Cli) -> None:
    creds = cli.cwd / ".pdvault" / "dev-credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    keys = json.loads(creds.read_text())
    assert set(keys) == {"payment", "shipping", "support", "kyc", "legal", "ops", "security"}
    assert stat.S_IMODE((cli.cwd / ".pdvault" / "kek.json").stat().st_mode) == 0o600
    assert (cli.cwd / ".pdvault" / "pdvault.db").exists()


def test_bad_input_and_usage_errors(cli: Cli) -> None:
    luhn = cli.run(
        "tokenize",
        "--caller",
        "kyc",
        "--subject",
        "u1",
        "--category",
        "card_number",
        "4111111111111112",
    )
    assert luhn.returncode == 3  # invalid
    assert "INVALID_ARGUMENT" in luhn.stderr
    assert "card_number.luhn" in luhn.stderr
    assert "4111111111111112" not in luhn.stderr

    cvv = cli.run("tokenize", "--caller", "kyc", "--subject", "u1", "--category", "cvv", "123")
    assert "card security codes are never stored" in cvv.stderr

    nobody = cli.run("detokenize", "--caller", "mallory", "--purpose", "payment", "tok_" + "a" * 26)
    assert nobody.returncode == 2
    assert "no key for caller 'mallory'" in nobody.stderr

    env_key = dict(cli.env, PDV_API_KEY="pdv_wrong")
    bad_key = subprocess.run(
        [*PDV, "detokenize", "--purpose", "payment", "tok_" + "a" * 26],
        cwd=cli.cwd,
        env=env_key,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad_key.returncode == 4  # refused
    assert "UNAUTHENTICATED" in bad_key.stderr


def test_value_from_standard_input(cli: Cli) -> None:
    tokenized = cli.run(
        "tokenize",
        "--caller",
        "kyc",
        "--subject",
        "u2",
        "--category",
        "address",
        "-",
        stdin="1-2-3 Roppongi, Minato-ku\n",
    )
    assert tokenized.returncode == 0, tokenized.stderr
    shipped = cli.run(
        "detokenize",
        "--caller",
        "shipping",
        "--purpose",
        "product_shipping",
        tokenized.stdout.strip(),
    )
    assert shipped.stdout.strip() == "1-2-3 Roppongi, Minato-ku"


def test_client_commands_say_when_no_server_runs(tmp_path: Path) -> None:
    env = pdv_env(PDV_ADDR=f"127.0.0.1:{free_port()}", PDV_API_KEY="pdv_whatever")
    out = subprocess.run(
        [*PDV, "detokenize", "--purpose", "payment", "--timeout", "1", "tok_" + "a" * 26],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 5  # unavailable: try again later
    assert "UNAVAILABLE" in out.stderr or "DEADLINE_EXCEEDED" in out.stderr


def test_policy_check_reports_decisions(tmp_path: Path) -> None:
    out = subprocess.run(
        [*PDV, "policy", "check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "valid" in out.stdout
    for decision in ("date-of-birth-has-no-row", "address-row-cut-off", "card-row-split"):
        assert decision in out.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[categories.cvv]\nkind = "text"\n')
    out = subprocess.run(
        [*PDV, "policy", "check", "--file", str(bad)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert "PCI DSS" in out.stderr


def test_help_is_complete() -> None:
    out = subprocess.run([*PDV, "--help"], capture_output=True, text=True, timeout=60, check=False)
    for word in (
        "serve",
        "tokenize",
        "detokenize",
        "policy",
        "PDV_ADDR",
        "PDV_DATA_DIR",
        "PDV_API_KEY",
    ):
        assert word in out.stdout
    for cmd in ("serve", "tokenize", "detokenize"):
        sub = subprocess.run(
            [*PDV, cmd, "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        assert sub.returncode == 0
        assert "usage: pdv" in sub.stdout


def test_db_upgrade(tmp_path: Path) -> None:
    env = pdv_env()
    out = subprocess.run(
        [*PDV, "db", "upgrade"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert f"at revision {migrate.head_revision()}" in out.stdout
    shutil.rmtree(tmp_path / ".pdvault")

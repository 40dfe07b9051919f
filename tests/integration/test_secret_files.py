"""Every secret setting from a file (`*_FILE`, issue #13 §3), through the real entry points:
`pdv serve` and `pdv db upgrade` (PDV_DATABASE_URL_FILE, VAULT_TOKEN_FILE, VAULT_SECRET_ID_FILE)
and the client commands (PDV_API_KEY_FILE, VAULT_TOKEN_FILE for `pdv keys`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Transit, free_port, hcl_policy, pdv_env, spawn_serve

pytestmark = pytest.mark.slow

PDV = [sys.executable, "-m", "pdvault_client.cli"]


def pdv(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PDV, *args],
        cwd=cwd,
        env=pdv_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def secret_file(path: Path, value: str) -> str:
    path.write_text(value + "\n")  # as `kubectl create secret --from-file` of an edited file
    path.chmod(0o400)
    return str(path)


def test_the_database_url_from_a_file(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere" / "vault.db"
    db.parent.mkdir()
    url = secret_file(tmp_path / "database-url", f"sqlite:///{db}")
    migrated = pdv(tmp_path, "db", "upgrade", PDV_DATABASE_URL_FILE=url)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.startswith(f"database sqlite:///{db} at revision ")
    proc, addr, log = spawn_serve(
        tmp_path, PDV_PROCESSES="1", PDV_DATABASE_URL_FILE=url, PDV_AUTO_MIGRATE="false"
    )
    try:
        key = secret_file(
            tmp_path / "kyc.key",
            json.loads((tmp_path / ".pdvault" / "dev-credentials.json").read_text())["kyc"],
        )
        out = pdv(
            tmp_path,
            *("tokenize", "--subject", "u-1", "--category", "name", "Ann Lee"),
            PDV_ADDR=addr,
            PDV_API_KEY_FILE=key,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("tok_")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()
    assert db.stat().st_size > 0  # the database the file named
    assert not (tmp_path / ".pdvault" / "pdvault.db").exists()


def test_vault_credentials_from_files(tmp_path: Path, transit: Transit) -> None:
    """AppRole's secret id for the server, the operator's token for `pdv keys rotate`."""
    transit.emulator.add_approle("role-1", "secret-1", hcl_policy("pdvault-service.hcl"))
    proc, addr, log = spawn_serve(
        tmp_path,
        PDV_PROCESSES="1",
        PDV_KMS="vault",
        VAULT_ADDR=transit.url,
        PDV_VAULT_AUTH="approle",
        VAULT_ROLE_ID="role-1",
        VAULT_SECRET_ID_FILE=secret_file(tmp_path / "secret-id", "secret-1"),
    )
    try:
        ops = json.loads((tmp_path / ".pdvault" / "dev-credentials.json").read_text())["ops"]
        token = secret_file(tmp_path / "ops-token", transit.ops_token)
        rotated = pdv(
            tmp_path,
            *("keys", "rotate", "--output", "json"),
            PDV_ADDR=addr,
            PDV_API_KEY=ops,
            VAULT_TOKEN_FILE=token,
        )
        assert rotated.returncode == 0, rotated.stderr
        assert json.loads(rotated.stdout)["latestVersion"] == 2
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()
    assert "secret-1" not in log.read_text()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PDV_DATABASE_URL", "sqlite:///x.db"),
        ("VAULT_TOKEN", "hvs.x"),
        ("VAULT_SECRET_ID", "secret-9"),
    ],
)
def test_a_secret_and_its_file_both_set_stop_serve(
    tmp_path: Path, variable: str, value: str
) -> None:
    path = secret_file(tmp_path / "secret", value)
    out = pdv(
        tmp_path,
        "serve",
        PDV_ADDR=f"127.0.0.1:{free_port()}",
        **{variable: value, f"{variable}_FILE": path},
    )
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == (
        f"pdv serve: {variable} and {variable}_FILE are both set: use one"
    )
    assert value not in out.stderr


def test_an_unreadable_secret_file_stops_serve(tmp_path: Path) -> None:
    out = pdv(
        tmp_path,
        "serve",
        PDV_ADDR=f"127.0.0.1:{free_port()}",
        PDV_DATABASE_URL_FILE=str(tmp_path / "missing"),
    )
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == (
        f"pdv serve: PDV_DATABASE_URL_FILE={tmp_path / 'missing'}: cannot read it "
        "(No such file or directory)"
    )


def test_the_client_refuses_an_api_key_twice_or_unreadable(tmp_path: Path) -> None:
    argv = ("tokenize", "--subject", "u-1", "--category", "name", "Ann")
    key = secret_file(tmp_path / "key", "pdv_x_y")
    both = pdv(tmp_path, *argv, PDV_API_KEY="pdv_x_y", PDV_API_KEY_FILE=key)
    assert both.returncode == 2
    assert both.stderr == ("pdv tokenize: PDV_API_KEY and PDV_API_KEY_FILE are both set: use one\n")
    missing = pdv(tmp_path, *argv, PDV_API_KEY_FILE=str(tmp_path / "none"))
    assert missing.returncode == 2
    assert missing.stderr == (
        f"pdv tokenize: PDV_API_KEY_FILE={tmp_path / 'none'}: cannot read it "
        "(No such file or directory)\n"
    )

"""`pdv` from the client distribution alone (`pip install ./clients/python`): the client
commands work without the server's package, and the server's commands say that it is missing.

Here `vault` is importable, so each run blocks it (`sys.modules["vault"] = None`: any import of
it fails, as in a client-only install). tests/unit/test_packaging.py checks what each
distribution ships; import-linter checks that pdvault_client imports no `vault` module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pdvault_client.cli import main, server
from pdvault_client.cli.server import NOT_INSTALLED
from tests.conftest import RunningServer, pdv_env

pytestmark = pytest.mark.slow

WITHOUT_THE_SERVER = (
    "import sys; sys.modules['vault'] = None; "
    "from pdvault_client.cli import main; sys.exit(main(sys.argv[1:]))"
)


def pdv(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_SERVER, *args],
        env=pdv_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_client_commands_need_only_the_client(server: RunningServer) -> None:
    env = {"PDV_ADDR": server.addr, "PDV_DATA_DIR": str(server.app.settings.data_dir)}
    tokenized = pdv(
        *("tokenize", "--caller", "kyc", "--subject", "u1", "--category", "name", "Ann Lee"), **env
    )
    assert tokenized.returncode == 0, tokenized.stderr
    token = tokenized.stdout.strip()
    shown = pdv("detokenize", "--caller", "shipping", "--purpose", "product_shipping", token, **env)
    assert (shown.returncode, shown.stdout) == (0, "Ann Lee\n"), shown.stderr
    status = pdv("keys", "status", "--caller", "ops", "--output", "json", **env)
    assert status.returncode == 0, status.stderr
    subject = pdv("subject", "show", "u1", "--caller", "ops", **env)
    assert subject.returncode == 0, subject.stderr
    reload = pdv("policy", "reload", "--caller", "ops", **env)
    assert reload.returncode == 0, reload.stderr
    assert "in force, unchanged" in reload.stdout


EXPLAIN = ["--caller", "payment", "--purpose", "payment", "--category", "name"]


@pytest.mark.parametrize(
    "command",
    [
        ["serve"],
        ["db", "upgrade"],
        ["policy", "check"],
        ["policy", "matrix"],
        ["policy", "explain", *EXPLAIN],
    ],
)
def test_server_commands_say_the_server_is_not_installed(command: list[str]) -> None:
    out = pdv(*command)
    assert out.returncode == 1
    name = " ".join(c for c in command if c not in EXPLAIN)
    assert out.stderr == f"pdv {name}: {NOT_INSTALLED}\n"
    assert out.stdout == ""


def test_help_without_the_server() -> None:
    out = pdv("--help")
    assert out.returncode == 0, out.stderr
    assert f"environment, server:\n  {NOT_INSTALLED}\n" in out.stdout
    assert "environment, client commands:\n  PDV_ADDR " in out.stdout
    assert "PDV_MAX_WORKERS" not in out.stdout  # the server's settings are the server's to list
    assert pdv("--version").stdout.startswith("pdv ")


# -- the same, in-process (for coverage): `vault` blocked in sys.modules for the test -----------


def test_in_process_without_the_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("vault", "vault.cli", "vault.config"):
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["db", "upgrade"]) == 1
    assert capsys.readouterr().err == f"pdv db upgrade: {NOT_INSTALLED}\n"
    with pytest.raises(SystemExit):
        main(["--help"])
    assert f"environment, server:\n  {NOT_INSTALLED}\n" in capsys.readouterr().out


def test_help_in_process_lists_the_server_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "environment, HashiCorp Vault Transit (PDV_KMS=vault):\n  VAULT_ADDR " in out
    assert NOT_INSTALLED not in out


def test_a_server_with_a_missing_dependency_is_a_broken_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Not "the server is not installed": the traceback names what is missing."""
    (tmp_path / "pdv_probe_server.py").write_text("import pdv_probe_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="pdv_probe_missing_dependency"):
        server._load("pdv_probe_server")
    assert server._load("pdv_probe_no_such_server") is None

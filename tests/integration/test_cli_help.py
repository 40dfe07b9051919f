"""`pdv --help` and the README's configuration table name every environment variable the code
reads; `pdv --version` prints the version; every client command takes `--output`."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata

import pytest

from tests.conftest import ROOT, pdv_env
from vault import cli
from vault.config import _ENV

PDV = [sys.executable, "-m", "vault.cli"]

# `os.environ.get("X")`, `os.environ["X"]`, `os.getenv("X")`, `environ.setdefault("X", ...)`.
_READ = re.compile(r"""(?:environ(?:\.get|\.setdefault)?\s*[\[(]|getenv\()\s*["']([A-Z_]+)["']""")


def variables_read() -> set[str]:
    """Every variable named in a read of the environment by the service, the CLI or the client
    library, plus the server's settings table (vault/config.py `_ENV`) and PDV_CONFIG."""
    sources = [
        *(ROOT / "vault").rglob("*.py"),
        *(ROOT / "clients/python/pdvault_client").glob("*.py"),
    ]
    found = {name for path in sources for name in _READ.findall(path.read_text("utf-8"))}
    return found | set(_ENV) | {"PDV_CONFIG"}


def pdv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PDV, *args], env=pdv_env(), capture_output=True, text=True, timeout=60, check=False
    )


def test_the_scan_finds_the_variables_we_know_of() -> None:
    found = variables_read()
    assert {"PDV_API_KEY", "PDV_TLS_CA", "PDV_TLS_SERVER_NAME", "GRPC_VERBOSITY"} <= found
    assert "PDV_LOG_LEVEL" in found
    assert len(found) >= 34


def test_help_lists_every_environment_variable() -> None:
    out = pdv("--help")
    assert out.returncode == 0
    missing = [v for v in sorted(variables_read()) if not re.search(rf"\b{v}\b", out.stdout)]
    assert missing == []
    documented = {name for _title, rows in cli.ENVIRONMENT for name, _text in rows}
    assert documented == variables_read()  # and nothing that the code does not read


def test_the_readme_configuration_table_lists_every_environment_variable() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    missing = [v for v in sorted(variables_read()) if f"`{v}`" not in table]
    assert missing == []


def test_help_lists_the_exit_statuses() -> None:
    out = pdv("--help").stdout
    for code, text in cli.EXIT_CODES:
        assert f"  {code}  {text}" in out


def _pyproject_version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


def test_version() -> None:
    out = pdv("--version")
    assert out.returncode == 0
    assert out.stdout == f"pdv {_pyproject_version()}\n"


def test_version_without_the_installed_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert cli.version() == _pyproject_version()
    monkeypatch.setattr(cli, "__file__", "/nonexistent/vault/cli.py")
    assert cli.version() == "unknown"


@pytest.mark.parametrize(
    "command",
    [
        ["tokenize"],
        ["detokenize"],
        *([["keys", a] for a in ("status", "rotate", "rewrap", "trim")]),
        *(
            [["subject", a] for a in ("show", "stop", "resume", "shred", "export", "consent")]
            + [["subject", "correct"]]
        ),
        ["policy", "check"],
    ],
)
def test_every_client_command_takes_output(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([*command, "--help"])
    assert done.value.code == 0
    assert "--output {text,json}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        cli.main([*command, "--output", "yaml"])
    assert done.value.code == 2
    assert "invalid choice: 'yaml'" in capsys.readouterr().err

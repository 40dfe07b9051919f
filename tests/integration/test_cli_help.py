"""`pdv --help` and the README's configuration table name every environment variable the code
reads, each with the default the code uses (stated once: `Settings` for the server, the client
package's constants for the client commands); `pdv --version` prints the version; every client
command takes `--output`."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata

import pytest

from pdvault_client.cli import environment, main
from pdvault_client.cli.environment import CLIENT_VARIABLES
from pdvault_client.cli.exits import EXIT_CODES
from tests.conftest import ROOT, pdv_env
from vault import config

PDV = [sys.executable, "-m", "pdvault_client.cli"]

# `os.environ.get("X")`, `os.environ["X"]`, `os.getenv("X")`, `environ.setdefault("X", ...)`.
_READ = re.compile(r"""(?:environ(?:\.get|\.setdefault)?\s*[\[(]|getenv\()\s*["']([A-Z_]+)["']""")
# The client's `secret_variable("X")` reads X and X_FILE.
_SECRET = re.compile(r"""secret_variable\(\s*["']([A-Z_]+)["']""")


def variables_read() -> set[str]:
    """Every variable named in a read of the environment by the service, the CLI or the client
    library, plus the server's settings (vault/config.py `Settings`) and PDV_CONFIG."""
    sources = [
        *(ROOT / "vault").rglob("*.py"),
        *(ROOT / "clients/python/pdvault_client").rglob("*.py"),
    ]
    texts = [path.read_text("utf-8") for path in sources]
    found = {name for text in texts for name in _READ.findall(text)}
    secrets = {name for text in texts for name in _SECRET.findall(text)}
    found |= secrets | {f"{name}_FILE" for name in secrets}
    return found | set(config.defaults()) | {"PDV_CONFIG"}


def documented() -> dict[str, str]:
    """Every variable `pdv --help` lists, with its default as shown ("" for none)."""
    return {
        "PDV_CONFIG": "",
        **{v.name: v.default for v in CLIENT_VARIABLES},
        **config.defaults(),  # the server's, where both read a variable
    }


def pdv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PDV, *args], env=pdv_env(), capture_output=True, text=True, timeout=60, check=False
    )


def test_the_scan_finds_the_variables_we_know_of() -> None:
    found = variables_read()
    assert {"PDV_API_KEY", "PDV_TLS_CA", "PDV_TLS_SERVER_NAME", "GRPC_VERBOSITY"} <= found
    assert {"PDV_API_KEY_FILE", "VAULT_TOKEN_FILE", "PDV_DATABASE_URL_FILE"} <= found
    assert "PDV_LOG_LEVEL" in found
    assert len(found) >= 34


def test_help_lists_every_environment_variable() -> None:
    out = pdv("--help")
    assert out.returncode == 0
    missing = [v for v in sorted(variables_read()) if not re.search(rf"\b{v}\b", out.stdout)]
    assert missing == []
    assert set(documented()) == variables_read()  # and nothing that the code does not read


def test_help_shows_the_defaults_the_code_uses() -> None:
    """Each line is generated from the one statement of its default (issue #10 §5)."""
    out = pdv("--help").stdout
    for _title, rows in config.environment():
        for name, text in rows:
            assert f"  {name:<26} {text}\n" in out
    for name, default in config.defaults().items():
        if default:
            assert re.search(rf"  {name} +.*\({re.escape(default)}\)", out), name
    assert "  PDV_MAX_WORKERS            threads per process running the use cases (16)\n" in out
    for v in CLIENT_VARIABLES:
        assert f"  {v.name:<26} {v.line()}\n" in out
    assert "(127.0.0.1:50051); --addr wins" in out


def _readme_table() -> list[tuple[list[str], str]]:
    """The README's configuration table: (the variables of a row, its default cell)."""
    readme = (ROOT / "README.md").read_text("utf-8")
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and cells[0] not in {"variable", "---"}:
            rows.append((re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0]), cells[1]))
    return rows


def test_the_readme_configuration_table_lists_every_environment_variable() -> None:
    named = [name for names, _default in _readme_table() for name in names]
    assert sorted(named) == sorted(variables_read())  # each once


def test_the_readme_configuration_table_states_the_defaults_the_code_uses() -> None:
    """The meaning is the README's own wording; the default is the one `pdv --help` shows."""
    expected = documented()
    for names, default in _readme_table():
        assert len(names) == 1, f"one variable a row, with its own default: {names}"
        assert default.replace("`", "") == expected[names[0]], names[0]


def test_help_lists_the_exit_statuses() -> None:
    out = pdv("--help").stdout
    for code, text in EXIT_CODES:
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
    assert environment.version() == _pyproject_version()
    monkeypatch.setattr(environment, "__file__", "/nonexistent/pdvault_client/cli/environment.py")
    assert environment.version() == "unknown"


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
        *(
            [["document", a] for a in ("upload", "show", "get", "list", "delete", "hold")]
            + [["document", "verified"], ["document", "sweep"], ["retention", "sweep"]]
        ),
        ["policy", "check"],
        ["policy", "reload"],
    ],
)
def test_every_client_command_takes_output(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    assert "--output {text,json}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main([*command, "--output", "yaml"])
    assert done.value.code == 2
    assert "invalid choice: 'yaml'" in capsys.readouterr().err

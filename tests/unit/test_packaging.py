"""Two distributions, each file in one of them: the client (`pdvault-client`, clients/python:
the generated API, the client library, the `pdv` command) and the server (`pdvault`, the
repository's root: the `vault` package), which depends on the client at the same version."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

CLIENT = ROOT / "clients" / "python"


def _project(pyproject: Path) -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads(pyproject.read_text("utf-8"))["project"]
    return project


def test_every_distribution_has_the_same_version() -> None:
    server, client = _project(ROOT / "pyproject.toml"), _project(CLIENT / "pyproject.toml")
    assert client["version"] == server["version"]
    assert f"pdvault-client=={client['version']}" in server["dependencies"]


def test_one_pdv_command_in_the_client_distribution() -> None:
    assert "scripts" not in _project(ROOT / "pyproject.toml")
    assert _project(CLIENT / "pyproject.toml")["scripts"] == {"pdv": "pdvault_client.cli:main"}


def _wheel(source: Path, out: Path) -> zipfile.ZipFile:
    """Build the distribution in `source` as pip would, without its dependencies."""
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, "--wheel-dir", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def _packages(wheel: zipfile.ZipFile) -> set[str]:
    return {name.split("/", 1)[0] for name in wheel.namelist() if ".dist-info/" not in name}


@pytest.mark.slow
def test_the_wheels_ship_each_file_once(tmp_path: Path) -> None:
    # Built from copies, so that the build leaves nothing in the checkout.
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(CLIENT, tmp_path / "client", ignore=ignore)
    shutil.copytree(ROOT / "vault", tmp_path / "server" / "vault", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / "server" / name)
    client = _wheel(tmp_path / "client", tmp_path / "client-wheel")
    server = _wheel(tmp_path / "server", tmp_path / "server-wheel")

    assert _packages(client) == {"pdvault", "pdvault_client"}
    assert _packages(server) == {"vault"}
    names = set(client.namelist())
    assert {"pdvault/v1/token_service_pb2.pyi", "pdvault_client/py.typed"} <= names
    assert "pdvault_client/cli/__main__.py" in names
    assert "vault/domain/policies/default.toml" in server.namelist()

    def dist_info(wheel: zipfile.ZipFile, name: str) -> str:
        [path] = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
        return wheel.read(path).decode()

    assert "pdv = pdvault_client.cli:main" in dist_info(client, "entry_points.txt")
    assert not any(n.endswith("entry_points.txt") for n in server.namelist())
    version = _project(ROOT / "pyproject.toml")["version"]
    assert f"Requires-Dist: pdvault-client=={version}\n" in dist_info(server, "METADATA")

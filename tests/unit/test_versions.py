"""Every package of a release carries one version (issue #15 item 3): the server, the Python
client (which the server pins exactly), the Node.js client when it is there, and the CHANGELOG's
latest entry; and the API reference is generated from the protos as they are."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _version(path: Path) -> str:
    version: str = tomllib.loads(path.read_text())["project"]["version"]
    return version


def test_one_version_everywhere() -> None:
    server = _version(ROOT / "pyproject.toml")
    assert _version(ROOT / "clients" / "python" / "pyproject.toml") == server
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"pdvault-client=={server}" in deps
    node = ROOT / "clients" / "node" / "package.json"
    if node.exists():
        assert json.loads(node.read_text())["version"] == server
    latest = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert latest is not None
    assert latest.group(1) == server


def test_the_installed_pdv_says_its_version() -> None:
    from importlib.metadata import version

    assert version("pdvault-client") == _version(ROOT / "pyproject.toml")

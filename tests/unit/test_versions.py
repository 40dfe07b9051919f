"""Every package of a release carries one version (issue #15 item 3): the server, the Python
client (which the server pins exactly), the Node.js client (its package.json, lock file and
`VERSION`), and the CHANGELOG's latest entry; and the API reference is generated from the
protos as they are."""

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
    node = ROOT / "clients" / "node"
    assert json.loads((node / "package.json").read_text())["version"] == server
    lock = json.loads((node / "package-lock.json").read_text())
    assert lock["version"] == lock["packages"][""]["version"] == server
    # The version the Node.js client states (its user agent, `VERSION`), kept beside the code.
    source = (node / "src" / "client.ts").read_text()
    stated = re.search(r'^export const VERSION = "([^"]+)";$', source, re.M)
    assert stated is not None
    assert stated.group(1) == server
    latest = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert latest is not None
    assert latest.group(1) == server


def test_the_installed_pdv_says_its_version() -> None:
    from importlib.metadata import version

    assert version("pdvault-client") == _version(ROOT / "pyproject.toml")

"""The API never breaks its clients: `buf breaking` against the image of the last release
(protos/releases/v0.1.0.binpb, committed so that a clone without tags can check it), which
`make api` runs. Here: that the check passes today, lets additions through, and catches a
removed field."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import IN_CI, ROOT

BUF = ROOT / "node_modules" / ".bin" / "buf"
RELEASE = ROOT / "protos" / "releases" / "v0.1.0.binpb"
TOKEN_SERVICE = Path("protos/pdvault/v1/token_service.proto")

if not BUF.exists() and not IN_CI:
    pytest.skip(
        "node_modules/.bin/buf is absent: run `make api` (npm ci) to install it",
        allow_module_level=True,
    )


def _workspace(tmp_path: Path) -> Path:
    """A copy of the buf workspace (our protos and the vendored googleapis ones)."""
    shutil.copy(ROOT / "buf.work.yaml", tmp_path / "buf.work.yaml")
    shutil.copytree(ROOT / "protos" / "pdvault", tmp_path / "protos" / "pdvault")
    shutil.copy(ROOT / "protos" / "buf.yaml", tmp_path / "protos" / "buf.yaml")
    shutil.copytree(ROOT / "third_party", tmp_path / "third_party")
    return tmp_path


def _breaking(workspace: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), "breaking", "protos", "--against", str(RELEASE)],
        cwd=workspace,
        env={**os.environ, "BUF_CACHE_DIR": str(workspace / ".buf-cache")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _edit(workspace: Path, pattern: str, replacement: str) -> None:
    path = workspace / TOKEN_SERVICE
    text, count = re.subn(pattern, replacement, path.read_text(), count=1, flags=re.M)
    assert count == 1, pattern
    path.write_text(text)


def test_todays_api_is_compatible_with_the_release(tmp_path: Path) -> None:
    out = _breaking(_workspace(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr


def test_an_added_field_is_not_breaking(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    _edit(
        ws,
        r"^(message DetokenizeRequest \{\n)",
        r"\1  // A field added later.\n  string added_later = 99;\n",
    )
    out = _breaking(ws)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_removed_field_fails_the_check(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    _edit(ws, r"^\s*string justification = 3 \[[^\]]*\];\n", "")
    out = _breaking(ws)
    assert out.returncode != 0
    assert 'Previously present field "3" with name "justification"' in out.stdout + out.stderr

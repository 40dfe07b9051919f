"""scripts/image_support.py, the image stage's helper (deploy/ci-image.sh): its `health`
command waits as long as `--wait` says for every named service to answer SERVING."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "image_support.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_support", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wait_reaches_the_health_check(monkeypatch: pytest.MonkeyPatch) -> None:
    support = _load()
    seen: list[tuple[Any, ...]] = []

    def health(target: str, services: list[str], wait: float) -> int:
        seen.append((target, services, wait))
        return 0

    monkeypatch.setattr(support, "health", health)
    argv = ["image_support.py", "health", "127.0.0.1:8081", "--wait", "120", "liveness", ""]
    monkeypatch.setattr(sys, "argv", argv)
    assert support.main() == 0
    assert seen == [("127.0.0.1:8081", ["liveness", ""], 120.0)]


def test_no_answer_within_the_wait_is_a_failure(capsys: pytest.CaptureFixture[str]) -> None:
    support = _load()
    # Nothing listens on port 1: the check gives up once the wait is over, with one line.
    assert support.health("127.0.0.1:1", ["liveness"], 0.0) == 1
    assert "health 127.0.0.1:1:" in capsys.readouterr().err

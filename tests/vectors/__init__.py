"""Known-answer vectors, loaded by one helper (as pyca's load_vectors_from_file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def load_vectors(name: str) -> list[dict[str, Any]]:
    doc = json.loads((HERE / name).read_text("utf-8"))
    vectors: list[dict[str, Any]] = doc["vectors"]
    return vectors

"""Helpers for the Transit emulator's own tests: a real hvac client, raw HTTP, base64."""

from __future__ import annotations

import base64
from typing import Any

import hvac
import requests

from transit_emulator import TransitEmulator

ROOT = "root-token"
ENVELOPE_KEYS = {
    "request_id",
    "lease_id",
    "renewable",
    "lease_duration",
    "data",
    "wrap_info",
    "warnings",
    "auth",
    "mount_type",
}
INVALID_TOKEN = ["2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"]
PERMISSION_DENIED = ["1 error occurred:\n\t* permission denied\n\n"]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def vault(emu: TransitEmulator, token: str | None = ROOT, **kwargs: Any) -> Any:
    """A real hvac client. Typed ``Any``: the hvac stubs leave most methods untyped."""
    return hvac.Client(url=emu.url, token=token, **kwargs)


def raw(emu: TransitEmulator, method: str, path: str, body: Any = None) -> requests.Response:
    """One request without hvac, where the exact status, headers or body matter."""
    return requests.request(
        method, f"{emu.url}/v1/{path}", json=body, timeout=5, headers={"X-Vault-Token": ROOT}
    )

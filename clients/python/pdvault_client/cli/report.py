"""How `pdv` says things: errors as `STATUS: message` on standard error (each violation once,
then what to try), answers as JSON for scripts or as one-line text for people."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from typing import Any

from pdvault_client.address import DEFAULT_ADDR
from pdvault_client.errors import PdvaultError


def report(error: PdvaultError, args: argparse.Namespace) -> None:
    """STATUS: message on standard error; each violation once; then what to try, if we know."""
    for line in error_lines(error, args):
        print(line, file=sys.stderr)


def error_lines(error: PdvaultError, args: argparse.Namespace) -> list[str]:
    code = error.code.name
    violations = [f"{v.field}: {v.description} [{v.rule}]" for v in error.violations]
    # The message of an INVALID_ARGUMENT repeats its first violation: print the violations.
    lines = (
        [f"{code}: {violations[0]}", *(f"  {v}" for v in violations[1:])]
        if violations
        else [f"{code}: {error.message}"]
    )
    for v in error.violations:
        hint = _did_you_mean(v.rule, v.description, args)
        if hint:
            lines.append(f"  {hint}")
    if error.reason == "APPROVAL_REQUIRED" and error.metadata.get("request_id"):
        request = error.metadata["request_id"]
        lines.append(
            f"  next: another operator runs `pdv approval approve {request}` (or reject) "
            f"before {error.metadata.get('expires_at', 'it expires')}"
        )
    if code == "UNAVAILABLE" and not error.reason:
        # No ErrorInfo: the channel failed before any server answered.
        lines.append(f"  {connection_hint(error.message)}")
    return lines


def _did_you_mean(rule: str, description: str, args: argparse.Namespace) -> str:
    """For a near-miss category or purpose: the server's violation lists the policy's names
    ("must be a category of the policy: a, b, c"), so the CLI needs no policy of its own."""
    kind = rule.removesuffix(".unknown")
    sent = getattr(args, kind, None) if rule in {"category.unknown", "purpose.unknown"} else None
    if not isinstance(sent, str) or ": " not in description:
        return ""
    names = [n.strip() for n in description.rsplit(": ", 1)[1].split(",")]
    near = difflib.get_close_matches(sent, names, n=1)
    return f"did you mean --{kind} {near[0]}?" if near else ""


def connection_hint(message: str) -> str:
    addr = os.environ.get("PDV_ADDR") or DEFAULT_ADDR
    low = message.lower()
    tls = bool(os.environ.get("PDV_TLS_CA"))
    if "wrong_version_number" in low or ("handshake" in low and "ssl" in low and tls):
        return (
            f"the server at {addr} does not answer in TLS: unset PDV_TLS_CA if it serves "
            "plaintext (no PDV_TLS_CERT), or check PDV_ADDR"
        )
    if "certificate" in low or "handshake" in low:
        return (
            "TLS failed: PDV_TLS_CA must hold the CA that signed the server's certificate, "
            "and PDV_TLS_SERVER_NAME the name in it if it differs from the host"
        )
    if "resolv" in low or "lookup" in low:
        return f"cannot resolve the host of PDV_ADDR={addr}"
    if tls:
        return (
            f"is `pdv serve` running at {addr}, with TLS (PDV_TLS_CERT, PDV_TLS_KEY)? "
            "PDV_TLS_CA is set, so this client speaks TLS. If it requires client certificates "
            "(PDV_TLS_CLIENT_CA), give yours: --tls-client-cert and --tls-client-key, signed "
            "by that CA and current"
        )
    return (
        f"is `pdv serve` running at {addr}? If it serves TLS (PDV_TLS_CERT), set PDV_TLS_CA "
        "to the CA that signed its certificate"
    )


def error_dict(error: PdvaultError) -> dict[str, Any]:
    return {
        "code": error.code.name,
        "message": error.message,
        "reason": error.reason,
        "metadata": dict(error.metadata),
        "violations": [
            {"field": v.field, "rule": v.rule, "description": v.description}
            for v in error.violations
        ],
    }


def print_json(answer: object) -> None:
    print(json_text(answer))


def json_text(answer: object) -> str:
    return json.dumps(answer, indent=2, sort_keys=True, ensure_ascii=False)


def one_line(text: str) -> str:
    """A value on one line of TOKEN<TAB>value output, reversibly."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")

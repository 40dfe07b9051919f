"""Policies: a path (exact, ``+`` segment or trailing ``*`` glob) to capabilities.

Tests build them from pdvault's HCL files (``tests/conftest.py``'s ``hcl_policy``). Every token
also has the built-in ``default`` policy's self-service grants (reference section 6).
"""

from __future__ import annotations

import re

from transit_emulator.errors import PERMISSION_DENIED
from transit_emulator.state import Token

DEFAULT_POLICY = {
    "auth/token/lookup-self": {"read"},
    "auth/token/renew-self": {"update"},
    "auth/token/revoke-self": {"update"},
}


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    glob = pattern.endswith("*")
    body = pattern[:-1] if glob else pattern
    regex = "/".join("[^/]+" if seg == "+" else re.escape(seg) for seg in body.split("/"))
    return re.compile(regex + (".*" if glob else ""), re.DOTALL)


def capabilities(rules: dict[str, set[str]], path: str, listing: bool) -> set[str]:
    """An exact rule wins (for LIST also without the trailing slash Vault adds), else the
    longest matching ``*``/``+`` rule: a simplification of Vault's priority order."""
    exact = [path.rstrip("/"), path] if listing else [path]
    for candidate in exact:
        if candidate in rules:
            return rules[candidate]
    best: tuple[int, set[str]] | None = None
    for pattern, caps in rules.items():
        wildcard = "*" in pattern or "+" in pattern
        longer = best is None or len(pattern) > best[0]
        if wildcard and longer and _pattern_regex(pattern).fullmatch(path):
            best = (len(pattern), caps)
    return best[1] if best else set()


def authorize(token: Token | None, op: str, path: str) -> None:
    """Raise 403 ``permission denied`` unless the token's policies grant ``op`` on ``path``."""
    if token is None or token.rules is None:  # unauthenticated route, or root
        return
    rules = {p: set(c) for p, c in token.rules.items()}
    for p, caps in DEFAULT_POLICY.items():
        rules[p] = rules.get(p, set()) | caps
    listing = op == "list"
    granted = capabilities(rules, path.rstrip("/") + "/" if listing else path, listing)
    if "deny" in granted or op not in granted:
        raise PERMISSION_DENIED

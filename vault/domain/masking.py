"""Masked renderings of values, for callers whose view of a category is `masked`.

A mask shows at most what the payment industry accepts showing (PCI DSS 3.4.1: at most the
first six and last four digits of a PAN; pdvault shows only the last four) and nothing else.
"""

from __future__ import annotations

import ipaddress

from vault.domain.policy import Mask
from vault.domain.types import PlainValue, ValueKind

__all__ = ["REDACTED", "mask"]


_STAR = "*"
REDACTED = "[redacted]"


def mask(rule: Mask, value: PlainValue) -> str:
    if value.kind is ValueKind.BINARY:
        return REDACTED
    text = value.data.reveal_text()
    if rule is Mask.LAST4:
        return _keep_last(text, 4)
    if rule is Mask.LAST2:
        return _keep_last(text, 2)
    if rule is Mask.EMAIL:
        local, _, domain = text.rpartition("@")
        if not local:
            return REDACTED
        # A local part of one or two characters would be mostly shown: show none of it.
        return f"{local[:1] if len(local) > 2 else ''}{_STAR * 3}@{domain}"
    if rule is Mask.INITIALS:
        words = text.split()
        return " ".join(f"{w[0]}." for w in words) if words else REDACTED
    if rule is Mask.IP_PREFIX:
        return _ip_prefix(text)
    return REDACTED


def _keep_last(text: str, n: int) -> str:
    # Keep only the last n alphanumerics: a value shorter than 2n shows nothing, so that a short
    # value is never mostly revealed.
    alnum = [c for c in text if c.isalnum()]
    if len(alnum) < 2 * n:
        return _STAR * len(alnum)
    return _STAR * (len(alnum) - n) + "".join(alnum[-n:])


def _ip_prefix(text: str) -> str:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return REDACTED
    if addr.version == 4:
        net = ipaddress.ip_network(f"{addr}/16", strict=False)
        return f"{net.network_address}/16"
    net = ipaddress.ip_network(f"{addr}/32", strict=False)
    return f"{net.network_address}/32"

"""The server address a client is given: HOST:PORT, checked before any connection is tried."""

from __future__ import annotations

DEFAULT_ADDR = "127.0.0.1:50051"


def check_address(addr: str) -> str:
    """Return `addr` if it is HOST:PORT with a port from 1 to 65535; raise ValueError if not.

    The same rule as the server's PDV_ADDR (vault/config.py), copied rather than imported
    because this library installs without the server; a client needs a real port, so 0 (which
    the server accepts, to pick a free one) is refused here. gRPC itself would take `127.0.0.1`
    as port 443 and `http://host:port` as a name to resolve, and fail later with less to go on.
    """
    host, sep, port = addr.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")  # an IPv6 literal: [::1]:50051
    if (
        not sep
        or not host
        or "/" in host
        or (":" in host and not bracketed)
        or not port.isdigit()
        or not 1 <= int(port) <= 65535
    ):
        hint = " (no scheme: drop http:// or https://)" if "://" in addr else ""
        raise ValueError(
            f"{addr!r}: expected HOST:PORT with a port from 1 to 65535, e.g. {DEFAULT_ADDR}{hint}"
        )
    return addr

"""Who calls, and where: the API key (`--caller` or PDV_API_KEY) and the client certificate
(`--tls-client-cert`/`--tls-client-key` or PDV_TLS_CLIENT_CERT/PDV_TLS_CLIENT_KEY), the
address, TLS, and the client every client command gets. Each default here is the client's own
(this distribution installs without the server); tests/unit/test_config.py checks that they are
the server's."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from pdvault_client import Client
from pdvault_client.address import DEFAULT_ADDR, check_address
from pdvault_client.cli.exits import EXIT_FAILED, EXIT_INVALID, UsageError, exit_code_of
from pdvault_client.cli.report import report
from pdvault_client.errors import PdvaultError

DEFAULT_DATA_DIR = Path(".pdvault")  # as the server's Settings.data_dir
CREDENTIALS_FILE = "dev-credentials.json"  # written there by `pdv serve` (PDV_DEV_CREDENTIALS)
GRPC_VERBOSITY = "ERROR"  # gRPC core logs a failed TLS handshake at INFO, beside our own line

Run = Callable[[argparse.Namespace], int]
Handler = Callable[[Client, argparse.Namespace], int]


def with_client(handler: Handler) -> Run:
    """A client command: `handler` gets a connected client; a refusal becomes its exit status."""

    def run(args: argparse.Namespace) -> int:
        os.environ.setdefault("GRPC_VERBOSITY", GRPC_VERBOSITY)
        with connect(args) as client:
            try:
                return handler(client, args)
            except PdvaultError as exc:
                report(exc, args)
                return exit_code_of(exc)
            except ValueError as exc:
                # The client library refused the input before sending it (text that is not
                # UTF-8, for one); its messages name the field, never the value.
                print(f"{args.command_name}: {exc}", file=sys.stderr)
                return EXIT_INVALID
            except BrokenPipeError:
                raise  # `main` knows it: the reader went away
            except OSError as exc:
                # A local file failed under way (a full disk while a document is written, a
                # file that changed while it was uploaded): one line, not a traceback.
                where = f"{exc.filename}: " if exc.filename else ""
                print(f"{args.command_name}: {where}{exc.strerror or exc}", file=sys.stderr)
                return EXIT_FAILED

    return run


CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
PRIVATE_KEY = b"PRIVATE KEY-----"


def connect(args: argparse.Namespace) -> Client:
    addr = _address(args)
    ca = os.environ.get("PDV_TLS_CA")
    tls_ca = _pem("PDV_TLS_CA=", ca, CERTIFICATE, "PEM certificate") if ca else None
    cert = _given(args, "tls_client_cert", "PDV_TLS_CLIENT_CERT", os.getenv("PDV_TLS_CLIENT_CERT"))
    key = _given(args, "tls_client_key", "PDV_TLS_CLIENT_KEY", os.getenv("PDV_TLS_CLIENT_KEY"))
    if (cert is None) != (key is None):
        raise UsageError(
            "a client certificate goes with its key: --tls-client-cert and --tls-client-key "
            "(or PDV_TLS_CLIENT_CERT and PDV_TLS_CLIENT_KEY)"
        )
    tls_cert = tls_key = None
    if cert is not None and key is not None:
        tls_cert = _pem(*cert, CERTIFICATE, "PEM certificate")
        tls_key = _pem(*key, PRIVATE_KEY, "PEM private key")
    return Client(
        addr,
        api_key(args.caller, certificate=tls_cert is not None),
        timeout=args.timeout,
        tls_ca=tls_ca,
        tls_server_name=os.environ.get("PDV_TLS_SERVER_NAME") or None,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )


def _given(
    args: argparse.Namespace, flag: str, variable: str, value: str | None
) -> tuple[str, str] | None:
    """Where a file was named, for messages ("--tls-client-key " or "PDV_TLS_CLIENT_KEY="),
    and its path; the flag wins over the variable (read by the caller under its own name, so
    that tests/integration/test_cli_help.py finds it)."""
    path = getattr(args, flag, None)
    if path:
        return f"--{flag.replace('_', '-')} ", str(path)
    return (f"{variable}=", value) if value else None


def _pem(where: str, path: str, marker: bytes, what: str) -> bytes:
    """A PEM file's bytes; its content never reaches a message (it may be a private key)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {where}{path}: {exc.strerror}") from None
    if marker not in data:
        raise UsageError(f"{where}{path} holds no {what}")
    return data


def _address(args: argparse.Namespace) -> str:
    addr = os.environ.get("PDV_ADDR") or DEFAULT_ADDR
    try:
        return check_address(addr)
    except ValueError as exc:
        raise UsageError(f"{'--addr ' if args.addr else 'PDV_ADDR='}{exc}") from None


def secret_variable(name: str) -> str | None:
    """A secret from the environment: the variable `name`, or the file that `name`_FILE names
    (without its trailing newline), as the server reads its own secret settings. A Kubernetes
    Secret mounted as a file then never passes through the environment."""
    value = os.environ.get(name)
    path = os.environ.get(f"{name}_FILE")
    if not path:
        return value or None
    if value:
        raise UsageError(f"{name} and {name}_FILE are both set: use one")
    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise UsageError(f"{name}_FILE={path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{name}_FILE={path}: not UTF-8 text") from None
    return text.rstrip("\r\n") or None


def api_key(caller: str | None, certificate: bool = False) -> str | None:
    """The key to call with; None when a client certificate says who calls and no key is
    asked for (with both, the server requires them to name the same caller)."""
    key = secret_variable("PDV_API_KEY")
    if key:
        return key
    if not caller:
        if certificate:
            return None
        raise UsageError(
            "say who calls: --caller NAME, or set PDV_API_KEY or PDV_API_KEY_FILE, or give a "
            "client certificate "
            "(--tls-client-cert and --tls-client-key)"
        )
    data_dir = Path(os.environ.get("PDV_DATA_DIR") or DEFAULT_DATA_DIR)
    path = data_dir / CREDENTIALS_FILE
    try:
        keys = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"no {path}: start the server with `pdv serve` first (it writes the demo callers' "
            "keys there), or set PDV_API_KEY"
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:  # not JSON (or not UTF-8); the decoder's message could quote a key
        keys = None
    if not isinstance(keys, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in keys.items()
    ):
        raise UsageError(
            f"{path} is not a JSON object of caller names to API keys: delete it and restart "
            "`pdv serve` to write it again, or set PDV_API_KEY"
        )
    if caller not in keys:
        near = difflib.get_close_matches(caller, list(keys), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        known = ", ".join(sorted(keys))
        raise UsageError(f"no key for caller '{caller}' in {path} (callers there: {known}){hint}")
    return str(keys[caller])

"""The server's side of `pdv`: `serve`, `db upgrade` and `policy check`.

`pdv` itself (its parser, the client commands, the exit statuses) is `pdvault_client.cli`, in
the client distribution, which this one depends on. It loads this module by name when one of
these commands runs, so that a client-only install works without `vault` (see
pdvault_client/cli/__init__.py). Each function takes the parsed arguments and returns the exit
status; a mistake the user fixes raises UsageError, which `pdv` prints as one line after the
command's name. The modules that serve and migrate are imported when those commands run, so
that `pdv policy check` starts fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pdvault_client.cli.exits import EXIT_FAILED, EXIT_OK, UsageError
from pdvault_client.cli.report import print_json
from vault.config import Settings, load_settings
from vault.domain.policy_file import load_policy
from vault.errors import ConfigurationError, PdvaultError
from vault.logs import configure_logging

__all__ = ["db_upgrade", "policy_check", "serve"]


def serve(args: argparse.Namespace) -> int:
    settings = _settings()
    os.umask(0o077)  # the database, key file and credentials are for this user only
    configure_logging(args.log_level or settings.log_level)
    logging.getLogger("pdv").info("starting: %s", settings.describe())
    if settings.dev_credentials:
        print(
            f"pdv: API keys of the demo callers are in {settings.credentials_file}",
            file=sys.stderr,
        )
    try:
        return _run_server(settings)
    except Exception as exc:
        # One line naming what to fix: a start-up that would lose or hide data stops here.
        message = _startup_error(exc)
        if message is None:
            raise
        raise UsageError(message) from None


def _run_server(settings: Settings) -> int:
    from vault.app import build_app
    from vault.runtime import serve_processes
    from vault.transport.server import serve as serve_app

    processes = settings.effective_processes
    if processes > 1:
        return serve_processes(settings, processes)
    serve_app(build_app(settings), settings.addr)
    return EXIT_OK


def db_upgrade(_args: argparse.Namespace) -> int:
    from vault.storage import migrate
    from vault.storage.sql import make_engine, redact_url

    settings = _settings()
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = make_engine(settings.effective_database_url)
        migrate.upgrade(engine)
        revision = migrate.current_revision(engine)
    except Exception as exc:
        message = _startup_error(exc)
        if message is None:
            raise
        raise UsageError(message) from None
    print(f"database {redact_url(settings.effective_database_url)} at revision {revision}")
    return EXIT_OK


def policy_check(args: argparse.Namespace) -> int:
    path = args.file or (Path(os.environ["PDV_POLICY"]) if os.environ.get("PDV_POLICY") else None)
    try:
        policy = load_policy(path)
    except (ConfigurationError, OSError) as exc:
        print(f"pdv policy check: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return EXIT_FAILED
    findings = policy.check()
    if args.output == "json":
        print_json(
            {
                "policy": policy.name,
                "version": policy.version,
                "categories": len(policy.categories),
                "purposes": len(policy.purposes),
                "callers": len(policy.callers),
                "valid": True,
                "findings": findings,
            }
        )
        return EXIT_OK
    print(
        f"policy {policy.name} v{policy.version}: {len(policy.categories)} categories, "
        f"{len(policy.purposes)} purposes, {len(policy.callers)} callers: valid"
    )
    for finding in findings:
        print(f"- {finding}")
    return EXIT_OK


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigurationError as exc:
        raise UsageError(exc.message) from None


def _startup_error(exc: Exception) -> str | None:
    """The one line for an error that stops `serve` or `db upgrade` at start-up, or None when
    it is not one the user can act on (then the traceback is the report: a bug). Storage turns
    the driver's errors into StorageUnavailable, naming what to check and never the URL."""
    if isinstance(exc, PdvaultError):  # ConfigurationError, StorageUnavailable ...
        return exc.message
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return None

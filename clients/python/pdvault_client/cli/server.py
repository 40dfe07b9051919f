"""The server's side of `pdv`, loaded from the server distribution when it is installed.

`serve`, `db upgrade` and `policy check` run in `vault.cli`, and the server's settings (for
`pdv --help`) are described by `vault.config`: both ship in `pdvault`, which depends on this
distribution, never the other way round. They are loaded by name, here and only here, when one
of those commands runs or the help is printed; a client-only install (`pip install
pdvault-client`) says that the server is missing instead of failing on an import. The
import-linter contract "The client never imports the server" holds the rest of this package to
that.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from pdvault_client.cli.connection import Run
from pdvault_client.cli.exits import EXIT_FAILED

NOT_INSTALLED = (
    "the pdvault server is not installed here, only its client (pdvault-client): "
    "pip install pdvault"
)

Sections = list[tuple[str, list[tuple[str, str]]]]


def _load(name: str) -> ModuleType | None:
    """The server's module `name`, or None where the server is not installed."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name in {"vault", name}:
            return None
        raise  # the server is there but one of its dependencies is not: a broken install


def server_command(name: str) -> Run:
    """The command `vault.cli.<name>(args) -> exit status`, loaded when it runs."""

    def run(args: argparse.Namespace) -> int:
        module = _load("vault.cli")
        if module is None:
            print(f"{args.command_name}: {NOT_INSTALLED}", file=sys.stderr)
            return EXIT_FAILED
        command: Run = getattr(module, name)
        return command(args)

    return run


def server_environment() -> Sections | None:
    """The server's variables by section, `(name, meaning (default))`, or None without it."""
    module = _load("vault.config")
    if module is None:
        return None
    sections: Sections = module.environment()
    return sections

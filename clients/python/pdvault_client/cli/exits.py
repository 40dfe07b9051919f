"""What `pdv` exits with. The one table of exit statuses: `pdv --help` prints it and the README
copies it (tests/integration/test_cli_output.py checks both)."""

from __future__ import annotations

from pdvault_client.errors import PdvaultError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # argparse's own status for a usage error; ours too, for settings and files
EXIT_INVALID = 3
EXIT_REFUSED = 4
EXIT_UNAVAILABLE = 5

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success"),
    (EXIT_FAILED, "any other failure (INTERNAL, DATA_LOSS, a failed policy check ...)"),
    (EXIT_USAGE, "usage: a flag, an environment variable, a settings or credentials file"),
    (EXIT_INVALID, "invalid input: INVALID_ARGUMENT (a value, a category, a purpose ...)"),
    (
        EXIT_REFUSED,
        "refused: PERMISSION_DENIED, UNAUTHENTICATED, NOT_FOUND, FAILED_PRECONDITION",
    ),
    (EXIT_UNAVAILABLE, "try again later: UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED"),
)
_EXIT_BY_STATUS = {
    "INVALID_ARGUMENT": EXIT_INVALID,
    "PERMISSION_DENIED": EXIT_REFUSED,
    "UNAUTHENTICATED": EXIT_REFUSED,
    "NOT_FOUND": EXIT_REFUSED,
    "FAILED_PRECONDITION": EXIT_REFUSED,
    "UNAVAILABLE": EXIT_UNAVAILABLE,
    "DEADLINE_EXCEEDED": EXIT_UNAVAILABLE,
    "RESOURCE_EXHAUSTED": EXIT_UNAVAILABLE,
}


def exit_code_of(error: PdvaultError) -> int:
    return _EXIT_BY_STATUS.get(error.code.name, EXIT_FAILED)


class UsageError(Exception):
    """A mistake the user fixes in a flag, a variable or a file: one line, exit status 2.

    The server's commands (vault/cli.py) raise it too; `main` prints it after the command's
    name (`pdv serve: ...`)."""

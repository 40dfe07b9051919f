"""`main`: parse, run the command, and turn what went wrong into one line and an exit status."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from pdvault_client.cli.connection import Run
from pdvault_client.cli.exits import EXIT_FAILED, EXIT_USAGE, UsageError
from pdvault_client.cli.parser import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The global flags win over the environment, for the client and the server alike.
    if args.addr:
        os.environ["PDV_ADDR"] = args.addr
    if args.data_dir:
        os.environ["PDV_DATA_DIR"] = str(args.data_dir)
    run: Run = args.run
    try:
        return run(args)
    except UsageError as exc:
        print(f"{args.command_name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader went away (`pdv ... | head`): not an error worth a traceback. Point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED

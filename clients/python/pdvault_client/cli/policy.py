"""`pdv policy reload`: the server puts its policy file in force again (PolicyService).
`pdv policy check`, `explain` and `matrix` are the server's: they read the file, no server."""

from __future__ import annotations

import argparse

from pdvault_client import Client
from pdvault_client.cli.exits import EXIT_OK
from pdvault_client.cli.report import print_json


def reload(client: Client, args: argparse.Namespace) -> int:
    answer = client.policy().reload()
    if args.output == "json":
        print_json(answer)
        return EXIT_OK
    before = f"{answer['previousName']} v{answer['previousVersion']}"
    now = f"{answer['name']} v{answer['version']}"
    if answer["changed"]:
        print(f"policy {now} in force (was {before}); digest {answer['digest']}")
    else:
        print(f"policy {now} in force, unchanged; digest {answer['digest']}")
    return EXIT_OK

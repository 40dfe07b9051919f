"""`pdv caller ...`: callers' API keys, through the CallerService (operators: --caller ops).
`pdv caller bootstrap` is the server's (it writes the first operator key into the database)."""

from __future__ import annotations

import argparse
import sys

from pdvault_client import Client
from pdvault_client.cli.exits import EXIT_OK
from pdvault_client.cli.report import print_json


def add(client: Client, args: argparse.Namespace) -> int:
    return _issued(client.callers().add(args.name), args)


def rotate_key(client: Client, args: argparse.Namespace) -> int:
    return _issued(client.callers().add(args.name, rotation=True), args)


def revoke(client: Client, args: argparse.Namespace) -> int:
    client.callers().revoke(args.name, args.key_id)
    if args.output == "json":
        print_json({"caller": args.name, "keyId": args.key_id, "revoked": True})
    else:
        print(f"key {args.key_id} of {args.name} revoked: refused everywhere within a second")
    return EXIT_OK


def list_keys(client: Client, args: argparse.Namespace) -> int:
    keys = client.callers().list()
    if args.output == "json":
        print_json(keys)
        return EXIT_OK
    print(f"{'caller':<12} {'key id':<16}  {'created':<20} {'last used':<20} revoked")
    for k in keys:
        print(
            f"{k['caller']:<12} {k['keyId']:<16}  {_when(k.get('createdAt')):<20} "
            f"{_when(k.get('lastUsedAt')):<20} {_when(k.get('revokedAt')) or '-'}"
        )
    return EXIT_OK


def _when(value: object) -> str:
    return str(value)[:19].replace("T", " ") if value else ""


def _issued(answer: dict[str, object], args: argparse.Namespace) -> int:
    if args.output == "json":
        print_json(answer)
        return EXIT_OK
    print(answer["apiKey"])
    print(
        f"pdv: the key of {answer['caller']} (id {answer['keyId']}) is shown this once; it is "
        "stored only as a hash",
        file=sys.stderr,
    )
    return EXIT_OK

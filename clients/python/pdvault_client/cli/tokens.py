"""`pdv tokenize` and `pdv detokenize`. Values are printed by `detokenize` alone, and only to
standard output: the command's whole purpose, never a log line."""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any

from pdvault_client import Client, Detokenized, Field
from pdvault_client.cli.exits import EXIT_OK, exit_code_of
from pdvault_client.cli.report import error_dict, one_line, print_json, report


def tokenize(client: Client, args: argparse.Namespace) -> int:
    raw: str | bytes
    if args.value == "-":
        raw = sys.stdin.buffer.read() if args.binary else sys.stdin.read().rstrip("\n")
    else:
        raw = args.value.encode() if args.binary else args.value
    [result] = client.tokenize(
        args.subject,
        [Field(args.category, raw, card_token=args.card_token)],
        request_id=args.request_id,
    )
    if args.output == "json":
        print_json({"token": result.token, "category": result.category})
    else:
        print(result.token)
    return EXIT_OK


def detokenize(client: Client, args: argparse.Namespace) -> int:
    results = client.detokenize(
        args.tokens,
        args.purpose,
        justification=args.justification,
        legal_basis=args.legal_basis,
    )
    refused = [r.error for r in results if r.error is not None]
    status = exit_code_of(refused[0]) if refused else EXIT_OK
    if args.output == "json":
        print_json([_result_dict(r) for r in results])
        return status
    if len(results) == 1:
        [r] = results
        if r.error is not None:
            report(r.error, args)
        else:
            print(_shown(r))  # the granted value, to stdout only
        return status
    for r in results:
        if r.error is not None:
            print(f"{r.token}\t{r.error.code.name}: {one_line(r.error.message)}")
        else:
            print(f"{r.token}\t{one_line(_shown(r))}")  # the granted value, as above
    return status


def _shown(r: Detokenized) -> str:
    if r.masked is not None:
        return r.masked
    if isinstance(r.value, bytes):
        return "base64:" + base64.b64encode(r.value).decode("ascii")
    return r.value or ""


def _result_dict(r: Detokenized) -> dict[str, Any]:
    out: dict[str, Any] = {"token": r.token, "category": r.category}
    if r.error is not None:
        out["error"] = error_dict(r.error)
    elif r.masked is not None:
        out["masked"] = r.masked
    elif isinstance(r.value, bytes):
        out["value"] = {"binary": base64.b64encode(r.value).decode("ascii")}
    else:
        out["value"] = {"text": r.value}  # the granted value, as in detokenize
    return out

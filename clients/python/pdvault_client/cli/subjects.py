"""`pdv subject ...`: a data subject's requests as the privacy policy promises them (stop and
resume, shredding, export, consent, correction), through the SubjectService. Answers print as
indented text, or with --output json as the API's JSON form. An export adds the subject's
documents (the DocumentService's ListDocuments), and with --with-documents their content."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path
from typing import Any

from pdvault_client import Client
from pdvault_client.cli.documents import export_documents
from pdvault_client.cli.exits import EXIT_OK
from pdvault_client.cli.report import json_text, one_line, print_json


def show(client: Client, args: argparse.Namespace) -> int:
    return _answer(client.subjects().get(args.subject), args)


def stop(client: Client, args: argparse.Namespace) -> int:
    return _answer(client.subjects().stop(args.subject), args)


def resume(client: Client, args: argparse.Namespace) -> int:
    return _answer(client.subjects().resume(args.subject), args)


def shred(client: Client, args: argparse.Namespace) -> int:
    return _answer(client.subjects().shred(args.subject, by_subject=args.by_subject), args)


def consent(client: Client, args: argparse.Namespace) -> int:
    return _answer(client.subjects().consent(args.subject, args.purpose, granted=args.grant), args)


def correct(client: Client, args: argparse.Namespace) -> int:
    value = sys.stdin.read().rstrip("\n") if args.value == "-" else args.value
    return _answer(client.subjects().correct(args.token, value), args)


def export(client: Client, args: argparse.Namespace) -> int:
    bundle = client.subjects().export(args.subject)
    # Documents are not in ExportSubject's answer: listed (and, if asked, read) here.
    bundle["documents"] = export_documents(client, args.subject, args.with_documents)
    target: Path | None = args.file
    if target is None:
        return _answer(bundle, args)
    # A disclosure bundle to hand over: JSON whatever --output says, for this user only.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & 0o077:  # an existing file keeps its mode: make it private before writing
        os.fchmod(fd, 0o600)
        print(
            f"pdv: warning: {target} was readable by others ({mode:04o}); now 0600", file=sys.stderr
        )
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json_text(bundle) + "\n")
    if args.output == "json":
        print_json({"file": str(target)})
    else:
        print(f"wrote {target}")
    return EXIT_OK


def _answer(answer: dict[str, Any], args: argparse.Namespace) -> int:
    if args.output == "json":
        print_json(answer)
    else:
        print("\n".join(_text_lines(answer)))
    return EXIT_OK


def _text_lines(value: object, indent: int = 0) -> list[str]:
    """An answer as indented `name: value` lines, in the API's field order, for people."""
    pad = "  " * indent
    if isinstance(value, dict):
        lines = []
        for name, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{name}:")
                lines.extend(_text_lines(item, indent + 1))
            else:
                lines.append(f"{pad}{name}: {_scalar(item)}")
        return lines
    if isinstance(value, list):
        lines = []
        for item in value:
            inner = _text_lines(item, indent + 1)
            lines.append(f"{pad}- {inner[0].lstrip()}")
            lines.extend(inner[1:])
        return lines
    return [f"{pad}{_scalar(value)}"]


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or value in ("", [], {}):
        return "-"
    if isinstance(value, str):
        return one_line(value)
    return str(value)

"""`pdv document ...` and `pdv retention sweep`: identity documents through the DocumentService.

A document's content goes only where `-o` says (a file, written whole or not at all, or
standard output with `-o -`); everything else is metadata. With `-o -` nothing but the content
reaches standard output, and a failure's non-zero exit status says to discard what did."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from pdvault_client import Client, DeletedDocument, Document, LegalHold, Sweep
from pdvault_client.cli.exits import EXIT_OK, UsageError
from pdvault_client.cli.report import one_line, print_json

# Progress on standard error from this size on when it is a terminal (always with --progress).
PROGRESS_FROM = 1024 * 1024
_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "application/pdf": ".pdf"}


def upload(client: Client, args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        f = path.open("rb")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    with f:
        meter = _Meter.for_upload(args.progress, path.stat().st_size, sys.stderr)
        try:
            found = client.documents().upload(
                args.subject,
                args.type,
                f,
                media_type=args.media_type,
                insurer_number_masked=args.insurer_number_masked,
                progress=meter,
            )
        finally:
            if meter is not None:
                meter.finish()
    if args.output == "json":
        print_json(document_dict(found))
    else:
        print(found.id)
    return EXIT_OK


def show(client: Client, args: argparse.Namespace) -> int:
    found = client.documents().show(args.document_id)
    if args.output == "json":
        print_json(document_dict(found))
    else:
        print("\n".join(document_lines(found)))
    return EXIT_OK


def get(client: Client, args: argparse.Namespace) -> int:
    if not args.purpose and not args.disclosure:
        raise UsageError("say why: --purpose PURPOSE, or --disclosure for a disclosure request")
    to_stdout = args.out == "-"
    if to_stdout and args.output == "json":
        raise UsageError("-o - gives standard output to the document: --output json needs -o FILE")
    if to_stdout and sys.stdout.isatty():
        raise UsageError("refusing to write a document to a terminal: -o FILE, or pipe it")
    docs = client.documents()
    options: dict[str, Any] = {
        "variant": args.variant,
        "legal_basis": args.legal_basis or None,
        "justification": args.justification,
        "disclosure": args.disclosure,
    }
    if to_stdout:
        sys.stdout.flush()
        docs.download(args.document_id, args.purpose or "", sys.stdout.buffer, **options)
        sys.stdout.buffer.flush()
        return EXIT_OK
    target = Path(args.out)
    if not target.parent.is_dir():
        raise UsageError(f"-o {target}: no directory {target.parent}")
    try:
        found = docs.download(
            args.document_id, args.purpose or "", target, overwrite=args.force, **options
        )
    except FileExistsError:
        raise UsageError(f"{target} exists: choose another file, or --force") from None
    held = found.variant(args.variant)
    if args.output == "json":
        print_json({"file": str(target), "document": document_dict(found)})
    else:
        size = held.size if held else found.size
        print(f"wrote {target} ({args.variant}, {held.media_type if held else '-'}, {size} bytes)")
    return EXIT_OK


def list_documents(client: Client, args: argparse.Namespace) -> int:
    found = client.documents().list(args.subject)
    if args.output == "json":
        print_json([document_dict(d) for d in found])
        return EXIT_OK
    for d in found:  # one line each, oldest first: id, type, media type, size, uploaded
        print("\t".join([d.id, d.type, d.media_type, str(d.size), _when(d.created_at)]))
    return EXIT_OK


def delete(client: Client, args: argparse.Namespace) -> int:
    done = client.documents().delete(args.document_id)
    if args.output == "json":
        print_json(deleted_dict(done))
    else:
        print(f"deleted {done.document_id} at {_when(done.destroyed_at)}")
    return EXIT_OK


def hold(client: Client, args: argparse.Namespace) -> int:
    docs = client.documents()
    if not args.release:
        if args.hold_id:
            raise UsageError("--hold-id goes with --release")
        placed = docs.hold(args.document_id, args.reason)
        if args.output == "json":
            print_json(_hold_dict(placed))
        else:
            print(placed.hold_id)
        return EXIT_OK
    released = docs.release(args.document_id, args.hold_id or None)
    if args.output == "json":
        print_json({"documentId": args.document_id, "released": released})
    else:
        print(f"released {released} hold{'' if released == 1 else 's'} on {args.document_id}")
    return EXIT_OK


def verified(client: Client, args: argparse.Namespace) -> int:
    found = client.documents().mark_verified(args.document_id)
    if args.output == "json":
        print_json(document_dict(found))
    else:
        due = found.retention.due_at
        print(
            f"{found.id} verified at {_when(found.verified_at)}; "
            + (f"kept until {_when(due)}" if due else "no retention period running")
        )
    return EXIT_OK


def sweep(client: Client, args: argparse.Namespace) -> int:
    done = client.documents().sweep()
    if args.output == "json":
        print_json(sweep_dict(done))
    else:
        print(
            f"sweep {done.sweep_id}: {done.documents_destroyed} documents destroyed, "
            f"{done.originals_destroyed} originals destroyed (sanitized copies kept), "
            f"{done.documents_held} kept by a legal hold, {done.values_erased} values erased, "
            f"{done.blobs_deleted} blobs deleted, {done.retention_keys_destroyed} retention "
            f"keys destroyed, {done.documents_redestroyed} restored documents destroyed again"
        )
    return EXIT_OK


def export_documents(client: Client, subject: str, directory: Path | None) -> list[dict[str, Any]]:
    """The subject's documents for `subject export`: their metadata, and with a directory,
    every copy held written into it (a disclosure read), as `files` of each entry."""
    docs = client.documents()
    found = docs.list(subject)
    entries = [document_dict(d) for d in found]
    if directory is None:
        return entries
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {directory}: {exc.strerror}") from None
    for d, entry in zip(found, entries, strict=True):
        files: dict[str, str] = {}
        for v in d.variants:
            suffix = "" if v.variant == "original" else f".{v.variant}"
            target = directory / f"{d.id}{suffix}{_EXTENSIONS.get(v.media_type, '.bin')}"
            try:
                docs.download(d.id, "", target, variant=v.variant, disclosure=True, overwrite=False)
            except FileExistsError:
                raise UsageError(f"{target} exists: export into an empty directory") from None
            files[v.variant] = str(target)
        entry["files"] = files
    return entries


# -- how a document is shown ----------------------------------------------------------------------


def document_dict(d: Document) -> dict[str, Any]:
    """A document as JSON, in the names of document_service.proto (camelCase); enumerations
    as the CLI names them (passport, sanitized, not_scanned), times in RFC 3339 (UTC)."""
    r = d.retention
    return {
        "documentId": d.id,
        "subject": d.subject,
        "subjectDigest": d.subject_digest,
        "documentType": d.type,
        "mediaType": d.media_type,
        "createdAt": _iso(d.created_at),
        "uploadedBy": d.uploaded_by,
        "scanState": d.scan_state,
        "scanEngine": d.scan_engine,
        "variants": [
            {"variant": v.variant, "mediaType": v.media_type, "size": v.size} for v in d.variants
        ],
        "retention": {
            "rule": r.rule,
            "trigger": r.trigger,
            "keep": r.keep,
            "then": r.then,
            "legal": r.legal,
            "dueAt": _iso(r.due_at),
            "source": r.source,
        },
        "holds": [_hold_dict(h) for h in d.holds],
        "verifiedAt": _iso(d.verified_at),
        "retained": d.retained,
        "pages": d.pages,
        "insurerNumberMasked": d.insurer_number_masked,
    }


def deleted_dict(done: DeletedDocument) -> dict[str, Any]:
    return {"documentId": done.document_id, "destroyedAt": _iso(done.destroyed_at)}


def sweep_dict(done: Sweep) -> dict[str, Any]:
    return {
        "sweepId": done.sweep_id,
        "documentsDestroyed": done.documents_destroyed,
        "originalsDestroyed": done.originals_destroyed,
        "documentsHeld": done.documents_held,
        "valuesErased": done.values_erased,
        "blobsDeleted": done.blobs_deleted,
        "retentionKeysDestroyed": done.retention_keys_destroyed,
        "documentsRedestroyed": done.documents_redestroyed,
    }


def _hold_dict(h: LegalHold) -> dict[str, Any]:
    return {
        "holdId": h.hold_id,
        "reason": h.reason,
        "placedBy": h.placed_by,
        "placedAt": _iso(h.placed_at),
    }


def document_lines(d: Document) -> list[str]:
    """`pdv document show` for people: what it is, whether it can be read, how long it stays."""
    r = d.retention
    lines = [
        f"document: {d.id}",
        f"subject: {d.subject or '- (deleted; kept under its retention rule)'}",
        f"type: {d.type}",
        f"media type: {d.media_type}",
        f"size: {d.size} bytes",
        "variants: "
        + ", ".join(f"{v.variant} ({v.media_type}, {v.size} bytes)" for v in d.variants),
    ]
    if d.pages:
        lines.append(f"pages: {d.pages}")
    scan = f"{d.scan_state} ({one_line(d.scan_engine)})" if d.scan_engine else d.scan_state
    lines.append(f"scan: {scan}")
    lines.append(f"uploaded: {_when(d.created_at)} by {d.uploaded_by}")
    lines.append(f"verified: {_when(d.verified_at) if d.verified_at else 'not yet'}")
    if r.rule:
        duty = "; a legal duty to keep" if r.legal else ""
        lines.append(f"retention: {r.rule}: {r.keep} from {r.trigger}, then {r.then}{duty}")
        lines.append(f"  due: {_when(r.due_at) if r.due_at else 'not started'}")
        if r.source:
            lines.append(f"  source: {one_line(r.source)}")
    else:
        lines.append("retention: no rule (kept until its subject is deleted)")
    if d.holds:
        lines.append("holds:")
        lines.extend(
            f"  - {h.hold_id}: {one_line(h.reason)} (by {h.placed_by}, {_when(h.placed_at)})"
            for h in d.holds
        )
    else:
        lines.append("holds: none")
    if d.retained:
        lines.append("retained: kept after its subject's deletion")
    if d.type == "health_insurance_card":
        lines.append(f"insurer number masked: {'yes' if d.insurer_number_masked else 'no'}")
    return lines


def _iso(at: datetime | None) -> str | None:
    return at.isoformat().replace("+00:00", "Z") if at is not None else None


def _when(at: datetime | None) -> str:
    return _iso(at) or "-"


class _Meter:
    """An upload's progress on standard error: one line redrawn on a terminal, else a line
    every tenth. Called from gRPC's sending thread; prints nothing else."""

    def __init__(self, out: TextIO, redraw: bool) -> None:
        self._out = out
        self._redraw = redraw
        self._next_tenth = 0
        self._open = False

    @classmethod
    def for_upload(cls, asked: bool, size: int, out: TextIO) -> _Meter | None:
        tty = out.isatty()
        if asked or (tty and size >= PROGRESS_FROM):
            return cls(out, redraw=tty)
        return None

    def __call__(self, sent: int, total: int) -> None:
        percent = sent * 100 // total
        text = f"uploaded {_mib(sent)} of {_mib(total)} ({percent}%)"
        if self._redraw:
            print(f"\r{text}", end="", file=self._out, flush=True)
            self._open = True
        elif percent >= self._next_tenth:
            print(text, file=self._out, flush=True)
            self._next_tenth = percent // 10 * 10 + 10

    def finish(self) -> None:
        if self._open:  # end the redrawn line, so an error starts a line of its own
            print(file=self._out, flush=True)
            self._open = False


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"

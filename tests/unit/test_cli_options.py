"""Every argument of every `pdv` command reaches the call it is for (issue #10 §5: a parsed
`--legal-basis` once never reached the call).

The parser is walked: every command and subcommand, every option and positional argument.
Each has a probe: a command line that gives it a value of its own, and what must then arrive
(an argument of a client call, of the client's construction, of a server function, or the
output). `pdv` runs through its real `main`, with a fake in place of the `Client` that
`pdvault_client.cli.connection` builds, recording every call it gets. An argument without a
probe fails its own test: a new option needs one.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import vault.cli
from pdvault_client import (
    DeletedDocument,
    Detokenized,
    Document,
    Field,
    KeyStatus,
    LegalHold,
    Retention,
    RewrapStep,
    Sweep,
    Tokenized,
    Trimmed,
    VariantInfo,
)
from pdvault_client.cli import connection, main
from pdvault_client.cli.parser import build_parser
from vault.config import Settings
from vault.domain.policy import Policy
from vault.domain.policy_file import load_policy


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass
class Seen:
    """What one run of `pdv` did: its exit status, its output, the calls it made."""

    code: int | str | None
    out: str
    err: str
    calls: list[Call]
    tmp: Path

    def one(self, name: str) -> Call:
        found = [c for c in self.calls if c.name == name]
        assert len(found) == 1, (name, self.calls, self.err)
        return found[0]

    def json(self) -> Any:
        return json.loads(self.out)


Check = Callable[[Seen], object]


def arguments(parser: argparse.ArgumentParser, path: str = "") -> Iterator[tuple[str, str]]:
    """(command, argument) for every argument of every command under `parser`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from arguments(sub, f"{path} {name}".strip())
        elif not isinstance(action, argparse._HelpAction):
            yield path, action.option_strings[0] if action.option_strings else action.dest


# -- the fakes ------------------------------------------------------------------------------------

_STATUS = KeyStatus("local", "kek", 2, 1, 1, {1: 3, 2: 4}, 0, None)


@dataclass
class _Recorder:
    calls: list[Call] = field(default_factory=list)

    def add(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append(Call(name, args, kwargs))


RECORD = _Recorder()


class FakeClient:
    """The `Client` surface the CLI uses, recording each call and answering plausibly."""

    def __init__(self, addr: str, api_key: str | None, **kwargs: Any) -> None:
        RECORD.add("Client", addr, api_key, **kwargs)

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        RECORD.add("close")

    def tokenize(self, subject: str, fields: list[Field], **kwargs: Any) -> list[Tokenized]:
        RECORD.add("tokenize", subject, fields, **kwargs)
        return [Tokenized("tok_probe", f.category) for f in fields]

    def detokenize(self, tokens: list[str], purpose: str, **kwargs: Any) -> list[Detokenized]:
        RECORD.add("detokenize", tokens, purpose, **kwargs)
        return [Detokenized(t, "name", value="Ann") for t in tokens]

    def keys(self, **kwargs: Any) -> FakeKeys:
        RECORD.add("keys", **kwargs)
        return FakeKeys()

    def subjects(self) -> FakeSubjects:
        return FakeSubjects()

    def documents(self) -> FakeDocuments:
        return FakeDocuments()

    def callers(self) -> FakeCallers:
        return FakeCallers()

    def policy(self) -> FakePolicy:
        return FakePolicy()

    def approvals(self, **kwargs: Any) -> FakeApprovals:
        RECORD.add("approvals", **kwargs)
        return FakeApprovals()


_APPROVAL = {
    "requestId": "apr_" + "0" * 16,
    "action": "APPROVAL_ACTION_KEYS_TRIM",
    "parameters": {"min_version": "2"},
    "requestedBy": "ops",
    "state": "APPROVAL_STATE_EXECUTED",
    "decidedBy": "security",
    "outcome": "destroyed v1",
}


class FakeApprovals:
    def list(self) -> list[dict[str, Any]]:
        RECORD.add("list_approvals")
        return [_APPROVAL]

    def approve(self, request_id: str) -> dict[str, Any]:
        RECORD.add("approve", request_id)
        return _APPROVAL | {"requestId": request_id}

    def reject(self, request_id: str) -> dict[str, Any]:
        RECORD.add("reject", request_id)
        return _APPROVAL | {"requestId": request_id, "state": "APPROVAL_STATE_REJECTED"}


class FakePolicy:
    def reload(self) -> dict[str, Any]:
        RECORD.add("reload_policy")
        return {
            "name": "p",
            "version": 2,
            "digest": "sha256:" + "b" * 64,
            "previousName": "p",
            "previousVersion": 1,
            "previousDigest": "sha256:" + "a" * 64,
            "changed": True,
        }


class FakeCallers:
    def add(self, caller: str, rotation: bool = False) -> dict[str, Any]:
        RECORD.add("add_key", caller, rotation=rotation)
        return {"caller": caller, "keyId": "k" * 16, "apiKey": "pdv_probe"}

    def list(self) -> list[dict[str, Any]]:
        RECORD.add("list_keys")
        return [{"caller": "payment", "keyId": "k" * 16, "createdAt": "2026-11-29T00:00:00Z"}]

    def revoke(self, caller: str, key_id: str) -> None:
        RECORD.add("revoke", caller, key_id)


class FakeKeys:
    def status(self) -> KeyStatus:
        RECORD.add("status")
        return _STATUS

    def rotate(self) -> KeyStatus:
        RECORD.add("rotate")
        return _STATUS

    def rewrap_batch(self, *args: Any) -> RewrapStep:
        RECORD.add("rewrap_batch", *args)
        return RewrapStep(3, 0, 0, 2, "")

    def trim(self, *args: Any) -> Trimmed:
        RECORD.add("trim", *args)
        return Trimmed(_STATUS, (), {1: 3})


class FakeSubjects:
    """get, stop, resume, shred, export, consent, correct: each answers as the API would."""

    def __getattr__(self, name: str) -> Callable[..., dict[str, Any]]:
        def call(*args: Any, **kwargs: Any) -> dict[str, Any]:
            RECORD.add(name, *args, **kwargs)
            return {"subject": str(args[0]), "state": "ACTIVE"}

        return call


_DOCUMENT = Document(
    id="doc_probe",
    subject="s-base",
    subject_digest="ab" * 32,
    type="passport",
    media_type="image/jpeg",
    created_at=None,
    uploaded_by="kyc",
    scan_state="not_scanned",
    scan_engine="",
    variants=(VariantInfo("original", "image/jpeg", 4),),
    retention=Retention("documents.passport", "verified", "P7Y", "shred", True, None, "law"),
    holds=(),
    verified_at=None,
    retained=False,
    pages=0,
    insurer_number_masked=False,
)


class FakeDocuments:
    """The DocumentClient: each call recorded; a download writes four bytes where it is told."""

    def upload(self, subject: str, document_type: str, source: Any, **kwargs: Any) -> Document:
        RECORD.add("upload", subject, document_type, Path(source.name), **kwargs)
        if kwargs["progress"] is not None:
            kwargs["progress"](4, 4)
        return _DOCUMENT

    def download(self, document_id: str, purpose: str, target: Any, **kwargs: Any) -> Document:
        RECORD.add("download", document_id, purpose, target, **kwargs)
        if isinstance(target, Path):
            target.write_bytes(b"data")
        else:
            target.write(b"data")
        return _DOCUMENT

    def show(self, document_id: str) -> Document:
        RECORD.add("show", document_id)
        return _DOCUMENT

    def list(self, subject: str) -> list[Document]:
        RECORD.add("list", subject)
        return [_DOCUMENT]

    def delete(self, document_id: str) -> DeletedDocument:
        RECORD.add("delete", document_id)
        return DeletedDocument(document_id, None)

    def hold(self, document_id: str, reason: str) -> LegalHold:
        RECORD.add("hold", document_id, reason)
        return LegalHold("hold-1", reason, "legal", None)

    def release(self, document_id: str, hold_id: str | None) -> int:
        RECORD.add("release", document_id, hold_id)
        return 1

    def mark_verified(self, document_id: str) -> Document:
        RECORD.add("mark_verified", document_id)
        return _DOCUMENT

    def sweep(self) -> Sweep:
        RECORD.add("sweep")
        return Sweep("sweep-1", 1, 0, 0, 0, 0, 0, 0)


@pytest.fixture
def pdv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[[list[str]], Seen]:
    """`pdv argv...` in-process with the fakes; callers `base` and `probe` have keys."""
    (tmp_path / "dev-credentials.json").write_text('{"base": "key-base", "probe": "key-probe"}')
    for name in ("scan.jpg", "probe.jpg"):  # what `document upload` reads
        (tmp_path / name).write_bytes(b"\xff\xd8\xff\xe0")
    (tmp_path / "client.pem").write_bytes(CLIENT_CERT)
    (tmp_path / "client-key.pem").write_bytes(CLIENT_KEY)
    monkeypatch.setenv("PDV_DATA_DIR", str(tmp_path))  # main() copies --data-dir there
    monkeypatch.setenv("PDV_ADDR", "127.0.0.1:1")  # ... and --addr here
    for var in (
        "PDV_API_KEY",
        "PDV_TLS_CA",
        "PDV_TLS_SERVER_NAME",
        "PDV_TLS_CLIENT_CERT",
        "PDV_TLS_CLIENT_KEY",
        "PDV_CONFIG",
        "VAULT_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(connection, "Client", FakeClient)
    # The server's side: what `serve` and `policy check` hand their settings and files to.
    monkeypatch.setattr(os, "umask", lambda _mask: 0o022)
    monkeypatch.setattr(
        vault.cli, "configure_logging", lambda level, _format="text": RECORD.add("log", level)
    )

    def serve(settings: Settings) -> int:
        RECORD.add("serve", settings)
        return 0

    monkeypatch.setattr(vault.cli, "_run_server", serve)

    def policy(path: Path | None) -> Policy:
        RECORD.add("load_policy", path)
        return load_policy(None)

    monkeypatch.setattr(vault.cli, "load_policy", policy)
    _fake_audit(monkeypatch)

    def run(argv: list[str]) -> Seen:
        RECORD.calls.clear()
        code: int | str | None
        try:
            code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
        except SystemExit as exit_:
            code = exit_.code
        out = capsys.readouterr()
        return Seen(code, out.out, out.err, list(RECORD.calls), tmp_path)

    return run


def _fake_audit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit commands' database and checkpointer, and what they hand their arguments to."""
    import contextlib

    import vault.domain.credentials
    import vault.kms.audit_sink
    import vault.kms.checkpoints
    from vault.domain.audit_log import Verification
    from vault.domain.credentials import NewKey
    from vault.domain.types import CallerName

    class Checkpoints:
        verifier = "verifier-default"

    class Stores:
        audit = object()

    @contextlib.contextmanager
    def stores(_settings: Settings) -> Iterator[tuple[Any, Any]]:
        yield Stores(), Checkpoints()

    def verify(audit: object, verifier: str, files: list[Path]) -> Verification:
        RECORD.add("verify_audit", verifier, files)
        return Verification(entries=3, checkpoints=1, root=b"r" * 32)

    def inclusion(audit: object, seq: int) -> vault.kms.checkpoints.InclusionProof:
        RECORD.add("inclusion", seq)
        return vault.kms.checkpoints.InclusionProof(seq, b"{}", b"l" * 32, 4, b"r" * 32, [], "")

    class Tail:
        def __init__(self, audit: object, out: object, start: int) -> None:
            RECORD.add("tail", start)

        def step(self) -> int:
            RECORD.add("step")
            return 0

        def follow(self, stopping: object) -> None:
            RECORD.add("follow")

    def bootstrap(*args: Any) -> NewKey:
        RECORD.add("bootstrap", args[-1])
        return NewKey(CallerName(args[-1]), "k" * 16, "pdv_probe")

    monkeypatch.setattr(vault.cli, "_audit_stores", stores)
    monkeypatch.setattr(vault.kms.checkpoints, "verify_audit", verify)
    monkeypatch.setattr(vault.kms.checkpoints, "inclusion", inclusion)
    monkeypatch.setattr(vault.kms.audit_sink, "AuditTail", Tail)
    monkeypatch.setattr(vault.domain.credentials, "bootstrap_operator", bootstrap)


# -- the probes -----------------------------------------------------------------------------------

SUBJECT_ACTIONS = {"show": "get", "stop": "stop", "resume": "resume", "shred": "shred"}
SUBJECT_ACTIONS |= {"export": "export", "consent": "consent"}

# Each client command with its required arguments, called as caller `base`.
BASE: dict[str, list[str]] = {
    "tokenize": ["tokenize", "--subject", "s-base", "--category", "name", "v-base"],
    "detokenize": ["detokenize", "--purpose", "p-base", "tok_base"],
    **{f"keys {a}": ["keys", a] for a in ("status", "rotate", "rewrap", "trim")},
    **{f"subject {a}": ["subject", a, "s-base"] for a in SUBJECT_ACTIONS if a != "consent"},
    "subject consent": ["subject", "consent", "s-base", "--purpose", "p-base", "--grant"],
    "subject correct": ["subject", "correct", "tok_base", "v-base"],
    "document upload": [
        *("document", "upload", "--subject", "s-base", "--type", "passport", "{tmp}/scan.jpg")
    ],
    "document show": ["document", "show", "doc_base"],
    "document get": ["document", "get", "--purpose", "p-base", "-o", "{tmp}/out", "doc_base"],
    "document list": ["document", "list", "s-base"],
    "document delete": ["document", "delete", "doc_base"],
    "document verified": ["document", "verified", "doc_base"],
    "document hold": ["document", "hold", "doc_base", "--reason", "r-base"],
    "document sweep": ["document", "sweep"],
    "retention sweep": ["retention", "sweep"],
    "caller add": ["caller", "add", "payment"],
    "caller rotate-key": ["caller", "rotate-key", "payment"],
    "caller list": ["caller", "list"],
    "caller revoke": ["caller", "revoke", "payment", "--key-id", "k" * 16],
    "approval list": ["approval", "list"],
    "approval approve": ["approval", "approve", "apr_" + "1" * 16],
    "approval reject": ["approval", "reject", "apr_" + "1" * 16],
    "policy reload": ["policy", "reload"],
}

EXPLAIN = ["policy", "explain", "--caller", "legal", "--purpose", "third_party_provision"]
EXPLAIN += ["--category", "phone", "--format", "json"]


def _explained(seen: Seen, **request: object) -> bool:
    answer = seen.json()
    return all(answer["request"][k] == v for k, v in request.items())


def _client(seen: Seen) -> Call:
    return seen.one("Client")


# Not certificates: the CLI checks only that the files hold PEM of the right kind.
CLIENT_CERT = b"-----BEGIN CERTIFICATE-----\nprobe\n-----END CERTIFICATE-----\n"
CLIENT_KEY = b"-----BEGIN PRIVATE KEY-----\nprobe\n-----END PRIVATE KEY-----\n"
CERTIFIED = ["--tls-client-cert", "{tmp}/client.pem", "--tls-client-key", "{tmp}/client-key.pem"]


def common(command: str, option: str) -> tuple[list[str], Check] | None:
    """--caller, --timeout, --output and the client certificate, the same on every client
    command."""
    argv = [*BASE[command], "--caller", "base"]
    if option == "--caller":
        return [*argv, "--caller", "probe"], lambda s: _client(s).args[1] == "key-probe"
    if option == "--timeout":
        return [*argv, "--timeout", "7.5"], lambda s: _client(s).kwargs["timeout"] == 7.5
    if option == "--output":
        return [*argv, "--output", "json"], lambda s: s.json() is not None
    if option in {"--tls-client-cert", "--tls-client-key"}:
        # No --caller: the certificate says who calls, and no key is sent.
        kwarg, pem = (
            ("tls_cert", CLIENT_CERT) if option.endswith("cert") else ("tls_key", CLIENT_KEY)
        )
        return [
            *BASE[command],
            *CERTIFIED,
        ], lambda s: _client(s).kwargs[kwarg] == pem and _client(s).args[1] is None
    return None


def _field(seen: Seen) -> Field:
    fields: list[Field] = seen.one("tokenize").args[1]
    return fields[0]


def _export_file(seen: Seen) -> bool:
    bundle = json.loads((seen.tmp / "bundle.json").read_text())
    return bundle["subject"] == "s-base" and seen.out == f"wrote {seen.tmp / 'bundle.json'}\n"


def _with_documents(seen: Seen) -> bool:
    """Each copy of each document into DIR, read for disclosure; the bundle lists them."""
    download = seen.one("download")
    written = seen.tmp / "docs" / "doc_probe.jpg"
    bundle = seen.json()
    return (
        download.args == ("doc_probe", "", written)
        and download.kwargs == {"variant": "original", "disclosure": True, "overwrite": False}
        and written.read_bytes() == b"data"
        and bundle["documents"][0]["files"] == {"original": str(written)}
        and seen.one("list").args == ("s-base",)
    )


TOKENIZE = [*BASE["tokenize"], "--caller", "base"]
UPLOAD = [*BASE["document upload"], "--caller", "base"]
GET = [*BASE["document get"], "--caller", "base"]
HOLD = ["document", "hold", "doc_base", "--caller", "base"]
DETOKENIZE = [*BASE["detokenize"], "--caller", "base"]
CONSENT = ["subject", "consent", "s-base", "--purpose", "p-base", "--caller", "base"]

PROBES: dict[tuple[str, str], tuple[list[str], Check]] = {
    ("", "--version"): (["--version"], lambda s: s.code == 0 and s.out.startswith("pdv ")),
    ("", "--addr"): (
        ["--addr", "127.0.0.1:7", "keys", "status", "--caller", "base"],
        lambda s: _client(s).args[0] == "127.0.0.1:7",
    ),
    ("", "--data-dir"): (
        ["--data-dir", "/nonexistent/pdv", "keys", "status", "--caller", "base"],
        lambda s: s.code == 2 and "no /nonexistent/pdv/dev-credentials.json" in s.err,
    ),
    ("serve", "--log-level"): (
        ["serve", "--log-level", "debug"],
        lambda s: s.one("log").args == ("DEBUG",),
    ),
    ("tokenize", "--subject"): (
        [*TOKENIZE, "--subject", "s-probe"],
        lambda s: s.one("tokenize").args[0] == "s-probe",
    ),
    ("tokenize", "--category"): (
        [*TOKENIZE, "--category", "address"],
        lambda s: _field(s).category == "address",
    ),
    ("tokenize", "--card-token"): ([*TOKENIZE, "--card-token"], lambda s: _field(s).card_token),
    ("tokenize", "--binary"): ([*TOKENIZE, "--binary"], lambda s: _field(s).value == b"v-base"),
    ("tokenize", "--request-id"): (
        [*TOKENIZE, "--request-id", "req-probe"],
        lambda s: s.one("tokenize").kwargs["request_id"] == "req-probe",
    ),
    ("tokenize", "value"): (
        [*BASE["tokenize"][:-1], "v-probe", "--caller", "base"],
        lambda s: _field(s).value == "v-probe",
    ),
    ("detokenize", "--purpose"): (
        [*DETOKENIZE, "--purpose", "p-probe"],
        lambda s: s.one("detokenize").args[1] == "p-probe",
    ),
    ("detokenize", "--justification"): (
        [*DETOKENIZE, "--justification", "ticket-9"],
        lambda s: s.one("detokenize").kwargs["justification"] == "ticket-9",
    ),
    ("detokenize", "--legal-basis"): (
        [*DETOKENIZE, "--legal-basis", "public_interest"],
        lambda s: s.one("detokenize").kwargs["legal_basis"] == "public_interest",
    ),
    ("detokenize", "tokens"): (
        [*DETOKENIZE[:3], "tok_a", "tok_b", "--caller", "base"],
        lambda s: s.one("detokenize").args[0] == ["tok_a", "tok_b"],
    ),
    ("keys rewrap", "--batch-size"): (
        ["keys", "rewrap", "--caller", "base", "--batch-size", "7"],
        lambda s: s.one("rewrap_batch").args == (7,),
    ),
    ("keys trim", "--min-version"): (
        ["keys", "trim", "--caller", "base", "--min-version", "3"],
        lambda s: s.one("trim").args == (3,),
    ),
    ("subject consent", "--purpose"): (
        [*CONSENT, "--grant", "--purpose", "p-probe"],
        lambda s: s.one("consent").args[1] == "p-probe",
    ),
    ("subject consent", "--grant"): (
        [*CONSENT, "--grant"],
        lambda s: s.one("consent").kwargs == {"granted": True},
    ),
    ("subject consent", "--withdraw"): (
        [*CONSENT, "--withdraw"],
        lambda s: s.one("consent").kwargs == {"granted": False},
    ),
    ("subject export", "--file"): (
        [*BASE["subject export"], "--caller", "base", "--file", "{tmp}/bundle.json"],
        _export_file,
    ),
    ("subject correct", "token"): (
        ["subject", "correct", "tok_probe", "v-base", "--caller", "base"],
        lambda s: s.one("correct").args == ("tok_probe", "v-base"),
    ),
    ("subject correct", "value"): (
        ["subject", "correct", "tok_base", "v-probe", "--caller", "base"],
        lambda s: s.one("correct").args == ("tok_base", "v-probe"),
    ),
    ("subject export", "--with-documents"): (
        [
            *("subject", "export", "s-base", "--caller", "base", "--output", "json"),
            *("--with-documents", "{tmp}/docs"),
        ],
        _with_documents,
    ),
    ("document upload", "--subject"): (
        [*UPLOAD, "--subject", "s-probe"],
        lambda s: s.one("upload").args[0] == "s-probe" and s.out == "doc_probe\n",
    ),
    ("document upload", "--type"): (
        [*UPLOAD, "--type", "residence_card"],
        lambda s: s.one("upload").args[1] == "residence_card",
    ),
    ("document upload", "--media-type"): (
        [*UPLOAD, "--media-type", "image/png"],
        lambda s: s.one("upload").kwargs["media_type"] == "image/png",
    ),
    ("document upload", "--insurer-number-masked"): (
        [*UPLOAD, "--insurer-number-masked"],
        lambda s: s.one("upload").kwargs["insurer_number_masked"] is True,
    ),
    ("document upload", "--progress"): (
        [*UPLOAD, "--progress"],
        lambda s: s.err == "uploaded 0.0 MiB of 0.0 MiB (100%)\n",
    ),
    ("document upload", "file"): (
        [*UPLOAD[:-3], "{tmp}/probe.jpg", "--caller", "base"],
        lambda s: s.one("upload").args[2] == s.tmp / "probe.jpg",
    ),
    ("document show", "document_id"): (
        ["document", "show", "doc_probe", "--caller", "base"],
        lambda s: s.one("show").args == ("doc_probe",) and "type: passport" in s.out,
    ),
    ("document get", "--purpose"): (
        [*GET, "--purpose", "p-probe"],
        lambda s: s.one("download").args[1] == "p-probe",
    ),
    ("document get", "-o"): (
        [*GET, "-o", "{tmp}/probe.out"],
        lambda s: (
            s.one("download").args[2] == s.tmp / "probe.out"
            and (s.tmp / "probe.out").read_bytes() == b"data"
        ),
    ),
    ("document get", "--variant"): (
        [*GET, "--variant", "sanitized"],
        lambda s: s.one("download").kwargs["variant"] == "sanitized",
    ),
    ("document get", "--legal-basis"): (
        [*GET, "--legal-basis", "public_interest"],
        lambda s: s.one("download").kwargs["legal_basis"] == "public_interest",
    ),
    ("document get", "--justification"): (
        [*GET, "--justification", "ticket-9"],
        lambda s: s.one("download").kwargs["justification"] == "ticket-9",
    ),
    ("document get", "--disclosure"): (
        ["document", "get", "-o", "{tmp}/out", "doc_base", "--caller", "base", "--disclosure"],
        lambda s: (
            s.one("download").kwargs["disclosure"] is True and s.one("download").args[1] == ""
        ),
    ),
    ("document get", "--force"): (
        [*GET, "--force"],
        lambda s: s.one("download").kwargs["overwrite"] is True,
    ),
    ("document get", "document_id"): (
        [*GET[:-3], "doc_probe", "--caller", "base"],
        lambda s: s.one("download").args[0] == "doc_probe",
    ),
    ("document list", "subject"): (
        ["document", "list", "s-probe", "--caller", "base"],
        lambda s: s.one("list").args == ("s-probe",),
    ),
    ("document delete", "document_id"): (
        ["document", "delete", "doc_probe", "--caller", "base"],
        lambda s: s.one("delete").args == ("doc_probe",),
    ),
    ("document verified", "document_id"): (
        ["document", "verified", "doc_probe", "--caller", "base"],
        lambda s: s.one("mark_verified").args == ("doc_probe",),
    ),
    ("document hold", "--reason"): (
        [*HOLD, "--reason", "case 2026-118"],
        lambda s: s.one("hold").args == ("doc_base", "case 2026-118") and s.out == "hold-1\n",
    ),
    ("document hold", "--release"): (
        [*HOLD, "--release"],
        lambda s: s.one("release").args == ("doc_base", None),
    ),
    ("document hold", "--hold-id"): (
        [*HOLD, "--release", "--hold-id", "hold-9"],
        lambda s: s.one("release").args == ("doc_base", "hold-9"),
    ),
    ("document hold", "document_id"): (
        ["document", "hold", "doc_probe", "--reason", "r", "--caller", "base"],
        lambda s: s.one("hold").args[0] == "doc_probe",
    ),
    ("policy check", "--file"): (
        ["policy", "check", "--file", "probe.toml"],
        lambda s: s.one("load_policy").args == (Path("probe.toml"),),
    ),
    ("policy check", "--output"): (
        ["policy", "check", "--output", "json"],
        lambda s: s.json()["valid"],
    ),
    ("policy explain", "--caller"): (
        [*EXPLAIN, "--caller", "support"],
        lambda s: _explained(s, caller="support") and s.json()["decision"] == "refused",
    ),
    ("policy explain", "--purpose"): (
        [*EXPLAIN, "--purpose", "fraud_prevention"],
        lambda s: _explained(s, purpose="fraud_prevention") and s.json()["decision"] == "granted",
    ),
    ("policy explain", "--category"): (
        [*EXPLAIN, "--category", "email"],
        lambda s: _explained(s, category="email"),
    ),
    ("policy explain", "--legal-basis"): (
        [*EXPLAIN, "--legal-basis", "public_interest"],
        lambda s: _explained(s, legalBasis="public_interest") and s.json()["decision"] == "granted",
    ),
    ("policy explain", "--consent"): (
        [*EXPLAIN, "--consent"],
        lambda s: _explained(s, consent=True) and s.json()["decision"] == "granted",
    ),
    ("policy explain", "--stopped"): (
        [*EXPLAIN, "--stopped"],
        lambda s: _explained(s, stopped=True) and s.json()["rule"] == "subject:stopped",
    ),
    ("policy explain", "--policy"): (
        [*EXPLAIN, "--policy", "probe.toml"],
        lambda s: s.one("load_policy").args == (Path("probe.toml"),),
    ),
    ("policy explain", "--format"): (
        [*EXPLAIN, "--format", "text"],
        lambda s: s.out.startswith("REFUSED: caller legal reading phone"),
    ),
    ("policy matrix", "--policy"): (
        ["policy", "matrix", "--policy", "probe.toml"],
        lambda s: s.one("load_policy").args == (Path("probe.toml"),),
    ),
    ("policy matrix", "--format"): (
        ["policy", "matrix", "--format", "csv"],
        lambda s: s.out.startswith("caller,purpose,category,consent_required,"),
    ),
    ("policy matrix", "--view"): (
        ["policy", "matrix", "--format", "csv", "--view"],
        lambda s: s.out.startswith("caller,purpose,category,view,"),
    ),
    ("caller add", "name"): (
        ["caller", "add", "shipping", "--caller", "base"],
        lambda s: s.one("add_key").args == ("shipping",) and s.out == "pdv_probe\n",
    ),
    ("caller rotate-key", "name"): (
        ["caller", "rotate-key", "shipping", "--caller", "base"],
        lambda s: s.one("add_key").args == ("shipping",) and s.one("add_key").kwargs["rotation"],
    ),
    ("caller revoke", "name"): (
        ["caller", "revoke", "shipping", "--key-id", "k" * 16, "--caller", "base"],
        lambda s: s.one("revoke").args == ("shipping", "k" * 16),
    ),
    ("caller revoke", "--key-id"): (
        ["caller", "revoke", "payment", "--key-id", "p" * 16, "--caller", "base"],
        lambda s: s.one("revoke").args == ("payment", "p" * 16),
    ),
    ("subject shred", "--by-subject"): (
        ["subject", "shred", "s-base", "--caller", "base", "--by-subject"],
        lambda s: s.one("shred").kwargs == {"by_subject": True},
    ),
    ("approval approve", "request_id"): (
        ["approval", "approve", "apr_" + "2" * 16, "--caller", "base"],
        lambda s: (
            s.one("approve").args == ("apr_" + "2" * 16,)
            and "executed by security: destroyed v1" in s.out
        ),
    ),
    ("approval reject", "request_id"): (
        ["approval", "reject", "apr_" + "2" * 16, "--caller", "base"],
        lambda s: s.one("reject").args == ("apr_" + "2" * 16,) and "rejected by" in s.out,
    ),
    ("caller bootstrap", "--caller"): (
        ["caller", "bootstrap", "--caller", "ops"],
        lambda s: s.one("bootstrap").args == ("ops",) and s.out == "pdv_probe\n",
    ),
    ("audit verify", "--checkpoints"): (
        ["audit", "verify", "--checkpoints", "probe.jsonl"],
        lambda s: s.one("verify_audit").args[1] == [Path("probe.jsonl")],
    ),
    ("audit verify", "--verifier-key"): (
        ["audit", "verify", "--verifier-key", "v-probe"],
        lambda s: s.one("verify_audit").args[0] == "v-probe",
    ),
    ("audit verify", "--output"): (
        ["audit", "verify", "--output", "json"],
        lambda s: s.json()["entries"] == 3,
    ),
    ("audit proof", "seq"): (
        ["audit", "proof", "7"],
        lambda s: s.one("inclusion").args == (7,),
    ),
    ("audit proof", "--output"): (
        ["audit", "proof", "7", "--output", "json"],
        lambda s: s.json()["seq"] == 7,
    ),
    ("audit tail", "--from"): (
        ["audit", "tail", "--from", "5"],
        lambda s: s.one("tail").args == (5,) and s.one("step") is not None,
    ),
    ("audit tail", "--follow"): (
        ["audit", "tail", "--follow"],
        lambda s: s.one("follow") is not None,
    ),
}


def probe(command: str, argument: str) -> tuple[list[str], Check] | None:
    if command in BASE and (found := common(command, argument)) is not None:
        return found
    action = command.removeprefix("subject ")
    if argument == "subject" and action in SUBJECT_ACTIONS:
        argv = [*BASE[command], "--caller", "base"]
        argv[2] = "s-probe"
        method = SUBJECT_ACTIONS[action]
        return argv, lambda s: s.one(method).args[0] == "s-probe"
    return PROBES.get((command, argument))


ALL = sorted(arguments(build_parser()))


def test_the_walk_finds_every_command_and_the_options_once_missed() -> None:
    commands = {command for command, _argument in ALL}
    assert {"", "serve", "tokenize", "detokenize", "keys trim", "subject correct"} <= commands
    assert ("detokenize", "--legal-basis") in ALL
    assert len(ALL) >= 60


@pytest.mark.parametrize(("command", "argument"), ALL)
def test_every_argument_reaches_its_call(
    pdv: Callable[[list[str]], Seen], command: str, argument: str
) -> None:
    found = probe(command, argument)
    assert found is not None, f"`pdv {command} {argument}` has no probe here: add one"
    argv, check = found
    seen = pdv(argv)
    assert check(seen), seen


# -- what a command's failure becomes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "code", "err"),
    [
        # The client library refused the input before sending it: its message names the field.
        (ValueError("fields[0].value: not UTF-8"), 3, "pdv tokenize: fields[0].value: not UTF-8\n"),
        (KeyboardInterrupt(), 1, ""),
        (BrokenPipeError(), 1, ""),  # `pdv ... | head`: no traceback
    ],
)
def test_a_failure_becomes_an_exit_status(
    pdv: Callable[[list[str]], Seen],
    monkeypatch: pytest.MonkeyPatch,
    raised: BaseException,
    code: int,
    err: str,
) -> None:
    def tokenize(*_args: Any, **_kwargs: Any) -> list[Tokenized]:
        raise raised

    class Stdout(io.StringIO):
        def fileno(self) -> int:
            return 1

    redirected: list[int] = []
    monkeypatch.setattr(FakeClient, "tokenize", tokenize)
    monkeypatch.setattr(sys, "stdout", Stdout())
    monkeypatch.setattr(os, "dup2", lambda _fd, fd2: redirected.append(fd2))  # not pytest's fd
    seen = pdv([*TOKENIZE])
    assert (seen.code, seen.err) == (code, err)
    assert redirected == ([1] if isinstance(raised, BrokenPipeError) else [])


def test_an_approval_sends_the_approvers_vault_token(
    pdv: Callable[[list[str]], Seen], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "hvs.probe")
    seen = pdv(["approval", "approve", "apr_" + "3" * 16, "--caller", "base"])
    assert seen.code == 0
    assert seen.one("approvals").kwargs == {"vault_token": "hvs.probe"}
    assert "hvs.probe" not in seen.out + seen.err

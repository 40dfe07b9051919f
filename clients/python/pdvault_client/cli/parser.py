"""The `pdv` command line: every command, its flags and its help, and what runs it.

Each command's parser carries `run` (argparse `set_defaults`): a client command is a handler
given a connected client (`with_client`), a server command is loaded from the server
distribution when it runs (`server_command`). `main` calls `args.run(args)`; nothing switches on
command names.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

from pdvault_client import DOCUMENT_TYPES, VARIANTS
from pdvault_client.address import DEFAULT_ADDR
from pdvault_client.cli import approvals, callers, documents, keys, subjects, tokens
from pdvault_client.cli import policy as policy_commands
from pdvault_client.cli.connection import DEFAULT_DATA_DIR, Handler, Run, with_client
from pdvault_client.cli.environment import epilog, version
from pdvault_client.cli.server import server_command

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")  # as vault.config.LOG_LEVELS
OUTPUTS = ("text", "json")
LEGAL_BASES = ("law_or_regulation", "public_interest", "public_function", "legitimate_rights")
# The document types an upload may name: the API's, but `unclassified`, which only documents
# migrated from the retired identity_document field have (document_service.proto). The back of
# a My Number card stays, so that the server's refusal names the law.
UPLOAD_TYPES = tuple(t for t in DOCUMENT_TYPES if t != "unclassified")

if TYPE_CHECKING:  # generic for the type checker only
    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


class _Pdv(argparse.ArgumentParser):
    """The top-level parser. Its epilog (the environment) is built only when the help is
    printed: it reads the server's settings table, which no command needs to parse."""

    def format_help(self) -> str:
        self.epilog = epilog()
        return super().format_help()


class _Version(argparse.Action):
    """`pdv --version`, looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str) -> None:
        super().__init__(option_strings, dest, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> NoReturn:
        print(f"pdv {version()}")
        parser.exit()


def _command(commands: Commands, name: str, run: Run, **kwargs: Any) -> argparse.ArgumentParser:
    cmd = commands.add_parser(name, **kwargs)
    cmd.set_defaults(run=run, command_name=cmd.prog)  # prog: `pdv keys rotate`
    return cmd


def _client_command(
    commands: Commands, name: str, handler: Handler, **kwargs: Any
) -> argparse.ArgumentParser:
    cmd = _command(commands, name, with_client(handler), **kwargs)
    cmd.add_argument(
        "--caller",
        help="call as this caller, with its key from <data dir>/dev-credentials.json "
        "($PDV_API_KEY takes precedence)",
    )
    cmd.add_argument(
        "--timeout", type=float, default=10.0, help="deadline in seconds (%(default)g)"
    )
    cmd.add_argument(
        "--tls-client-cert",
        type=Path,
        metavar="FILE",
        help="call with this client certificate (PEM; mTLS): it says who calls, --caller "
        "is then not needed ($PDV_TLS_CLIENT_CERT)",
    )
    cmd.add_argument(
        "--tls-client-key",
        type=Path,
        metavar="FILE",
        help="the private key of --tls-client-cert (PEM; $PDV_TLS_CLIENT_KEY)",
    )
    _output_option(cmd)
    return cmd


def _output_option(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--output",
        choices=OUTPUTS,
        default="text",
        help="text for people (default), or json for scripts",
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Pdv(
        prog="pdv",
        description="pdvault: an encrypted personal-data vault with a tokenization service.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action=_Version, help="print the version and exit")
    p.add_argument(
        "--addr", help=f"server address, HOST:PORT (default: $PDV_ADDR or {DEFAULT_ADDR})"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help=f"data directory (default: $PDV_DATA_DIR or ./{DEFAULT_DATA_DIR})",
    )
    commands = p.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=argparse.ArgumentParser
    )

    serve = _command(
        commands, "serve", server_command("serve"), help="run the server until interrupted"
    )
    serve.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=None,
        help="DEBUG, INFO, WARNING or ERROR (default: $PDV_LOG_LEVEL or INFO)",
    )
    _token_commands(commands)
    _key_commands(commands)
    _subject_commands(commands)
    _document_commands(commands)
    _retention_commands(commands)

    policy = commands.add_parser("policy", help="inspect the policy").add_subparsers(
        dest="policy_command", required=True, metavar="ACTION"
    )
    check = _command(
        policy,
        "check",
        server_command("policy_check"),
        help="validate a policy file and print its recorded decisions and warnings",
    )
    check.add_argument("--file", type=Path, help="policy file (default: $PDV_POLICY or shipped)")
    _output_option(check)
    _policy_review_commands(policy)

    db = commands.add_parser("db", help="database maintenance").add_subparsers(
        dest="db_command", required=True, metavar="ACTION"
    )
    _command(db, "upgrade", server_command("db_upgrade"), help="apply the database migrations")
    _audit_commands(commands)
    _caller_commands(commands)
    _approval_commands(commands)
    return p


def _approval_commands(commands: Commands) -> None:
    actions = commands.add_parser(
        "approval",
        help="dual control: approve or reject another operator's held step (--caller security)",
        description="With [dual_control] in the policy file, keys trim, caller revoke and an "
        "operator's subject shred wait for a second operator: the first call prints the "
        "request's id. Another caller with the approvals operation (never the requester) "
        "approves it, which carries the step out once, or rejects it. A request expires "
        "undecided. Approving a keys_trim on HashiCorp Vault needs your own Vault token in "
        "VAULT_TOKEN.",
    ).add_subparsers(dest="approval_command", required=True, metavar="ACTION")
    _client_command(
        actions,
        "list",
        approvals.list_requests,
        help="the newest requests: id, action, state, requester, expiry, parameters",
    )
    for name, handler, about in [
        ("approve", approvals.approve, "approve a pending request: its step is carried out now"),
        ("reject", approvals.reject, "reject a pending request: its step is never carried out"),
    ]:
        c = _client_command(actions, name, handler, help=about, description=about)
        c.add_argument("request_id", metavar="ID", help="the request's id (apr_...)")


def _policy_review_commands(policy: Commands) -> None:
    explain = _command(
        policy,
        "explain",
        server_command("policy_explain"),
        help="the decision for one read and every rule that took part (no server needed)",
        description="Ask the server's own evaluator whether CALLER may read a stored value of "
        "CATEGORY for PURPOSE, given the facts (a legal basis stated, consent recorded, the "
        "account stopped), and print its decision (granted or refused, the view), the rules it "
        "looked at in order, what the policy file says there, and the recorded decisions "
        "([[decisions]]) that concern the read. Names the policy does not have: exit status 2.",
    )
    explain.add_argument(
        "--caller",
        dest="explain_caller",
        metavar="CALLER",
        required=True,
        help="a caller of the policy (not who calls: no server is called)",
    )
    explain.add_argument("--purpose", required=True, help="the purpose the caller states")
    explain.add_argument("--category", required=True, help="the category of the value read")
    explain.add_argument(
        "--legal-basis", choices=LEGAL_BASES, help="the legal basis the caller states, if any"
    )
    explain.add_argument(
        "--consent",
        action="store_true",
        help="the subject consented to the purpose (default: no consent recorded)",
    )
    explain.add_argument(
        "--stopped", action="store_true", help="the subject's account is stopped (Account Stop)"
    )
    _policy_file_option(explain)
    explain.add_argument(
        "--format", choices=OUTPUTS, default="text", help="text for people (default), or json"
    )
    grid = _command(
        policy,
        "matrix",
        server_command("policy_matrix"),
        help="which caller may read which category for which purpose (no server needed)",
        description="Every read the policy can grant, one line each: caller, purpose, category "
        "and the conditions (the subject's consent, stopped accounts, a legal basis the "
        "caller may state). For reviewers of the privacy policy, as a table or as CSV.",
    )
    _policy_file_option(grid)
    grid.add_argument(
        "--format", choices=("table", "csv"), default="table", help="table (default) or csv"
    )
    grid.add_argument("--view", action="store_true", help="add each read's view: full or masked")
    reload = _client_command(
        policy,
        "reload",
        policy_commands.reload,
        help="make the server reload its policy file now (as an operator: --caller ops)",
        description="The server validates its policy file (PDV_POLICY) and, if it is valid, "
        "puts it in force in every process of every replica; an invalid file is refused "
        "(INVALID_ARGUMENT naming the problem) and the policy in force stays. Prints the "
        "policy in force. SIGHUP to a server does the same for its processes.",
    )
    del reload


def _policy_file_option(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--policy",
        "--file",
        dest="file",
        type=Path,
        metavar="FILE",
        help="policy file (default: $PDV_POLICY or the shipped one)",
    )


def _caller_commands(commands: Commands) -> None:
    actions = commands.add_parser(
        "caller",
        help="callers' API keys (as an operator: --caller ops)",
        description="Callers (their purposes and views) are in the policy file; their API keys "
        "are in the database, as hashes. A new key is printed once. A revoked key is refused by "
        "every server process within a second.",
    ).add_subparsers(dest="caller_command", required=True, metavar="ACTION")
    for name, handler, about in [
        ("add", callers.add, "issue a new API key for a caller of the policy (printed once)"),
        (
            "rotate-key",
            callers.rotate_key,
            "issue a second key, valid alongside the first until you revoke that one",
        ),
    ]:
        c = _client_command(actions, name, handler, help=about, description=about)
        c.add_argument("name", help="a caller of the policy")
    rev = _client_command(actions, "revoke", callers.revoke, help="revoke one of a caller's keys")
    rev.add_argument("name", help="the caller")
    rev.add_argument("--key-id", required=True, help="the key's id (pdv caller list)")
    _client_command(
        actions,
        "list",
        callers.list_keys,
        help="every key: caller, key id, created, last used, revoked",
    )
    boot = _command(
        actions,
        "bootstrap",
        server_command("caller_bootstrap"),
        help="the very first operator key, written into the database (no server needed)",
    )
    boot.add_argument(
        "--caller",
        dest="operator",
        default=None,
        help="the operator caller (one with the callers operation; default: the only one)",
    )


def _audit_commands(commands: Commands) -> None:
    audit = commands.add_parser(
        "audit",
        help="the audit log: verify it, prove an entry, follow it",
        description="The audit log is a Merkle log (RFC 9162) with signed checkpoints. These "
        "commands read the database directly (PDV_DATABASE_URL or the data dir), as the server "
        "does, without a server.",
    ).add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = _command(
        audit,
        "verify",
        server_command("audit_verify"),
        help="recompute the log against its checkpoints; name the first entry changed, "
        "missing, reordered or inserted",
    )
    verify.add_argument(
        "--checkpoints",
        type=Path,
        action="append",
        help="a checkpoint file to check against besides the database's checkpoints "
        "(repeatable; default: $PDV_AUDIT_CHECKPOINTS or beside the key file)",
    )
    verify.add_argument(
        "--verifier-key",
        help="the verifier key the checkpoints must be signed by (default: the signing key's)",
    )
    _output_option(verify)
    proof = _command(
        audit,
        "proof",
        server_command("audit_proof"),
        help="an inclusion proof of one entry that a third party can check",
    )
    proof.add_argument("seq", type=int, help="the entry's place in the log (from 0)")
    _output_option(proof)
    tail = _command(
        audit,
        "tail",
        server_command("audit_tail"),
        help="print entries as JSON lines (their canonical bytes), for a SIEM",
    )
    tail.add_argument("--from", dest="start", type=int, default=None, help="the first place")
    tail.add_argument(
        "--follow", action="store_true", help="keep printing entries as they are appended"
    )
    _command(
        audit,
        "checkpoint",
        server_command("audit_checkpoint"),
        help="sign a checkpoint of the log's head now",
    )
    _command(audit, "key", server_command("audit_key"), help="print the verifier key")


def _token_commands(commands: Commands) -> None:
    t = _client_command(
        commands,
        "tokenize",
        tokens.tokenize,
        help="store one value of a subject and print its token",
        description="Store one value for a data subject and print its token (with "
        "--output json: {token, category}). Give the value as an argument, or '-' to read it "
        "from standard input (keeps it out of shell history).",
    )
    t.add_argument("--subject", required=True, help="the data subject's id, e.g. user-42")
    t.add_argument("--category", required=True, help="the kind of data, e.g. card_number, address")
    t.add_argument(
        "--card-token",
        action="store_true",
        help="for card_number: a 16-digit Luhn-valid token keeping the last four digits",
    )
    t.add_argument("--binary", action="store_true", help="send the value as bytes (documents)")
    t.add_argument("--request-id", help="a UUID that makes a retry return the first answer")
    t.add_argument("value", help="the value, or - to read standard input")

    d = _client_command(
        commands,
        "detokenize",
        tokens.detokenize,
        help="print the values behind tokens, for a stated purpose",
        description="Print the value (or masked value) behind each token. One token: the "
        "value on standard output, or STATUS: reason on standard error. Several tokens: one "
        "line per token, in order, TOKEN<TAB>value or TOKEN<TAB>STATUS: reason (tabs, "
        "newlines and backslashes in values escaped as \\t, \\n, \\\\). --output json: a list "
        "of {token, category, value: {text|binary}} or {token, category, masked} or "
        "{token, category, error: {code, message, reason, metadata, violations}}. Binary "
        "values print as base64 (text: prefixed base64:). The exit status is that of the "
        "first refused token.",
    )
    d.add_argument("--purpose", required=True, help="why the values are needed, e.g. payment")
    d.add_argument("--justification", default="", help="ticket or order id, recorded in the audit")
    d.add_argument(
        "--legal-basis",
        default="",
        choices=["", *LEGAL_BASES],
        help="a legal exception (Art. 23) this request relies on: replaces consent for "
        "third_party_provision and allows reading a stopped account; audited",
    )
    d.add_argument("tokens", nargs="+", metavar="TOKEN")


def _key_commands(commands: Commands) -> None:
    text = (
        "Rotate, rewrap and retire versions of the key-encryption key, through the API. On "
        "HashiCorp Vault, rotate and trim also need your own Vault token with the pdvault-ops "
        "policy in VAULT_TOKEN (sent for that call only)."
    )
    actions = commands.add_parser(
        "keys",
        help="key-encryption key administration (as an operator: --caller ops)",
        description=text,
    ).add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    for name, handler, about in [
        ("status", keys.status, "key versions, data keys per version, cache figures"),
        ("rotate", keys.rotate, "add a new key version; new data keys use it"),
        (
            "rewrap",
            keys.rewrap,
            "move every data key to the latest version, in batches (resumable)",
        ),
        ("trim", keys.trim, "retire and destroy versions no data key uses any more"),
    ]:
        k = _client_command(actions, name, handler, help=about, description=about)
        if name == "rewrap":
            k.add_argument(
                "--batch-size", type=int, default=100, help="keys per call (%(default)s)"
            )
        if name == "trim":
            k.add_argument(
                "--min-version",
                type=int,
                default=0,
                help="oldest version to keep (default: the oldest still in use)",
            )


def _subject_commands(commands: Commands) -> None:
    actions = commands.add_parser(
        "subject",
        help="a data subject's lifecycle (as an operator: --caller ops)",
        description="Act on a data subject's requests as the privacy policy promises: account "
        "stop and resume, deletion by crypto-shredding, disclosure (export), consent and its "
        "withdrawal, correction. Answers print as indented text, or with --output json as the "
        "API's JSON form (every field, defaults included).",
    ).add_subparsers(dest="subject_command", required=True, metavar="ACTION")
    for name, handler, about in [
        ("show", subjects.show, "the subject's state and consents"),
        ("stop", subjects.stop, "stop the account: data kept, new data refused, reads limited"),
        ("resume", subjects.resume, "resume a stopped account"),
        (
            "shred",
            subjects.shred,
            "delete the subject by crypto-shredding; prints the erasure receipt",
        ),
        ("export", subjects.export, "everything held about the subject, and who read it"),
        (
            "consent",
            subjects.consent,
            "record consent to a purpose (--grant) or its withdrawal (--withdraw)",
        ),
    ]:
        c = _client_command(actions, name, handler, help=about, description=about)
        c.add_argument("subject", help="the data subject's id")
        if name == "shred":
            c.add_argument(
                "--by-subject",
                action="store_true",
                help="the data subject asked for it through its own flow (audited); without "
                "it an operator asks, and dual control may hold it for a second operator",
            )
        if name == "consent":
            c.add_argument("--purpose", required=True, help="a purpose of the policy")
            choice = c.add_mutually_exclusive_group(required=True)
            choice.add_argument("--grant", action="store_true", help="consent given")
            choice.add_argument("--withdraw", action="store_true", help="consent withdrawn")
        if name == "export":
            c.add_argument(
                "--file",
                type=Path,
                help="write the bundle as JSON to this file (mode 0600), not standard output",
            )
            c.add_argument(
                "--with-documents",
                type=Path,
                metavar="DIR",
                help="also write every copy of each of the subject's documents into DIR "
                "(created, mode 0700; a disclosure read each); without it the bundle lists "
                "their metadata only",
            )
    corr = _client_command(
        actions,
        "correct",
        subjects.correct,
        help="replace the value behind a token (the token stays)",
    )
    corr.add_argument("token")
    corr.add_argument("value", help="the corrected value, or - to read standard input")


def _document_commands(commands: Commands) -> None:
    actions = commands.add_parser(
        "document",
        help="identity documents: upload, read for a purpose, holds, retention",
        description="Keep identity documents (photos and scans: JPEG, PNG or PDF) in the "
        "DocumentService. Who may do what is the policy's: uploads and verification as the "
        "verification flow (--caller kyc), reads for a purpose as a detokenize, list, delete "
        "and sweep as an operator (--caller ops), holds as the legal team (--caller legal). "
        "The content is streamed, never sent or written with a file name; --output json "
        "prints the metadata in the API's field names.",
    ).add_subparsers(dest="document_command", required=True, metavar="ACTION")

    up = _client_command(
        actions,
        "upload",
        documents.upload,
        help="store a document of a subject; prints its id",
        description="Store one document of a subject and print its id (doc_...). The media "
        "type is guessed from the first bytes unless given; the server decides from the "
        "content. The file is read twice (to hash it, then to send it), 64 KiB at a time.",
    )
    up.add_argument("--subject", required=True, help="the data subject's id, e.g. user-42")
    up.add_argument(
        "--type",
        required=True,
        choices=UPLOAD_TYPES,
        metavar="TYPE",
        help=f"the kind of document: {', '.join(UPLOAD_TYPES)} (the server refuses the last)",
    )
    up.add_argument(
        "--media-type",
        help="image/jpeg, image/png or application/pdf (default: from the first bytes)",
    )
    up.add_argument(
        "--insurer-number-masked",
        action="store_true",
        help="health_insurance_card: you state that the insurer number, symbol, number and "
        "QR code are masked (audited; required for that type)",
    )
    up.add_argument(
        "--progress",
        action="store_true",
        help="print the progress on standard error (default: only for files of 1 MiB or more, "
        "when standard error is a terminal)",
    )
    up.add_argument("file", type=Path, help="the document: a JPEG, PNG or PDF file")

    shown = _client_command(
        actions,
        "show",
        documents.show,
        help="a document's type, size, scan state, retention and holds (no content)",
    )
    shown.add_argument("document_id", metavar="DOCUMENT_ID")

    g = _client_command(
        actions,
        "get",
        documents.get,
        help="write a document's content to a file, for a stated purpose",
        description="Read a document for a purpose and write its content to -o FILE, whole or "
        "not at all (a failure, DATA_LOSS included, leaves no file), mode 0600; or with -o - "
        "to standard output (discard it if the exit status is not 0).",
    )
    g.add_argument("--purpose", help="why it is needed, e.g. identity_verification")
    g.add_argument(
        "-o",
        "--out-file",
        dest="out",
        required=True,
        metavar="FILE",
        help="where to write the content; - for standard output",
    )
    g.add_argument(
        "--variant",
        choices=VARIANTS,
        default="original",
        help="original (default), or sanitized: images re-encoded without metadata",
    )
    g.add_argument(
        "--legal-basis",
        default="",
        choices=["", *LEGAL_BASES],
        help="a legal exception (Art. 23) this read relies on; audited",
    )
    g.add_argument("--justification", default="", help="ticket or order id, recorded in the audit")
    g.add_argument(
        "--disclosure",
        action="store_true",
        help="read for the subject's disclosure request (operators), instead of --purpose",
    )
    g.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    g.add_argument("document_id", metavar="DOCUMENT_ID")

    listed = _client_command(
        actions,
        "list",
        documents.list_documents,
        help="a subject's documents, oldest first: id, type, media type, size, uploaded",
    )
    listed.add_argument("subject", help="the data subject's id")

    for name, handler, about in [
        ("delete", documents.delete, "shred one document (refused while a legal hold stands)"),
        (
            "verified",
            documents.verified,
            "record that the verification flow checked it (starts a rule that runs from then)",
        ),
    ]:
        c = _client_command(actions, name, handler, help=about, description=about)
        c.add_argument("document_id", metavar="DOCUMENT_ID")

    h = _client_command(
        actions,
        "hold",
        documents.hold,
        help="place a legal hold (--reason), or release holds (--release)",
        description="Place a legal hold: no delete, retention sweep or account deletion "
        "destroys the document while it stands; prints the hold's id. --release releases "
        "every hold of the document, or the one --hold-id names.",
    )
    choice = h.add_mutually_exclusive_group(required=True)
    choice.add_argument("--reason", help="why: a case reference, kept in the audit log")
    choice.add_argument("--release", action="store_true", help="release holds instead")
    h.add_argument("--hold-id", help="with --release: only this hold")
    h.add_argument("document_id", metavar="DOCUMENT_ID")

    _client_command(
        actions,
        "sweep",
        documents.sweep,
        help="destroy now what the retention rules say is due (as pdv retention sweep)",
    )


def _retention_commands(commands: Commands) -> None:
    actions = commands.add_parser(
        "retention",
        help="retention periods (as an operator: --caller ops)",
        description="The retention rules of the policy: the server sweeps on a schedule; "
        "an operator can sweep now.",
    ).add_subparsers(dest="retention_command", required=True, metavar="ACTION")
    _client_command(
        actions,
        "sweep",
        documents.sweep,
        help="destroy now the documents and values whose retention period has ended, "
        "except what a legal hold keeps",
    )

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

from pdvault_client.address import DEFAULT_ADDR
from pdvault_client.cli import keys, subjects, tokens
from pdvault_client.cli.connection import DEFAULT_DATA_DIR, Handler, Run, with_client
from pdvault_client.cli.environment import epilog, version
from pdvault_client.cli.server import server_command

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")  # as vault.config.LOG_LEVELS
OUTPUTS = ("text", "json")
LEGAL_BASES = ("law_or_regulation", "public_interest", "public_function", "legitimate_rights")

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

    db = commands.add_parser("db", help="database maintenance").add_subparsers(
        dest="db_command", required=True, metavar="ACTION"
    )
    _command(db, "upgrade", server_command("db_upgrade"), help="apply the database migrations")
    return p


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
    corr = _client_command(
        actions,
        "correct",
        subjects.correct,
        help="replace the value behind a token (the token stays)",
    )
    corr.add_argument("token")
    corr.add_argument("value", help="the corrected value, or - to read standard input")

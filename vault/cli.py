"""`pdv`: run the pdvault server, and call it as the services that use it would.

Values are printed only by `detokenize` (and `subject export`), and only to standard output.
Errors go to standard error as one line, `STATUS: message`, with a hint where one helps. The
exit status says what kind of failure it was (EXIT_CODES, also in `pdv --help` and the README).

The client commands import only `pdvault_client` (and that lazily, so they start fast); the
server modules are imported by `serve`, `db upgrade` and `policy check` alone.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import json
import logging
import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from pdvault_client import Client, Detokenized, KeyStatus, PdvaultError, Trimmed
    from vault.config import Settings

# -- exit status ----------------------------------------------------------------------------------

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # argparse's own status for a usage error; ours too, for settings and files
EXIT_INVALID = 3
EXIT_REFUSED = 4
EXIT_UNAVAILABLE = 5

# The one table of exit statuses: `pdv --help` prints it and the README copies it.
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

# -- environment ----------------------------------------------------------------------------------

# Every variable the code reads: the server's settings (vault/config.py `_ENV`, plus
# PDV_CONFIG) and the client commands' own. tests/integration/test_cli_help.py checks that
# each one is here and in the README's configuration table.
ENVIRONMENT: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "server (`pdv serve`, `pdv db upgrade`)",
        (
            ("PDV_CONFIG", "a TOML file with the settings below, in lower case without PDV_"),
            ("PDV_ADDR", "where the server listens (127.0.0.1:50051)"),
            ("PDV_DATA_DIR", "SQLite database, local key file, dev credentials (./.pdvault)"),
            ("PDV_DATABASE_URL", "e.g. postgresql+psycopg://user@host/pdvault (SQLite)"),
            ("PDV_KMS", "the key provider: local (key file) or vault (HashiCorp Vault)"),
            ("PDV_KEY_FILE", "the local key-encryption key file (<data dir>/kek.json)"),
            ("PDV_POLICY", "a policy file instead of the shipped default"),
            ("PDV_MAX_WORKERS", "threads per process running the use cases (16)"),
            ("PDV_PROCESSES", "serving processes sharing the port (one per core)"),
            ("PDV_LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR (INFO); --log-level wins"),
            ("PDV_DEV_CREDENTIALS", "create the demo callers' API keys on first start (true)"),
            ("PDV_AUTO_MIGRATE", "run the database migrations at start-up (true)"),
            ("PDV_SHRED_LOG", "the shred log, outside the database (beside the key file)"),
            ("PDV_TLS_CERT", "the server's TLS certificate chain (PEM); with PDV_TLS_KEY"),
            ("PDV_TLS_KEY", "the key of PDV_TLS_CERT (PEM)"),
            ("PDV_ALLOW_INSECURE", "allow a plaintext port off loopback (false)"),
            ("PDV_KEY_CACHE_MAX_ENTRIES", "data keys cached per process (10000; 0: no cache)"),
            ("PDV_KEY_CACHE_MAX_AGE", "seconds a cached data key serves (300)"),
            ("PDV_KEY_CACHE_MAX_USES", "unwraps a cached data key answers (100000)"),
            ("PDV_REQUEST_READ_TIMEOUT", "seconds a call may take to send its request (10)"),
            ("PDV_MAX_CALLS", "calls in flight per process, health checks aside (256)"),
            ("PDV_MAX_CALLS_PER_CALLER", "calls in flight per caller, per process (128)"),
            ("PDV_MAX_STREAMS_PER_CONNECTION", "calls in flight on one connection (100)"),
            ("PDV_MAX_CONNECTION_AGE", "seconds before a client must reconnect (1800)"),
            ("PDV_HEALTH_INTERVAL", "seconds between readiness checks of database and keys (5)"),
        ),
    ),
    (
        "HashiCorp Vault Transit (PDV_KMS=vault)",
        (
            ("VAULT_ADDR", "the Vault server (http://127.0.0.1:8200)"),
            ("VAULT_TOKEN", "pdvault's token (token auth); for `pdv keys`: the operator's own"),
            ("VAULT_CACERT", "the CA that signed Vault's certificate"),
            ("VAULT_NAMESPACE", "the Vault Enterprise namespace"),
            ("PDV_VAULT_AUTH", "token, approle or kubernetes (token)"),
            ("VAULT_ROLE_ID", "AppRole: the role id"),
            ("VAULT_SECRET_ID", "AppRole: the secret id"),
            ("PDV_VAULT_K8S_ROLE", "Kubernetes auth: the role"),
            ("PDV_VAULT_K8S_JWT_FILE", "Kubernetes auth: the service account token file"),
            ("PDV_VAULT_MOUNT", "the Transit mount (transit)"),
            ("PDV_VAULT_KEY", "the Transit key (pdvault)"),
            ("PDV_VAULT_TIMEOUT", "seconds one HTTP call to Vault may take (5)"),
        ),
    ),
    (
        "client commands",
        (
            ("PDV_ADDR", "the server to call, HOST:PORT (127.0.0.1:50051); --addr wins"),
            ("PDV_API_KEY", "the API key to call with; overrides --caller"),
            ("PDV_DATA_DIR", "where --caller finds dev-credentials.json (./.pdvault)"),
            ("PDV_TLS_CA", "the CA that signed the server's certificate (turns TLS on)"),
            ("PDV_TLS_SERVER_NAME", "the name to check in the server's certificate"),
            ("VAULT_TOKEN", "keys rotate/trim on Vault: your token with pdvault-ops"),
            ("GRPC_VERBOSITY", "gRPC's own log lines (ERROR unless set)"),
        ),
    ),
)
CLIENT_ENV = ("PDV_API_KEY", "PDV_TLS_CA", "PDV_TLS_SERVER_NAME")  # read by no server module

DEFAULT_ADDR = "127.0.0.1:50051"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")  # as vault.config.LOG_LEVELS
OUTPUTS = ("text", "json")


def _epilog() -> str:
    lines = []
    for title, variables in ENVIRONMENT:
        lines.append(f"environment, {title}:")
        lines.extend(f"  {name:<26} {text}" for name, text in variables)
        lines.append("")
    lines.append("exit status:")
    lines.extend(f"  {code}  {text}" for code, text in EXIT_CODES)
    lines.append("")
    lines.append(
        """\
examples:
  pdv serve
  pdv tokenize --caller kyc --subject user-42 --category card_number 4111111111111111
  pdv detokenize --caller payment --purpose payment tok_...
  pdv detokenize --caller payment --purpose payment --output json tok_... tok_...
  pdv keys status --caller ops
  pdv subject shred user-42 --caller ops
  pdv policy check"""
    )
    return "\n".join(lines)


class _Version(argparse.Action):
    """`pdv --version`, looked up only when asked for (client commands start fast)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str) -> None:
        super().__init__(option_strings, dest, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> NoReturn:
        print(f"pdv {version()}")
        parser.exit()


def version() -> str:
    """The installed `pdvault` distribution's version, else the one in pyproject.toml."""
    from importlib import metadata

    try:
        return metadata.version("pdvault")
    except metadata.PackageNotFoundError:
        pass
    import tomllib

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        return str(tomllib.loads(pyproject.read_text("utf-8"))["project"]["version"])
    except (OSError, KeyError, TypeError, ValueError):  # TOMLDecodeError is a ValueError
        return "unknown"


def client_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--caller",
        help="call as this caller, with its key from <data dir>/dev-credentials.json "
        "($PDV_API_KEY takes precedence)",
    )
    cmd.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds (10)")
    output_option(cmd)


def output_option(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--output",
        choices=OUTPUTS,
        default="text",
        help="text for people (default), or json for scripts",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pdv",
        description="pdvault: an encrypted personal-data vault with a tokenization service.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action=_Version, help="print the version and exit")
    p.add_argument(
        "--addr", help="server address, HOST:PORT (default: $PDV_ADDR or 127.0.0.1:50051)"
    )
    p.add_argument(
        "--data-dir", type=Path, help="data directory (default: $PDV_DATA_DIR or ./.pdvault)"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the server until interrupted")
    s.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default=None,
        help="DEBUG, INFO, WARNING or ERROR (default: $PDV_LOG_LEVEL or INFO)",
    )

    t = sub.add_parser(
        "tokenize",
        help="store one value of a subject and print its token",
        description="Store one value for a data subject and print its token (with "
        "--output json: {token, category}). Give the value as an argument, or '-' to read it "
        "from standard input (keeps it out of shell history).",
    )
    client_options(t)
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

    d = sub.add_parser(
        "detokenize",
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
    client_options(d)
    d.add_argument("--purpose", required=True, help="why the values are needed, e.g. payment")
    d.add_argument("--justification", default="", help="ticket or order id, recorded in the audit")
    d.add_argument(
        "--legal-basis",
        default="",
        choices=[
            "",
            "law_or_regulation",
            "public_interest",
            "public_function",
            "legitimate_rights",
        ],
        help="a legal exception (Art. 23) this request relies on: replaces consent for "
        "third_party_provision and allows reading a stopped account; audited",
    )
    d.add_argument("tokens", nargs="+", metavar="TOKEN")

    keys = sub.add_parser(
        "keys",
        help="key-encryption key administration (as an operator: --caller ops)",
        description="Rotate, rewrap and retire versions of the key-encryption key, through the "
        "API. On HashiCorp Vault, rotate and trim also need your own Vault token with the "
        "pdvault-ops policy in VAULT_TOKEN (sent for that call only).",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    for name, text in [
        ("status", "key versions, data keys per version, cache figures"),
        ("rotate", "add a new key version; new data keys use it"),
        ("rewrap", "move every data key to the latest version, in batches (resumable)"),
        ("trim", "retire and destroy versions no data key uses any more"),
    ]:
        k = keys_sub.add_parser(name, help=text, description=text)
        client_options(k)
        if name == "rewrap":
            k.add_argument("--batch-size", type=int, default=100, help="keys per call (100)")
        if name == "trim":
            k.add_argument(
                "--min-version",
                type=int,
                default=0,
                help="oldest version to keep (default: the oldest still in use)",
            )

    _add_subject_commands(sub)

    pol = sub.add_parser("policy", help="inspect the policy")
    pol_sub = pol.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    check = pol_sub.add_parser(
        "check", help="validate a policy file and print its recorded decisions and warnings"
    )
    check.add_argument("--file", type=Path, help="policy file (default: $PDV_POLICY or shipped)")
    output_option(check)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("upgrade", help="apply the database migrations")
    return p


def _add_subject_commands(sub: Any) -> None:
    subj = sub.add_parser(
        "subject",
        help="a data subject's lifecycle (as an operator: --caller ops)",
        description="Act on a data subject's requests as the privacy policy promises: account "
        "stop and resume, deletion by crypto-shredding, disclosure (export), consent and its "
        "withdrawal, correction. Answers print as indented text, or with --output json as the "
        "API's JSON form (every field, defaults included).",
    )
    subj_sub = subj.add_subparsers(dest="subject_command", required=True, metavar="ACTION")
    for name, text in [
        ("show", "the subject's state and consents"),
        ("stop", "stop the account: data kept, new data refused, reads limited"),
        ("resume", "resume a stopped account"),
        ("shred", "delete the subject by crypto-shredding; prints the erasure receipt"),
        ("export", "everything held about the subject, and who read it"),
        ("consent", "record consent to a purpose (--grant) or its withdrawal (--withdraw)"),
    ]:
        c = subj_sub.add_parser(name, help=text, description=text)
        client_options(c)
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
    corr = subj_sub.add_parser("correct", help="replace the value behind a token (the token stays)")
    client_options(corr)
    corr.add_argument("token")
    corr.add_argument("value", help="the corrected value, or - to read standard input")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.addr:
        os.environ["PDV_ADDR"] = args.addr
    if args.data_dir:
        os.environ["PDV_DATA_DIR"] = str(args.data_dir)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "policy":
            return _policy_check(args)
        if args.command == "db":
            return _db_upgrade()
        return _client_command(args)
    except _UsageError as exc:
        print(f"{_command_name(args)}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader went away (`pdv ... | head`): not an error worth a traceback. Point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED


def _command_name(args: argparse.Namespace) -> str:
    """`pdv keys rotate`, `pdv serve` ...: what a one-line error starts with."""
    words = ["pdv", args.command]
    for attr in ("keys_command", "subject_command", "policy_command", "db_command"):
        if getattr(args, attr, None):
            words.append(getattr(args, attr))
    return " ".join(words)


class _UsageError(Exception):
    """A mistake the user fixes in a flag, a variable or a file: one line, exit status 2."""


# -- server side ----------------------------------------------------------------------------------


def _settings() -> Settings:
    # Server modules are imported lazily so that the client commands start fast.
    from vault.config import load_settings
    from vault.errors import ConfigurationError

    try:
        return load_settings()
    except ConfigurationError as exc:
        raise _UsageError(exc.message) from None


def _startup_error(exc: Exception) -> str | None:
    """The one line for an error that stops `serve` or `db upgrade` at start-up, or None when
    it is not one the user can act on (then the traceback is the report: a bug). Storage turns
    the driver's errors into StorageUnavailable, naming what to check and never the URL."""
    from vault.errors import PdvaultError

    if isinstance(exc, PdvaultError):  # ConfigurationError, StorageUnavailable ...
        return exc.message
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return None


def _serve(args: argparse.Namespace) -> int:
    from vault.app import build_app
    from vault.logs import configure_logging
    from vault.runtime import serve_processes
    from vault.transport.server import serve

    settings = _settings()
    os.umask(0o077)  # the database, key file and credentials are for this user only
    configure_logging(args.log_level or settings.log_level)
    logging.getLogger("pdv").info("starting: %s", settings.describe())
    if settings.dev_credentials:
        print(
            f"pdv: API keys of the demo callers are in {settings.credentials_file}",
            file=sys.stderr,
        )
    try:
        processes = settings.effective_processes
        if processes > 1:
            return serve_processes(settings, processes)
        serve(build_app(settings), settings.addr)
    except Exception as exc:
        # One line naming what to fix: a start-up that would lose or hide data stops here.
        message = _startup_error(exc)
        if message is None:
            raise
        raise _UsageError(message) from None
    return EXIT_OK


def _policy_check(args: argparse.Namespace) -> int:
    from vault.domain.policy_file import load_policy
    from vault.errors import ConfigurationError

    path = args.file or (Path(os.environ["PDV_POLICY"]) if os.environ.get("PDV_POLICY") else None)
    try:
        policy = load_policy(path)
    except (ConfigurationError, OSError) as exc:
        print(f"pdv policy check: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return EXIT_FAILED
    findings = policy.check()
    if args.output == "json":
        _print_json(
            {
                "policy": policy.name,
                "version": policy.version,
                "categories": len(policy.categories),
                "purposes": len(policy.purposes),
                "callers": len(policy.callers),
                "valid": True,
                "findings": findings,
            }
        )
        return EXIT_OK
    print(
        f"policy {policy.name} v{policy.version}: {len(policy.categories)} categories, "
        f"{len(policy.purposes)} purposes, {len(policy.callers)} callers: valid"
    )
    for finding in findings:
        print(f"- {finding}")
    return EXIT_OK


def _db_upgrade() -> int:
    from vault.storage import migrate
    from vault.storage.sql import make_engine, redact_url

    settings = _settings()
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = make_engine(settings.effective_database_url)
        migrate.upgrade(engine)
        revision = migrate.current_revision(engine)
    except Exception as exc:
        message = _startup_error(exc)
        if message is None:
            raise
        raise _UsageError(message) from None
    print(f"database {redact_url(settings.effective_database_url)} at revision {revision}")
    return EXIT_OK


# -- client side ----------------------------------------------------------------------------------


def _api_key(caller: str | None) -> str:
    key = os.environ.get("PDV_API_KEY")
    if key:
        return key
    if not caller:
        raise _UsageError("say who calls: --caller NAME, or set PDV_API_KEY")
    data_dir = Path(os.environ.get("PDV_DATA_DIR") or ".pdvault")
    path = data_dir / "dev-credentials.json"
    try:
        keys = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise _UsageError(
            f"no {path}: start the server with `pdv serve` first (it writes the demo callers' "
            "keys there), or set PDV_API_KEY"
        ) from None
    except OSError as exc:
        raise _UsageError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:  # not JSON (or not UTF-8); the decoder's message could quote a key
        keys = None
    if not isinstance(keys, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in keys.items()
    ):
        raise _UsageError(
            f"{path} is not a JSON object of caller names to API keys: delete it and restart "
            "`pdv serve` to write it again, or set PDV_API_KEY"
        )
    if caller not in keys:
        near = difflib.get_close_matches(caller, list(keys), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        known = ", ".join(sorted(keys))
        raise _UsageError(f"no key for caller '{caller}' in {path} (callers there: {known}){hint}")
    return str(keys[caller])


def _address(args: argparse.Namespace) -> str:
    from pdvault_client import check_address

    addr = os.environ.get("PDV_ADDR") or DEFAULT_ADDR
    try:
        return check_address(addr)
    except ValueError as exc:
        raise _UsageError(f"{'--addr ' if args.addr else 'PDV_ADDR='}{exc}") from None


def _client(args: argparse.Namespace) -> Client:
    from pdvault_client import Client

    addr = _address(args)
    ca = os.environ.get("PDV_TLS_CA")
    try:
        tls_ca = Path(ca).read_bytes() if ca else None
    except OSError as exc:
        raise _UsageError(f"cannot read PDV_TLS_CA={ca}: {exc.strerror}") from None
    if tls_ca is not None and b"-----BEGIN CERTIFICATE-----" not in tls_ca:
        raise _UsageError(f"PDV_TLS_CA={ca} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return Client(
        addr,
        _api_key(args.caller),
        timeout=args.timeout,
        tls_ca=tls_ca,
        tls_server_name=os.environ.get("PDV_TLS_SERVER_NAME") or None,
    )


def exit_code_of(error: PdvaultError) -> int:
    return _EXIT_BY_STATUS.get(error.code.name, EXIT_FAILED)


def _client_command(args: argparse.Namespace) -> int:
    # gRPC core logs a failed TLS handshake at INFO on stderr, beside our own line and hint.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from pdvault_client import PdvaultError

    handlers: dict[str, Callable[[Client, argparse.Namespace], int]] = {
        "tokenize": _tokenize,
        "detokenize": _detokenize,
        "keys": _keys,
        "subject": _subject,
    }
    handler = handlers[args.command]
    with _client(args) as client:
        try:
            return handler(client, args)
        except PdvaultError as exc:
            _report(exc, args)
            return exit_code_of(exc)
        except ValueError as exc:
            # The client library refused the input before sending it (text that is not
            # UTF-8, for one); its messages name the field, never the value.
            print(f"{_command_name(args)}: {exc}", file=sys.stderr)
            return EXIT_INVALID


def _report(error: PdvaultError, args: argparse.Namespace) -> None:
    """STATUS: message on standard error; each violation once; then what to try, if we know."""
    for line in _error_lines(error, args):
        print(line, file=sys.stderr)


def _error_lines(error: PdvaultError, args: argparse.Namespace) -> list[str]:
    code = error.code.name
    violations = [f"{v.field}: {v.description} [{v.rule}]" for v in error.violations]
    # The message of an INVALID_ARGUMENT repeats its first violation: print the violations.
    lines = (
        [f"{code}: {violations[0]}", *(f"  {v}" for v in violations[1:])]
        if violations
        else [f"{code}: {error.message}"]
    )
    for v in error.violations:
        hint = _did_you_mean(v.rule, v.description, args)
        if hint:
            lines.append(f"  {hint}")
    if code == "UNAVAILABLE" and not error.reason:
        # No ErrorInfo: the channel failed before any server answered.
        lines.append(f"  {_connection_hint(error.message)}")
    return lines


def _did_you_mean(rule: str, description: str, args: argparse.Namespace) -> str:
    """For a near-miss category or purpose: the server's violation lists the policy's names
    ("must be a category of the policy: a, b, c"), so the CLI needs no policy of its own."""
    kind = rule.removesuffix(".unknown")
    sent = getattr(args, kind, None) if rule in {"category.unknown", "purpose.unknown"} else None
    if not isinstance(sent, str) or ": " not in description:
        return ""
    names = [n.strip() for n in description.rsplit(": ", 1)[1].split(",")]
    near = difflib.get_close_matches(sent, names, n=1)
    return f"did you mean --{kind} {near[0]}?" if near else ""


def _connection_hint(message: str) -> str:
    addr = os.environ.get("PDV_ADDR") or DEFAULT_ADDR
    low = message.lower()
    tls = bool(os.environ.get("PDV_TLS_CA"))
    if "wrong_version_number" in low or ("handshake" in low and "ssl" in low and tls):
        return (
            f"the server at {addr} does not answer in TLS: unset PDV_TLS_CA if it serves "
            "plaintext (no PDV_TLS_CERT), or check PDV_ADDR"
        )
    if "certificate" in low or "handshake" in low:
        return (
            "TLS failed: PDV_TLS_CA must hold the CA that signed the server's certificate, "
            "and PDV_TLS_SERVER_NAME the name in it if it differs from the host"
        )
    if "resolv" in low or "lookup" in low:
        return f"cannot resolve the host of PDV_ADDR={addr}"
    if tls:
        return (
            f"is `pdv serve` running at {addr}, with TLS (PDV_TLS_CERT, PDV_TLS_KEY)? "
            "PDV_TLS_CA is set, so this client speaks TLS"
        )
    return (
        f"is `pdv serve` running at {addr}? If it serves TLS (PDV_TLS_CERT), set PDV_TLS_CA "
        "to the CA that signed its certificate"
    )


def _error_dict(error: PdvaultError) -> dict[str, Any]:
    return {
        "code": error.code.name,
        "message": error.message,
        "reason": error.reason,
        "metadata": dict(error.metadata),
        "violations": [
            {"field": v.field, "rule": v.rule, "description": v.description}
            for v in error.violations
        ],
    }


def _print_json(answer: object) -> None:
    print(json.dumps(answer, indent=2, sort_keys=True, ensure_ascii=False))


def _tokenize(client: Client, args: argparse.Namespace) -> int:
    from pdvault_client import Field

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
        _print_json({"token": result.token, "category": result.category})
    else:
        print(result.token)
    return EXIT_OK


def _detokenize(client: Client, args: argparse.Namespace) -> int:
    results = client.detokenize(
        args.tokens,
        args.purpose,
        justification=args.justification,
        legal_basis=args.legal_basis,
    )
    refused = [r.error for r in results if r.error is not None]
    status = exit_code_of(refused[0]) if refused else EXIT_OK
    if args.output == "json":
        _print_json([_result_dict(r) for r in results])
        return status
    if len(results) == 1:
        [r] = results
        if r.error is not None:
            _report(r.error, args)
        else:
            # The command's whole purpose: the granted value, to stdout only, never to a log.
            print(_shown(r))
        return status
    for r in results:
        if r.error is not None:
            print(f"{r.token}\t{r.error.code.name}: {_one_line(r.error.message)}")
        else:
            print(f"{r.token}\t{_one_line(_shown(r))}")  # the granted value, as above
    return status


def _shown(r: Detokenized) -> str:
    if r.masked is not None:
        return r.masked
    if isinstance(r.value, bytes):
        return "base64:" + base64.b64encode(r.value).decode("ascii")
    return r.value or ""


def _one_line(text: str) -> str:
    """A value on one line of TOKEN<TAB>value output, reversibly."""
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _result_dict(r: Detokenized) -> dict[str, Any]:
    out: dict[str, Any] = {"token": r.token, "category": r.category}
    if r.error is not None:
        out["error"] = _error_dict(r.error)
    elif r.masked is not None:
        out["masked"] = r.masked
    elif isinstance(r.value, bytes):
        out["value"] = {"binary": base64.b64encode(r.value).decode("ascii")}
    else:
        out["value"] = {"text": r.value}  # the granted value, as in _detokenize
    return out


def _keys(client: Client, args: argparse.Namespace) -> int:
    admin = client.keys(vault_token=os.environ.get("VAULT_TOKEN") or None)
    if args.keys_command == "rewrap":
        total = failed = 0
        while True:
            step = admin.rewrap_batch(args.batch_size)
            total += step.rewrapped
            failed += step.failed
            if args.output == "text":
                print(
                    f"rewrapped {total} data keys to v{step.target_version}; "
                    f"{step.remaining} left" + (f"; {failed} failed" if failed else "")
                )
            if step.remaining == 0 or step.rewrapped == 0:
                break
        if args.output == "json":
            _print_json(
                {
                    "rewrapped": total,
                    "failed": failed,
                    "remaining": step.remaining,
                    "targetVersion": step.target_version,
                }
            )
        return EXIT_OK
    if args.keys_command == "trim":
        done = admin.trim(args.min_version or None)
        if args.output == "json":
            _print_json(
                {
                    "status": _status_dict(done.status),
                    "destroyedVersions": list(done.destroyed_versions),
                    "stillInUse": [
                        {"version": v, "dataKeys": n} for v, n in done.still_in_use.items()
                    ],
                }
            )
        else:
            _print_trimmed(done)
        return EXIT_OK
    status = admin.status() if args.keys_command == "status" else admin.rotate()
    if args.output == "json":
        _print_json(_status_dict(status))
    else:
        _print_status(status)
    return EXIT_OK


def _print_trimmed(done: Trimmed) -> None:
    if done.destroyed_versions:
        shown = ", ".join(f"v{v}" for v in done.destroyed_versions)
        print(f"destroyed {shown}: what they wrapped can no longer be decrypted")
    elif done.still_in_use:
        users = ", ".join(f"v{v} still wraps {n} data keys" for v, n in done.still_in_use.items())
        print(f"nothing to trim: {users}; run pdv keys rewrap first, then trim again")
    else:
        print("nothing to trim: no version older than the ones in use is left")
    _print_status(done.status)


def _status_dict(s: KeyStatus) -> dict[str, Any]:
    """The KeyStatus message's JSON form (the names of key_service.proto, in camelCase)."""
    c = s.cache
    return {
        "provider": s.provider,
        "keyName": s.key_name,
        "latestVersion": s.latest_version,
        "minDecryptionVersion": s.min_decryption_version,
        "minAvailableVersion": s.min_available_version,
        "versions": [
            {"version": v, "dataKeys": n, "state": s.version_states.get(v, "")}
            for v, n in s.data_keys_by_version.items()
        ],
        "otherProviderDataKeys": s.other_provider_data_keys,
        "cache": None
        if c is None
        else {
            "entries": c.entries,
            "hits": c.hits,
            "misses": c.misses,
            "evictions": c.evictions,
            "hitRate": c.hit_rate,
            "maxEntries": c.max_entries,
            "maxAgeSeconds": c.max_age_seconds,
            "maxUses": c.max_uses,
            "processId": c.process_id,
            "host": c.host,
        },
    }


_STATE_NOTES = {
    "retired": " (retired: not decrypting until min_decryption_version is lowered)",
    "destroyed": " (destroyed by a trim: unreadable for ever, their values answer DATA_LOSS)",
    "unknown_to_provider": " (the key provider has no such version: not the key they were "
    "wrapped by)",
}


def _print_status(status: KeyStatus) -> None:
    print(f"key {status.key_name} ({status.provider})")
    print(
        f"  versions: latest v{status.latest_version}, decrypting from "
        f"v{status.min_decryption_version}, destroyed below v{max(status.min_available_version, 1)}"
    )
    for version, count in status.data_keys_by_version.items():
        note = _STATE_NOTES.get(status.version_states.get(version, ""), "")
        print(f"  v{version}: {count} data keys{note}")
    if status.other_provider_data_keys:
        print(f"  other providers: {status.other_provider_data_keys} data keys")
    c = status.cache
    if c is not None:
        print(
            f"  cache of process {c.process_id} on {c.host} (each process has its own): "
            f"{c.entries} keys, hit rate {c.hit_rate:.1%} "
            f"({c.hits} hits, {c.misses} misses, {c.evictions} evictions); limits "
            f"{c.max_entries} keys, {c.max_age_seconds:g} s, {c.max_uses} uses"
        )


def _subject(client: Client, args: argparse.Namespace) -> int:
    admin = client.subjects()
    cmd = args.subject_command
    if cmd == "show":
        answer = admin.get(args.subject)
    elif cmd == "stop":
        answer = admin.stop(args.subject)
    elif cmd == "resume":
        answer = admin.resume(args.subject)
    elif cmd == "shred":
        answer = admin.shred(args.subject)
    elif cmd == "export":
        answer = admin.export(args.subject)
    elif cmd == "consent":
        answer = admin.consent(args.subject, args.purpose, granted=args.grant)
    else:
        value = sys.stdin.read().rstrip("\n") if args.value == "-" else args.value
        answer = admin.correct(args.token, value)
    target: Path | None = getattr(args, "file", None)
    if target is not None:
        # A disclosure bundle to hand over: JSON whatever --output says, for this user only.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:  # an existing file keeps its mode: make it private before writing
            os.fchmod(fd, 0o600)
            print(
                f"pdv: warning: {target} was readable by others ({mode:04o}); now 0600",
                file=sys.stderr,
            )
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(answer, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        if args.output == "json":
            _print_json({"file": str(target)})
        else:
            print(f"wrote {target}")
    elif args.output == "json":
        _print_json(answer)
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
        return _one_line(value)
    return str(value)


if __name__ == "__main__":
    sys.exit(main())

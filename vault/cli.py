"""`pdv`: run the pdvault server, and call it as the services that use it would.

Values are printed only by `detokenize`, and only to standard output. Errors go to standard
error as STATUS: message, and the exit status is 1 when anything was refused or failed.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pdvault_client import Client, KeyStatus
    from vault.config import Settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_EPILOG = """\
environment:
  PDV_ADDR          where `pdv serve` listens and the other commands connect (127.0.0.1:50051)
  PDV_DATA_DIR      SQLite database, local key file and dev credentials (./.pdvault)
  PDV_DATABASE_URL  production database, e.g. postgresql+psycopg://user@host/pdvault
  PDV_API_KEY       the API key to call with; overrides --caller
  PDV_TLS_CERT, PDV_TLS_KEY  the server's TLS certificate chain and key (PEM)
  PDV_TLS_CA        the CA the client commands trust for the server (turns TLS on)
  PDV_POLICY        a policy file to use instead of the shipped default
  PDV_PROCESSES     serving processes sharing the port (default: one per core)
  PDV_CONFIG        a TOML file with the same settings (lower-case names, without PDV_)

examples:
  pdv serve
  pdv tokenize --caller kyc --subject user-42 --category card_number 4111111111111111
  pdv detokenize --caller payment --purpose payment tok_...
  pdv keys status --caller ops
  pdv subject shred user-42 --caller ops
  pdv policy check
"""


def client_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--caller",
        help="call as this caller, with its key from <data dir>/dev-credentials.json "
        "($PDV_API_KEY takes precedence)",
    )
    cmd.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds (10)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pdv",
        description="pdvault: an encrypted personal-data vault with a tokenization service.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--addr", help="server address, HOST:PORT (default: $PDV_ADDR or 127.0.0.1:50051)"
    )
    p.add_argument(
        "--data-dir", type=Path, help="data directory (default: $PDV_DATA_DIR or ./.pdvault)"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the server until interrupted")
    s.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING or ERROR")

    t = sub.add_parser(
        "tokenize",
        help="store one value of a subject and print its token",
        description="Store one value for a data subject and print its token. Give the value as "
        "an argument, or '-' to read it from standard input (keeps it out of shell history).",
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
        description="Print the value (or masked value) behind each token, one per line. A "
        "refused token prints STATUS: reason on standard error and makes the exit status 1.",
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
        "withdrawal, correction. Answers are printed as JSON.",
    )
    subj_sub = subj.add_subparsers(dest="subject_command", required=True, metavar="ACTION")
    for name, text in [
        ("show", "the subject's state and consents"),
        ("stop", "stop the account: data kept, new data refused, reads limited"),
        ("resume", "resume a stopped account"),
        ("shred", "delete the subject by crypto-shredding; prints the erasure receipt"),
        ("export", "everything held about the subject, and who read it (JSON)"),
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
                "--output", type=Path, help="write the bundle to this file (mode 0600), not stdout"
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
        if args.command == "tokenize":
            return _tokenize(args)
        if args.command == "detokenize":
            return _detokenize(args)
        if args.command == "keys":
            return _keys(args)
        if args.command == "subject":
            return _subject(args)
        if args.command == "policy":
            return _policy_check(args)
        if args.command == "db":
            return _db_upgrade()
    except _UsageError as exc:
        print(f"pdv: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_FAILED
    return EXIT_USAGE


class _UsageError(Exception):
    pass


# -- server side ----------------------------------------------------------------------------------


def _settings() -> Settings:
    # Server modules are imported lazily so that the client commands start fast.
    from vault.config import load_settings
    from vault.errors import ConfigurationError

    try:
        return load_settings()
    except ConfigurationError as exc:
        raise _UsageError(exc.message) from None


def _serve(args: argparse.Namespace) -> int:
    from vault.app import build_app
    from vault.errors import ConfigurationError
    from vault.transport.server import serve, serve_processes

    settings = _settings()
    os.umask(0o077)  # the database, key file and credentials are for this user only
    logging.basicConfig(
        level=(args.log_level or settings.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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
    except ConfigurationError as exc:
        print(f"pdv serve: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _policy_check(args: argparse.Namespace) -> int:
    from vault.domain.policy import load_policy
    from vault.errors import ConfigurationError

    path = args.file or (Path(os.environ["PDV_POLICY"]) if os.environ.get("PDV_POLICY") else None)
    try:
        policy = load_policy(path)
    except (ConfigurationError, OSError) as exc:
        print(f"pdv policy check: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"policy {policy.name} v{policy.version}: {len(policy.categories)} categories, "
        f"{len(policy.purposes)} purposes, {len(policy.callers)} callers: valid"
    )
    for finding in policy.check():
        print(f"- {finding}")
    return EXIT_OK


def _db_upgrade() -> int:
    from vault.storage import migrate
    from vault.storage.store import make_engine, redact_url

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = make_engine(settings.effective_database_url)
    migrate.upgrade(engine)
    where = redact_url(settings.effective_database_url)
    print(f"database {where} at revision {migrate.current_revision(engine)}")
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
    except (OSError, ValueError):
        raise _UsageError(f"cannot read {path}") from None
    if not isinstance(keys, dict) or caller not in keys:
        known = ", ".join(sorted(keys)) if isinstance(keys, dict) else ""
        raise _UsageError(f"no key for caller '{caller}' in {path} (callers there: {known})")
    return str(keys[caller])


def _client(args: argparse.Namespace) -> Client:
    from pdvault_client import Client

    addr = os.environ.get("PDV_ADDR") or "127.0.0.1:50051"
    ca = os.environ.get("PDV_TLS_CA")
    try:
        tls_ca = Path(ca).read_bytes() if ca else None
    except OSError:
        raise _UsageError(f"cannot read PDV_TLS_CA={ca}") from None
    return Client(
        addr,
        _api_key(args.caller),
        timeout=args.timeout,
        tls_ca=tls_ca,
        tls_server_name=os.environ.get("PDV_TLS_SERVER_NAME") or None,
    )


def _report(error: Exception, prefix: str = "") -> None:
    from pdvault_client import PdvaultError

    if isinstance(error, PdvaultError):
        print(f"{prefix}{error.code.name}: {error.message}", file=sys.stderr)
        for v in error.violations:
            print(f"  {v.field}: {v.description} [{v.rule}]", file=sys.stderr)
        if error.code.name == "UNAVAILABLE" and "connect" in error.message.lower():
            print("  is `pdv serve` running at that address?", file=sys.stderr)
    else:
        print(f"{prefix}{error}", file=sys.stderr)


def _keys(args: argparse.Namespace) -> int:
    from pdvault_client import PdvaultError

    with _client(args) as client:
        admin = client.keys(vault_token=os.environ.get("VAULT_TOKEN") or None)
        try:
            if args.keys_command == "status":
                _print_status(admin.status())
            elif args.keys_command == "rotate":
                _print_status(admin.rotate())
            elif args.keys_command == "trim":
                _print_status(admin.trim(args.min_version or None))
            else:
                total = 0
                while True:
                    step = admin.rewrap_batch(args.batch_size)
                    total += step.rewrapped
                    print(
                        f"rewrapped {total} data keys to v{step.target_version}; "
                        f"{step.remaining} left"
                        + (f"; {step.failed} failed" if step.failed else "")
                    )
                    if step.remaining == 0 or step.rewrapped == 0:
                        break
        except PdvaultError as exc:
            _report(exc)
            return EXIT_FAILED
    return EXIT_OK


def _subject(args: argparse.Namespace) -> int:
    from pdvault_client import PdvaultError

    with _client(args) as client:
        admin = client.subjects()
        try:
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
        except PdvaultError as exc:
            _report(exc)
            return EXIT_FAILED
    text = json.dumps(answer, indent=2, sort_keys=True)
    if getattr(args, "output", None):
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        print(f"wrote {args.output}")
    else:
        print(text)
    return EXIT_OK


def _print_status(status: KeyStatus) -> None:
    print(f"key {status.key_name} ({status.provider})")
    print(
        f"  versions: latest v{status.latest_version}, decrypting from "
        f"v{status.min_decryption_version}, destroyed below v{max(status.min_available_version, 1)}"
    )
    for version, count in status.data_keys_by_version.items():
        print(f"  v{version}: {count} data keys")
    if status.other_provider_data_keys:
        print(f"  other providers: {status.other_provider_data_keys} data keys")
    c = status.cache
    if c is not None:
        print(
            f"  cache (this server process): {c.entries} keys, hit rate {c.hit_rate:.1%} "
            f"({c.hits} hits, {c.misses} misses, {c.evictions} evictions); limits "
            f"{c.max_entries} keys, {c.max_age_seconds:g} s, {c.max_uses} uses"
        )


def _tokenize(args: argparse.Namespace) -> int:
    from pdvault_client import Field, PdvaultError

    raw: str | bytes
    if args.value == "-":
        raw = sys.stdin.buffer.read() if args.binary else sys.stdin.read().rstrip("\n")
    else:
        raw = args.value.encode() if args.binary else args.value
    with _client(args) as client:
        try:
            results = client.tokenize(
                args.subject,
                [Field(args.category, raw, card_token=args.card_token)],
                request_id=args.request_id,
            )
        except PdvaultError as exc:
            _report(exc)
            return EXIT_FAILED
    for r in results:
        print(r.token)
    return EXIT_OK


def _detokenize(args: argparse.Namespace) -> int:
    from pdvault_client import PdvaultError

    with _client(args) as client:
        try:
            results = client.detokenize(
                args.tokens,
                args.purpose,
                justification=args.justification,
                legal_basis=args.legal_basis,
            )
        except PdvaultError as exc:
            _report(exc)
            return EXIT_FAILED
    status = EXIT_OK
    many = len(results) > 1
    for r in results:
        if r.error is not None:
            _report(r.error, prefix=f"{r.token}: " if many else "")
            status = EXIT_FAILED
        elif r.masked is not None:
            print(r.masked)
        elif isinstance(r.value, bytes):
            # The command's whole purpose: the granted value, to stdout only, never to a log.
            print("base64:" + base64.b64encode(r.value).decode("ascii"))
        else:
            print(r.value)  # the granted value, as above
    return status


if __name__ == "__main__":
    sys.exit(main())

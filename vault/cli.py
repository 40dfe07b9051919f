"""The server's side of `pdv`: `serve`, `db upgrade` and `policy check`.

`pdv` itself (its parser, the client commands, the exit statuses) is `pdvault_client.cli`, in
the client distribution, which this one depends on. It loads this module by name when one of
these commands runs, so that a client-only install works without `vault` (see
pdvault_client/cli/__init__.py). Each function takes the parsed arguments and returns the exit
status; a mistake the user fixes raises UsageError, which `pdv` prints as one line after the
command's name. The modules that serve and migrate are imported when those commands run, so
that `pdv policy check` starts fast.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pdvault_client.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_REFUSED, UsageError
from pdvault_client.cli.report import print_json
from vault.config import Settings, load_settings
from vault.domain.policy import Policy
from vault.domain.policy_file import load_policy
from vault.errors import ConfigurationError, FailedPrecondition, PdvaultError
from vault.logs import configure_logging

if TYPE_CHECKING:
    from vault.domain.stores import Stores
    from vault.kms.checkpoints import AuditCheckpoints

__all__ = [
    "audit_checkpoint",
    "audit_key",
    "audit_proof",
    "audit_tail",
    "audit_verify",
    "caller_bootstrap",
    "db_upgrade",
    "policy_check",
    "policy_explain",
    "policy_matrix",
    "serve",
]


def serve(args: argparse.Namespace) -> int:
    import signal

    # SIGHUP reloads the policy once the server serves; before that it must not end it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    settings = _settings()
    os.umask(0o077)  # the database, key file and credentials are for this user only
    configure_logging(args.log_level or settings.log_level, settings.log_format)
    logging.getLogger("pdv").info("starting: %s", settings.describe())
    if settings.dev_credentials:
        print(
            f"pdv: API keys of the demo callers are in {settings.credentials_file}",
            file=sys.stderr,
        )
    try:
        return _run_server(settings)
    except Exception as exc:
        # One line naming what to fix: a start-up that would lose or hide data stops here.
        message = _startup_error(exc)
        if message is None:
            raise
        raise UsageError(message) from None


def _run_server(settings: Settings) -> int:
    from vault.app import build_app
    from vault.runtime import serve_processes
    from vault.transport.server import serve as serve_app

    processes = settings.effective_processes
    if processes > 1:
        return serve_processes(settings, processes)
    serve_app(build_app(settings), settings.addr)
    return EXIT_OK


def db_upgrade(_args: argparse.Namespace) -> int:
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
        raise UsageError(message) from None
    print(f"database {redact_url(settings.effective_database_url)} at revision {revision}")
    return EXIT_OK


def _policy_path(given: Path | None) -> Path | None:
    return given or (Path(os.environ["PDV_POLICY"]) if os.environ.get("PDV_POLICY") else None)


def policy_check(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(_policy_path(args.file))
    except (ConfigurationError, OSError) as exc:
        print(f"pdv policy check: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return EXIT_FAILED
    findings = policy.check()
    if args.output == "json":
        print_json(
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


def _load_for_review(given: Path | None) -> Policy:
    try:
        return load_policy(_policy_path(given))
    except ConfigurationError as exc:
        raise UsageError(exc.message) from None
    except OSError as exc:
        raise UsageError(_startup_error(exc) or str(exc)) from None


def policy_explain(args: argparse.Namespace) -> int:
    """The decision of the server's evaluator for one read, and every rule it looked at."""
    from vault.domain.policy_explain import Unknown, explain
    from vault.domain.types import LegalBasis

    policy = _load_for_review(args.file)
    try:
        answer = explain(
            policy,
            args.explain_caller,
            args.purpose,
            args.category,
            legal_basis=LegalBasis(args.legal_basis) if args.legal_basis else None,
            consent=args.consent,
            stopped=args.stopped,
        )
    except Unknown as exc:
        raise UsageError(str(exc)) from None
    if args.format == "json":
        print_json(answer.as_dict())
        return EXIT_OK
    view = f" ({answer.view.value} view)" if answer.view else ""
    print(
        f"{'GRANTED' if answer.granted else 'REFUSED'}{view}: caller {answer.caller} reading "
        f"{answer.category} for {answer.purpose}"
    )
    facts = [
        f"legal basis {answer.legal_basis.value}" if answer.legal_basis else "no legal basis",
        "consent recorded" if answer.consent else "no consent recorded",
        "account stopped" if answer.stopped else "account active",
    ]
    print(f"  facts: {', '.join(facts)}")
    print(f"  decided by: {answer.rule}")
    if not answer.granted:
        print(f"  the caller is told ({answer.reason}): {answer.told}")
    print("rules looked at, in order:")
    for step in answer.steps:
        print(f"  {step.verdict.value:<11}  {step.rule}: {step.text}")
    print("what the policy file says here:")
    for where, said in answer.settings:
        print(f"  {where} = {said}")
    print("recorded decisions that concern this read:")
    for note in answer.notes:
        print(f"  {note.id} ({note.about}): {' '.join(note.text.split())}")
    if not answer.notes:
        print("  none")
    print(f"policy {answer.policy} v{answer.version}")
    return EXIT_OK


def policy_matrix(args: argparse.Namespace) -> int:
    """Which caller can read which category for which purpose (and with which view)."""
    import csv

    from vault.domain.policy_explain import matrix

    policy = _load_for_review(args.file)
    grants = matrix(policy)
    view = ["view"] if args.view else []
    if args.format == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        conditions = ["consent_required", "allowed_when_stopped", "legal_basis"]
        out.writerow(["caller", "purpose", "category", *view, *conditions])
        for g in grants:
            shown = [g.view.value] if view else []
            said = [g.consent_required, g.allowed_when_stopped, g.legal_basis]
            out.writerow([g.caller, g.purpose, g.category, *shown, *map(_bool, said)])
        return EXIT_OK
    head = ["caller", "purpose", "category", *view, "conditions"]
    rows = [
        [g.caller, g.purpose, g.category, *([g.view.value] if view else []), g.conditions()]
        for g in grants
    ]
    print(f"policy {policy.name} v{policy.version}: what each caller may read, and for what")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head) - 1)]
    for r in [head, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(r, widths, strict=False)]
        print("  ".join([*cells, str(r[-1])]).rstrip())
    readers = {g.caller for g in grants}
    silent = sorted(c for c in policy.callers if c not in readers)
    if silent:
        print(f"callers that read no category: {', '.join(silent)}")
    return EXIT_OK


def _bool(value: bool) -> str:
    return "true" if value else "false"


# -- callers ------------------------------------------------------------------------------------


def caller_bootstrap(args: argparse.Namespace) -> int:
    """The very first operator key, written straight into the database and printed once."""
    from vault.app import secure_directory, utc_now
    from vault.domain.credentials import CALLERS_OPERATION, bootstrap_operator
    from vault.storage import migrate
    from vault.storage.sql import Database, make_engine, sql_stores

    settings = _settings()
    policy = _or_usage(lambda: load_policy(settings.policy_file))
    operators = sorted(c.name for c in policy.callers.values() if CALLERS_OPERATION in c.operations)
    operator = args.operator or (operators[0] if len(operators) == 1 else "")
    if not operator:
        raise UsageError("name the operator with --caller: " + ", ".join(operators))
    secure_directory(settings.data_dir)
    engine = _or_usage(lambda: make_engine(settings.effective_database_url))
    try:
        if settings.auto_migrate:
            _or_usage(lambda: migrate.upgrade(engine))
        stores = sql_stores(Database(engine), group_commit=False)
        try:
            new = bootstrap_operator(policy, stores.credentials, stores.audit, utc_now, operator)
        except FailedPrecondition as exc:  # an operator has a key: refused, not a usage error
            print(f"pdv caller bootstrap: {exc.message}", file=sys.stderr)
            return EXIT_REFUSED
        except PdvaultError as exc:
            raise UsageError(exc.message) from None
    finally:
        engine.dispose()
    print(new.key)
    print(
        f"pdv caller bootstrap: the first key of operator {new.caller} (id {new.key_id}) is shown "
        "this once; use it as PDV_API_KEY to add the other callers' keys with pdv caller add",
        file=sys.stderr,
    )
    return EXIT_OK


# -- the audit log -------------------------------------------------------------------------------


def audit_verify(args: argparse.Namespace) -> int:
    from vault.kms.checkpoints import verify_audit

    settings = _settings()
    with _audit_stores(settings) as (stores, checkpoints):
        verifier = args.verifier_key or checkpoints.verifier
        files = args.checkpoints or [settings.effective_audit_checkpoints]
        result = _or_usage(lambda: verify_audit(stores.audit, verifier, files))
    if args.output == "json":
        print_json(
            {
                "ok": result.ok,
                "entries": result.entries,
                "checkpoints": result.checkpoints,
                "root": base64.b64encode(result.root).decode(),
                "problems": [{"seq": p.seq, "problem": p.text} for p in result.problems],
            }
        )
    elif result.ok:
        print(
            f"audit log verified: {result.entries} entries, {result.checkpoints} checkpoints, "
            f"root {base64.b64encode(result.root).decode()}"
        )
    else:
        for problem in result.problems:
            print(f"pdv audit verify: {problem.text}", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILED


def audit_proof(args: argparse.Namespace) -> int:
    from vault.kms.checkpoints import inclusion

    settings = _settings()
    with _audit_stores(settings) as (stores, _checkpoints):
        p = _or_usage(lambda: inclusion(stores.audit, args.seq))
    answer: dict[str, object] = {
        "seq": p.seq,
        "entry": p.entry.decode("utf-8"),
        "leaf_hash": _b64(p.leaf_hash),
        "tree_size": p.size,
        "root": _b64(p.root),
        "proof": [_b64(h) for h in p.proof],
        "checkpoint": p.checkpoint,
    }
    if args.output == "json":
        print_json(answer)
        return EXIT_OK
    print(f"entry {p.seq}: {answer['entry']}")
    print(f"leaf hash (SHA-256 of 0x00 and the entry): {answer['leaf_hash']}")
    print(f"in the tree of {p.size} entries, root {answer['root']}, by this proof (RFC 9162):")
    for h in p.proof:
        print(f"  {_b64(h)}")
    print("signed by the checkpoint:")
    print(p.checkpoint, end="")
    return EXIT_OK


def audit_tail(args: argparse.Namespace) -> int:
    import threading

    from vault.kms.audit_sink import AuditTail

    settings = _settings()
    with _audit_stores(settings) as (stores, _checkpoints):
        start = args.start if args.start is not None else 0
        tail = AuditTail(stores.audit, sys.stdout.buffer, start)
        if not args.follow:
            tail.step()
            return EXIT_OK
        try:
            tail.follow(threading.Event())
        except KeyboardInterrupt:
            return EXIT_OK
    return EXIT_OK


def audit_checkpoint(_args: argparse.Namespace) -> int:
    settings = _settings()
    with _audit_stores(settings) as (_stores, checkpoints):
        made = _or_usage(checkpoints.checkpoint)
    if made is None:
        print("no new entries since the last checkpoint")
    else:
        print(
            f"checkpoint of {made.size} entries signed, in the database and "
            f"{settings.effective_audit_checkpoints}"
        )
    return EXIT_OK


def audit_key(_args: argparse.Namespace) -> int:
    settings = _settings()
    with _audit_stores(settings) as (_stores, checkpoints):
        print(checkpoints.verifier)
    return EXIT_OK


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode("ascii")


@contextlib.contextmanager
def _audit_stores(settings: Settings) -> Iterator[tuple[Stores, AuditCheckpoints]]:
    """The database's stores and the checkpointer, without a server (the schema must be
    current)."""
    from vault.app import audit_checkpoints, key_provider
    from vault.storage import migrate
    from vault.storage.sql import Database, make_engine, sql_stores

    try:
        engine = make_engine(settings.effective_database_url)
        if migrate.current_revision(engine) != migrate.head_revision():
            raise ConfigurationError("the database schema is not current; run: pdv db upgrade")
    except Exception as exc:
        message = _startup_error(exc)
        if message is None:
            raise
        raise UsageError(message) from None
    stores = sql_stores(Database(engine), group_commit=False)
    try:
        provider = _or_usage(lambda: key_provider(settings, stores.keys))
        checkpoints = _or_usage(lambda: audit_checkpoints(settings, stores, provider))
        yield stores, checkpoints
    finally:
        engine.dispose()


T = TypeVar("T")


def _or_usage(work: Callable[[], T]) -> T:
    try:
        return work()
    except (PdvaultError, OSError) as exc:
        message = _startup_error(exc)
        if message is None:
            raise
        raise UsageError(message) from None


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigurationError as exc:
        raise UsageError(exc.message) from None


def _startup_error(exc: Exception) -> str | None:
    """The one line for an error that stops `serve` or `db upgrade` at start-up, or None when
    it is not one the user can act on (then the traceback is the report: a bug). Storage turns
    the driver's errors into StorageUnavailable, naming what to check and never the URL."""
    if isinstance(exc, PdvaultError):  # ConfigurationError, StorageUnavailable ...
        return exc.message
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return None

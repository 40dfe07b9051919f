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
    Detokenized,
    Field,
    KeyStatus,
    RewrapStep,
    Tokenized,
    Trimmed,
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


@pytest.fixture
def pdv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[[list[str]], Seen]:
    """`pdv argv...` in-process with the fakes; callers `base` and `probe` have keys."""
    (tmp_path / "dev-credentials.json").write_text('{"base": "key-base", "probe": "key-probe"}')
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
    monkeypatch.setattr(vault.cli, "configure_logging", lambda level: RECORD.add("log", level))

    def serve(settings: Settings) -> int:
        RECORD.add("serve", settings)
        return 0

    monkeypatch.setattr(vault.cli, "_run_server", serve)

    def policy(path: Path | None) -> Policy:
        RECORD.add("load_policy", path)
        return load_policy(None)

    monkeypatch.setattr(vault.cli, "load_policy", policy)

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
}


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


TOKENIZE = [*BASE["tokenize"], "--caller", "base"]
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
    ("policy check", "--file"): (
        ["policy", "check", "--file", "probe.toml"],
        lambda s: s.one("load_policy").args == (Path("probe.toml"),),
    ),
    ("policy check", "--output"): (
        ["policy", "check", "--output", "json"],
        lambda s: s.json()["valid"],
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

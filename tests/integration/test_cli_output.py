"""What a script can rely on: `--output text|json` on every client command, one labelled line
(or object) per token, the exit status of each kind of failure, and errors said once.

In-process (`pdvault_client.cli.main`, what `pdv` runs) against a test server, on SQLite and
PostgreSQL; test_cli.py and test_cli_errors.py run the same entry point as a subprocess."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from pdvault_client.cli import main
from pdvault_client.cli.exits import EXIT_CODES
from tests.conftest import RunningServer

PAN = "4111" + "111111111111"  # built at run time, as in the other tests


@pytest.fixture
def pdv(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> RunningServer:
    monkeypatch.setenv("PDV_ADDR", server.addr)
    monkeypatch.setenv("PDV_DATA_DIR", str(server.app.settings.data_dir))
    for var in ("PDV_API_KEY", "PDV_TLS_CA", "PDV_TLS_SERVER_NAME"):
        monkeypatch.delenv(var, raising=False)
    return server


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code, out, err = run(capsys, *argv, "--output", "json")
    assert out, err
    return code, json.loads(out)


def tokenize(capsys: pytest.CaptureFixture[str], category: str, value: str) -> str:
    code, out, err = run(
        capsys, "tokenize", "--caller", "kyc", "--subject", "user-1", "--category", category, value
    )
    assert code == 0, err
    return out.strip()


def test_the_exit_status_table_is_the_documented_one() -> None:
    assert [code for code, _ in EXIT_CODES] == [0, 1, 2, 3, 4, 5]
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for code, text in EXIT_CODES:
        assert f"| {code} | {text} |" in readme


# -- tokenize and detokenize ----------------------------------------------------------------------


def test_tokenize_json(pdv: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, answer = run_json(
        capsys, "tokenize", "--caller", "kyc", "--subject", "u1", "--category", "name", "Ann Lee"
    )
    assert code == 0
    assert answer["category"] == "name"
    assert answer["token"].startswith("tok_")
    assert set(answer) == {"token", "category"}


def test_detokenize_json_labels_every_result_refusals_included(
    pdv: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    name = tokenize(capsys, "name", "Ann Lee")
    card = tokenize(capsys, "card_number", PAN)
    unknown = "tok_" + "a" * 26
    code, answer = run_json(
        capsys,
        "detokenize",
        "--caller",
        "shipping",
        "--purpose",
        "product_shipping",
        card,
        name,
        unknown,
    )
    assert code == 4  # refused: the first refused token's status
    assert [a["token"] for a in answer] == [card, name, unknown]
    assert answer[1] == {"token": name, "category": "name", "value": {"text": "Ann Lee"}}
    for refused in (answer[0], answer[2]):
        assert refused["error"]["code"] == "PERMISSION_DENIED"
        assert refused["error"]["reason"] == "TOKEN_REFUSED"
        assert refused["error"]["violations"] == []
        assert set(refused) == {"token", "category", "error"}
    # The refusal never says whether the token exists, nor its category.
    assert answer[0]["error"] == answer[2]["error"]
    assert answer[0]["category"] == answer[2]["category"] == ""
    assert PAN not in json.dumps(answer)


def test_detokenize_json_masked_and_binary(
    pdv: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    name = tokenize(capsys, "name", "Ann Lee")
    code, answer = run_json(
        capsys, "detokenize", "--caller", "support", "--purpose", "customer_support", name
    )
    assert code == 0
    assert answer == [{"token": name, "category": "name", "masked": "A. L."}]
    code, out, _ = run(
        capsys,
        "tokenize",
        *("--caller", "kyc", "--subject", "u1", "--category", "attachment"),
        *("--binary", "scan"),
    )
    code, answer = run_json(
        capsys,
        "detokenize",
        *("--caller", "kyc", "--purpose", "identity_verification"),
        out.strip(),
    )
    assert answer[0]["value"] == {"binary": "c2Nhbg=="}


def test_detokenize_text_of_several_tokens_is_one_labelled_line_each(
    pdv: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    two_lines = tokenize(capsys, "address", "1-2-3 Roppongi\tMinato-ku\\x")
    card = tokenize(capsys, "card_number", PAN)
    code, out, err = run(
        capsys,
        "detokenize",
        *("--caller", "shipping", "--purpose", "product_shipping"),
        *(two_lines, card, two_lines),
    )
    assert code == 4
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == f"{two_lines}\t1-2-3 Roppongi\\tMinato-ku\\\\x"  # escaped: one line
    assert lines[1].startswith(f"{card}\tPERMISSION_DENIED: refused: ")
    assert lines[2] == lines[0]
    assert len(lines) == 3


def test_text_output_is_the_default_and_can_be_asked_for(
    pdv: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    name = tokenize(capsys, "name", "Ann Lee")
    argv = ["detokenize", "--caller", "shipping", "--purpose", "product_shipping", name]
    assert run(capsys, *argv) == run(capsys, *argv, "--output", "text") == (0, "Ann Lee\n", "")


# -- exit status and errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "status", "code"),
    [
        (["tokenize", "--subject", "u 1", "--category", "name", "A"], 3, "INVALID_ARGUMENT"),
        (["detokenize", "--purpose", "payment", "tok_" + "a" * 26], 4, "PERMISSION_DENIED"),
        (["subject", "show", "nobody"], 4, "PERMISSION_DENIED"),
        (["keys", "status"], 4, "PERMISSION_DENIED"),
    ],
)
def test_each_kind_of_failure_has_its_exit_status(
    pdv: RunningServer,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    status: int,
    code: str,
) -> None:
    caller = "shipping" if argv[0] != "tokenize" else "kyc"
    got, out, err = run(capsys, *argv, "--caller", caller)
    assert got == status
    assert out == ""
    assert err.startswith(f"{code}: ")


def test_not_found_and_failed_precondition_are_refusals(
    pdv: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "subject", "show", "nobody", "--caller", "ops")[0] == 4  # NOT_FOUND
    tokenize(capsys, "name", "Ann Lee")
    assert run(capsys, "keys", "rotate", "--caller", "ops")[0] == 0
    got, _, err = run(capsys, "keys", "trim", "--caller", "ops", "--min-version", "2")
    assert (got, err.split(":")[0]) == (4, "FAILED_PRECONDITION")


def test_a_violation_is_printed_once(
    pdv: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys,
        *("tokenize", "--caller", "kyc", "--subject", "u1", "--category", "card_number"),
        "4111111111111112",
    )
    assert code == 3
    assert err.count("fails the Luhn check digit") == 1
    assert err.splitlines()[0] == (
        "INVALID_ARGUMENT: fields[0].value: fails the Luhn check digit [card_number.luhn]"
    )
    assert "4111111111111112" not in err


def test_a_near_miss_category_or_purpose_gets_a_suggestion(
    pdv: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys,
        *("tokenize", "--caller", "kyc", "--subject", "u1", "--category", "card_numbr", PAN),
    )
    assert code == 3
    assert "  did you mean --category card_number?" in err.splitlines()
    assert PAN not in err
    code, _, err = run(
        capsys, "detokenize", "--caller", "payment", "--purpose", "paymnt", "tok_" + "a" * 26
    )
    assert code == 3
    assert "  did you mean --purpose payment?" in err.splitlines()
    code, _, err = run(
        capsys,
        *("subject", "consent", "user-1", "--caller", "ops", "--withdraw"),
        *("--purpose", "advertisng"),
    )
    assert "did you mean --purpose advertising?" in err
    # Far from every name: no guess.
    _, _, err = run(
        capsys, "detokenize", "--caller", "payment", "--purpose", "zzzz", "tok_" + "a" * 26
    )
    assert "did you mean" not in err


def test_a_near_miss_caller_gets_a_suggestion(
    pdv: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "detokenize", "--caller", "paymnt", "--purpose", "payment", "tok_x")
    assert code == 2
    assert "no key for caller 'paymnt'" in err
    assert "did you mean 'payment'?" in err


# -- the subject and keys commands ----------------------------------------------------------------


def test_subject_commands_json_prints_defaults_and_numbers(
    pdv: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    tokenize(capsys, "name", "Ann Lee")
    code, answer = run_json(
        capsys,
        *("subject", "consent", "user-1", "--purpose", "advertising", "--withdraw"),
        *("--caller", "ops"),
    )
    assert code == 0
    assert answer["subject"]["consents"] == [{"purpose": "advertising", "granted": False}]
    for action in ("show", "stop", "resume"):
        code, answer = run_json(capsys, "subject", action, "user-1", "--caller", "ops")
        assert code == 0
        assert answer["subject"]["subject"] == "user-1"
    code, answer = run_json(capsys, "subject", "export", "user-1", "--caller", "ops")
    assert answer["values"][0]["value"] == {"text": "Ann Lee"}
    code, answer = run_json(capsys, "subject", "shred", "user-1", "--caller", "ops")
    assert answer["receipt"]["valuesDestroyed"] == 1  # a number, not "1"
    assert answer["receipt"]["dataKeysDestroyed"] == 1


def test_subject_commands_text_is_indented_name_value_lines(
    pdv: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    tokenize(capsys, "name", "Ann Lee")
    code, out, err = run(
        capsys,
        *("subject", "consent", "user-1", "--purpose", "advertising", "--withdraw"),
        *("--caller", "ops"),
    )
    assert code == 0, err
    assert out.splitlines() == [
        "subject:",
        "  subject: user-1",
        "  state: SUBJECT_STATE_ACTIVE",
        "  consents:",
        "    - purpose: advertising",
        "      granted: false",
    ]
    code, out, _ = run(capsys, "subject", "shred", "user-1", "--caller", "ops")
    assert "  valuesDestroyed: 1" in out.splitlines()
    assert not out.startswith("{")


def test_subject_correct_json(pdv: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    token = tokenize(capsys, "name", "Ann Lee")
    code, answer = run_json(capsys, "subject", "correct", token, "Ann Leigh", "--caller", "ops")
    assert code == 0, answer
    _, out, _ = run(
        capsys, "detokenize", "--caller", "shipping", "--purpose", "product_shipping", token
    )
    assert out == "Ann Leigh\n"


def test_export_to_a_file_is_json_for_this_user_only(
    pdv: RunningServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tokenize(capsys, "name", "Ann Lee")
    bundle = tmp_path / "user-1.json"
    code, out, _ = run(
        capsys, "subject", "export", "user-1", "--caller", "ops", "--file", str(bundle)
    )
    assert (code, out) == (0, f"wrote {bundle}\n")
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    assert json.loads(bundle.read_text())["values"][0]["value"] == {"text": "Ann Lee"}
    code, answer = run_json(
        capsys, "subject", "export", "user-1", "--caller", "ops", "--file", str(bundle)
    )
    assert answer == {"file": str(bundle)}


def test_keys_commands_json(pdv: RunningServer, capsys: pytest.CaptureFixture[str]) -> None:
    tokenize(capsys, "name", "Ann Lee")
    code, status = run_json(capsys, "keys", "status", "--caller", "ops")
    assert code == 0
    assert status["latestVersion"] == 1
    assert status["versions"] == [{"version": 1, "dataKeys": 1, "state": "active"}]
    assert isinstance(status["cache"]["entries"], int)
    assert status["cache"]["processId"] == os.getpid()
    code, status = run_json(capsys, "keys", "rotate", "--caller", "ops")
    assert status["latestVersion"] == 2
    code, step = run_json(capsys, "keys", "rewrap", "--caller", "ops")
    assert step == {"rewrapped": 1, "failed": 0, "remaining": 0, "targetVersion": 2}
    code, trimmed = run_json(capsys, "keys", "trim", "--caller", "ops")
    assert code == 0
    assert trimmed["destroyedVersions"] == [1]
    assert trimmed["status"]["minDecryptionVersion"] == 2


def test_policy_check_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, answer = run_json(capsys, "policy", "check")
    assert code == 0
    assert answer["valid"] is True
    assert answer["categories"] == 16
    assert any(f.startswith("decision date-of-birth-has-no-row") for f in answer["findings"])

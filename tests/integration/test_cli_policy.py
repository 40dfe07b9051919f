"""`pdv policy explain` and `pdv policy matrix` as a reviewer runs them: the installed entry point
in a subprocess, no server, no database (issue #12 §5)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import pdv_env
from vault.domain.policy_file import default_policy_text

PDV = [sys.executable, "-m", "pdvault_client.cli"]


def pdv(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PDV, *args],
        cwd=cwd,
        env=pdv_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_explain_the_issue_s_example(tmp_path: Path) -> None:
    out = pdv(
        tmp_path, "policy", "explain", "--caller", "shipping", "--purpose", "payment",
        "--category", "card_number",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    lines = out.stdout.splitlines()
    assert lines[0] == "REFUSED: caller shipping reading card_number for payment"
    assert "rules looked at, in order:" in lines
    assert "what the policy file says here:" in lines
    assert "recorded decisions that concern this read:" in lines
    assert not (tmp_path / ".pdvault").exists()  # nothing written: no server, no database


def test_explain_follows_pdv_policy_and_json(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    # Support sees email in full with this file (masked with the shipped one).
    text = default_policy_text().replace(
        "[callers.support]\n", '[callers.support]\nviews = { email = "full" }\n', 1
    )
    policy.write_text(text, encoding="utf-8")
    out = pdv(
        tmp_path, "policy", "explain", "--caller", "support", "--purpose", "customer_support",
        "--category", "email", "--format", "json", PDV_POLICY=str(policy),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert (answer["decision"], answer["view"]) == ("granted", "full")


def test_an_unknown_name_is_one_line_and_status_2(tmp_path: Path) -> None:
    out = pdv(
        tmp_path, "policy", "explain", "--caller", "shipping", "--purpose", "payment",
        "--category", "cvv",
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.splitlines() == [out.stderr.rstrip("\n")]  # one line
    assert out.stderr.startswith("pdv policy explain: unknown category 'cvv' (the policy's: ")


def test_matrix_as_csv(tmp_path: Path) -> None:
    out = pdv(tmp_path, "policy", "matrix", "--format", "csv", "--view")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    found = {(r["caller"], r["purpose"], r["category"]): r for r in rows}
    assert found[("payment", "payment", "card_number")]["view"] == "full"
    assert found[("support", "customer_support", "card_number")]["view"] == "masked"
    assert ("shipping", "product_shipping", "card_number") not in found
    assert all(r["view"] in {"full", "masked"} for r in rows)
    table = pdv(tmp_path, "policy", "matrix")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[1].split() == ["caller", "purpose", "category", "conditions"]

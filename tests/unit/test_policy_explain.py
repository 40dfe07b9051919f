"""`pdv policy explain` and `pdv policy matrix` (issue #12 §5): the decision of the server's own
evaluator and every rule it looked at, and every read the policy grants, as text, JSON and CSV.
The commands run through `pdv`'s real `main`, in this process; no server, no database."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pdvault_client.cli import main
from vault.domain.access import Access, Existence, ItemFacts, ReadEvaluator, Step, Verdict
from vault.domain.policy_explain import Unknown, explain, matrix, notes_about
from vault.domain.policy_file import default_policy_text, load_policy
from vault.domain.types import CallerName, Category, LegalBasis, Purpose, SubjectState, View

POLICY = load_policy()
LAW = LegalBasis.LAW_OR_REGULATION

Pdv = Callable[..., tuple[int, str, str]]


@pytest.fixture
def pdv(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Pdv:
    monkeypatch.delenv("PDV_POLICY", raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(list(argv))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def rules(steps: tuple[Step, ...]) -> list[tuple[str, Verdict]]:
    return [(s.rule, s.verdict) for s in steps]


# -- the evaluator's trace ------------------------------------------------------------------


def test_a_trace_changes_no_decision() -> None:
    """The server calls the evaluator without a trace, explain with one: same answers."""
    evaluator = ReadEvaluator(POLICY)
    for caller in POLICY.callers.values():
        for purpose in sorted(caller.purposes):
            for category in POLICY.categories:
                for state in (SubjectState.ACTIVE, SubjectState.STOPPED):
                    for consent in (None, True, False):
                        for legal in (None, LAW):
                            access = Access(caller.name, purpose, legal)
                            item = ItemFacts(Existence.STORED, category, state, consent)
                            trace: list[Step] = []
                            assert evaluator.admit(access) == evaluator.admit(access, trace)
                            plain = evaluator.decide(access, item)
                            assert evaluator.decide(access, item, trace) == plain
                            assert trace  # something was looked at, always


def test_a_grant_names_every_rule_that_took_part() -> None:
    answer = explain(POLICY, "payment", "payment", "card_number")
    assert answer.granted
    assert answer.view is View.FULL
    assert rules(answer.steps) == [
        ("caller:payment:purposes", Verdict.ALLOWS),
        ("category:card_number:purposes", Verdict.ALLOWS),
        ("caller:payment:view", Verdict.ALLOWS),
        ("subject:stopped", Verdict.NOT_APPLIED),
        ("purpose:payment:consent", Verdict.NOT_APPLIED),
    ]
    assert answer.rule == "category:card_number:purposes"
    assert answer.reason is None
    assert answer.told == "granted"
    settings = dict(answer.settings)
    assert "payment" in settings["categories.card_number.purposes"]
    assert settings["callers.payment.view"] == "full"
    assert settings["purposes.payment.consent_required"] == "false"
    assert "card-row-split" in {n.id for n in answer.notes}


def test_a_caller_that_may_not_claim_the_purpose_is_refused_first() -> None:
    answer = explain(POLICY, "shipping", "payment", "card_number")
    assert not answer.granted
    assert answer.view is None
    assert rules(answer.steps) == [("caller:shipping:purposes", Verdict.REFUSES)]
    assert answer.reason == "PERMISSION_DENIED"
    # What the evaluator did not reach is still shown: what the policy file says there.
    assert dict(answer.settings)["callers.shipping.purposes"] == (
        "marketplace_shipping_provision, product_shipping"
    )


def test_a_category_the_purpose_does_not_permit_looks_like_an_unknown_token() -> None:
    answer = explain(POLICY, "shipping", "product_shipping", "card_number")
    assert not answer.granted
    assert ("category:card_number:purposes", Verdict.REFUSES) in rules(answer.steps)
    assert answer.reason == "TOKEN_REFUSED"  # the caller cannot tell it from an unknown token
    assert "does not exist, or purpose 'product_shipping'" in answer.told


def test_consent_stopped_accounts_and_legal_bases() -> None:
    refused = explain(POLICY, "legal", "third_party_provision", "phone")
    assert not refused.granted
    assert refused.rule == "purpose:third_party_provision:consent"
    assert refused.reason == "CONSENT_REQUIRED"
    consented = explain(POLICY, "legal", "third_party_provision", "phone", consent=True)
    assert consented.granted
    assert ("purpose:third_party_provision:consent", Verdict.ALLOWS) in rules(consented.steps)
    stopped = explain(POLICY, "legal", "third_party_provision", "phone", consent=True, stopped=True)
    assert not stopped.granted
    assert stopped.rule == "subject:stopped"
    lifted = explain(
        POLICY, "legal", "third_party_provision", "phone", stopped=True, legal_basis=LAW
    )
    assert lifted.granted
    assert rules(lifted.steps)[-2:] == [
        ("lifecycle:legal_basis_lifts_stop", Verdict.ALLOWS),
        ("purpose:third_party_provision:legal_basis:law_or_regulation", Verdict.ALLOWS),
    ]
    assert {"legal-basis", "legal-basis-callers", "stopped-accounts"} <= {
        n.id for n in lifted.notes
    }
    fraud = explain(POLICY, "payment", "fraud_prevention", "card_number", stopped=True)
    assert fraud.granted
    assert ("purpose:fraud_prevention:allowed_when_stopped", Verdict.ALLOWS) in rules(fraud.steps)
    stranger = explain(POLICY, "payment", "payment", "card_number", legal_basis=LAW)
    assert not stranger.granted
    assert stranger.reason == "LEGAL_BASIS_REFUSED"


def test_unknown_names_are_named() -> None:
    for args, what in [
        (("nobody", "payment", "name"), "caller"),
        (("payment", "nothing", "name"), "purpose"),
        (("payment", "payment", "cvv"), "category"),
    ]:
        with pytest.raises(Unknown) as raised:
            explain(POLICY, *args)
        assert raised.value.what == what
        assert f"unknown {what} '" in str(raised.value)


def test_decisions_about_retention_are_not_about_reads() -> None:
    found = {n.id for n in notes_about(POLICY, ["ip_address"])}
    assert "questions-are-personal-inquiries" in found
    assert "access-data-one-year" not in found


# -- the matrix -----------------------------------------------------------------------------


def test_the_matrix_is_the_evaluator_s_prepared_decisions() -> None:
    grants = matrix(POLICY)
    seen = {(g.caller, g.purpose, g.category): g.view for g in grants}
    for caller in POLICY.callers.values():
        for purpose in caller.purposes:
            for category in POLICY.categories:
                d = POLICY.permits(caller.name, purpose, category)
                assert ((caller.name, purpose, category) in seen) == d.allowed
    assert seen[(CallerName("support"), Purpose("customer_support"), Category("email"))] is (
        View.MASKED
    )
    assert not any(g.caller == "ops" for g in grants)
    assert not any(g.caller == "shipping" and g.category == "card_number" for g in grants)


# -- through `pdv` ----------------------------------------------------------------------------


def test_explain_as_text(pdv: Pdv) -> None:
    code, out, err = pdv(
        "policy", "explain", "--caller", "shipping", "--purpose", "payment", "--category",
        "card_number",
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "REFUSED: caller shipping reading card_number for payment"
    assert "  decided by: caller:shipping:purposes" in lines
    assert any(ln.startswith("  refuses      caller:shipping:purposes: ") for ln in lines)
    assert "  categories.card_number.purposes = " in out
    assert "  card-row-split (card_number, card_holder, card_expiry): Row 5" in out
    assert lines[-1] == "policy engoo-privacy-policy v1"


def test_explain_as_json(pdv: Pdv) -> None:
    code, out, _err = pdv(
        "policy", "explain", "--caller", "legal", "--purpose", "third_party_provision",
        "--category", "phone", "--legal-basis", "law_or_regulation", "--stopped", "--format",
        "json",
    )  # fmt: skip
    assert code == 0
    answer = json.loads(out)
    assert answer["decision"] == "granted"
    assert answer["view"] == "full"
    assert answer["request"] == {
        "caller": "legal",
        "purpose": "third_party_provision",
        "category": "phone",
        "legalBasis": "law_or_regulation",
        "consent": False,
        "stopped": True,
    }
    assert [s["verdict"] for s in answer["steps"]][:2] == ["allows", "allows"]
    assert {"rule": "lifecycle.legal_basis_lifts_stop", "text": "true"} in answer["settings"]
    assert "legal-basis" in {d["id"] for d in answer["decisions"]}
    assert answer["policy"] == {"name": "engoo-privacy-policy", "version": 1}


@pytest.mark.parametrize(
    ("flag", "name", "what"),
    [("--caller", "nobody", "caller"), ("--purpose", "nothing", "purpose"),
     ("--category", "cvv", "category")],
)  # fmt: skip
def test_explain_refuses_unknown_names_in_one_line(
    pdv: Pdv, flag: str, name: str, what: str
) -> None:
    argv = {"--caller": "payment", "--purpose": "payment", "--category": "name"} | {flag: name}
    code, out, err = pdv("policy", "explain", *[x for kv in argv.items() for x in kv])
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"pdv policy explain: unknown {what} '{name}' (the policy's: ")


def test_explain_reads_the_file_it_is_given(pdv: Pdv, tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        default_policy_text().replace(
            'purposes = ["product_shipping", "marketplace_shipping_provision"]',
            'purposes = ["product_shipping", "marketplace_shipping_provision", "payment"]',
        ),
        encoding="utf-8",
    )
    argv = ["policy", "explain", "--caller", "shipping", "--purpose", "payment"]
    code, out, _err = pdv(*argv, "--category", "card_number", "--policy", str(path))
    assert code == 0
    assert out.startswith("GRANTED (full view)")
    path.write_text("[policy\n", encoding="utf-8")
    code, out, err = pdv(*argv, "--category", "card_number", "--policy", str(path))
    assert code == 2
    assert out == ""
    assert err.startswith("pdv policy explain: policy file is not valid TOML")


def test_matrix_as_a_table(pdv: Pdv) -> None:
    code, out, _err = pdv("policy", "matrix", "--view")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "policy engoo-privacy-policy v1: what each caller may read, and for what"
    assert lines[1].split() == ["caller", "purpose", "category", "view", "conditions"]
    assert any(ln.split()[:4] == ["support", "customer_support", "email", "masked"] for ln in lines)
    assert any(
        ln.split()[:4] == ["legal", "fraud_prevention", "card_number", "full"]
        and ln.endswith("stopped accounts too; may state a legal basis")
        for ln in lines
    )
    assert lines[-1] == "callers that read no category: ops, security"
    assert len(lines) == len(matrix(POLICY)) + 3
    _code, plain, _err = pdv("policy", "matrix")
    assert plain.splitlines()[1].split() == ["caller", "purpose", "category", "conditions"]


def test_matrix_as_csv(pdv: Pdv) -> None:
    code, out, _err = pdv("policy", "matrix", "--format", "csv", "--view")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == len(matrix(POLICY))
    assert list(rows[0]) == [
        "caller",
        "purpose",
        "category",
        "view",
        "consent_required",
        "allowed_when_stopped",
        "legal_basis",
    ]
    third = [r for r in rows if r["purpose"] == "third_party_provision"]
    assert third
    assert all(r["consent_required"] == "true" for r in third)
    assert {r["caller"] for r in third} == {"legal"}
    _code, plain, _err = pdv("policy", "matrix", "--format", "csv")
    assert "view" not in plain.splitlines()[0].split(",")

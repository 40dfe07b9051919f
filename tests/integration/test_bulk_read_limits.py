"""Limits on bulk reads through real servers (issue #12 §2): the item quota refused whole with
RetryInfo and QuotaFailure and never a token, audited; the request rate per caller, audited;
and two servers on one PostgreSQL database granting exactly the limit to concurrent callers.
Bounded loops and counts, no timed assertion."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pdvault.v1 import token_service_pb2, token_service_pb2_grpc

from pdvault_client import Client, Field, QuotaExceededError
from tests.conftest import RunningServer, running
from tests.samples import jpeg, noisy_image
from vault.app import App, build_app
from vault.config import Settings
from vault.domain.policy_file import default_policy_text
from vault.domain.quotas import window_start
from vault.domain.types import Action, CallerName, Outcome, Purpose

PAN = "4111111111111111"
UNKNOWN = "tok_" + "a" * 26  # well formed, never issued


def _policy(tmp_path: Path, items: int, window: str = "1h") -> Path:
    text = default_policy_text()
    quota = 'payment = { items = 1000000, window = "1h" }'
    assert quota in text
    text = text.replace(quota, f'payment = {{ items = {items}, window = "{window}" }}')
    # Support: two calls, then one every 100 s (the client's deadline is far shorter).
    support = text.index("[callers.support]")
    rate = "rate = { per_second = 50, burst = 100 }\n"
    at = text.index(rate, support)
    text = text[:at] + "rate = { per_second = 0.01, burst = 2 }\n" + text[at + len(rate) :]
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def limited(tmp_path: Path, database_url_sqlite: str) -> Iterator[RunningServer]:
    settings = Settings(
        addr="127.0.0.1:0",
        data_dir=tmp_path / "data",
        database_url=database_url_sqlite,
        max_workers=4,
        policy_file=_policy(tmp_path, items=5, window="31d"),  # no window turns mid-test
        retention_sweep_interval=0,
    )
    app = build_app(settings)
    with running(app, close=True) as srv:
        yield srv


def _card(srv: RunningServer) -> str:
    with srv.client("kyc") as kyc:
        [made] = kyc.tokenize("user-1", [Field("card_number", PAN)])
    return made.token


def test_over_the_item_quota_the_call_fails_whole_with_rich_details_and_no_token(
    limited: RunningServer,
) -> None:
    card = _card(limited)
    with limited.client("payment") as payment:
        answers = payment.detokenize([card, card, UNKNOWN, card], "payment")
        assert [a.error is None for a in answers] == [True, True, False, True]
        with pytest.raises(QuotaExceededError) as caught:
            payment.detokenize([card, UNKNOWN], "payment")  # 4 + 2 > 5: refused whole
    error = caught.value
    assert error.reason == "QUOTA_EXCEEDED"
    assert (error.caller, error.purpose, error.limit) == ("payment", "payment", 5)
    assert error.retry_after is not None
    assert 0 < error.retry_after <= 31 * 86400

    # On the wire: RESOURCE_EXHAUSTED, RetryInfo and QuotaFailure, and no token anywhere.
    key = limited.credentials()["payment"]
    with limited.channel() as channel:
        stub = token_service_pb2_grpc.TokenServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raw:
            stub.Detokenize(
                token_service_pb2.DetokenizeRequest(tokens=[card, UNKNOWN], purpose="payment"),
                metadata=(("authorization", f"Bearer {key}"),),
                timeout=10,
            )
    call: grpc.Call = raw.value  # type: ignore[assignment]
    assert call.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(call)
    assert status is not None
    retry, quota = error_details_pb2.RetryInfo(), error_details_pb2.QuotaFailure()
    assert any(d.Unpack(retry) for d in status.details)
    assert any(d.Unpack(quota) for d in status.details)
    assert retry.retry_delay.ToMilliseconds() > 0
    assert quota.violations[0].subject == "caller:payment/purpose:payment"
    assert quota.violations[0].quota_value == 5
    wire = status.SerializeToString() + (call.details() or "").encode()
    for secret in (card, UNKNOWN, card[-12:], PAN):
        assert secret.encode() not in wire

    # Audited as refusals, naming the rule; the count holds only the granted request's items.
    refused = [
        e
        for e in limited.app.stores.audit.entries(0, 1000)
        if e.event.rule == "caller:payment:quotas:payment"
    ]
    assert len(refused) == 4  # two calls of two tokens
    assert {e.event.outcome for e in refused} == {Outcome.REFUSED}
    # As every refused detokenize: each item asked for is in the log (operators', not the caller's).
    assert [e.event.token for e in refused] == [card, UNKNOWN] * 2
    start = window_start(refused[0].event.occurred_at, 31 * 86400)
    assert (
        limited.app.stores.quotas.used_items(CallerName("payment"), Purpose("payment"), start) == 4
    )


def test_over_its_request_rate_a_caller_is_refused_and_audited(limited: RunningServer) -> None:
    card = _card(limited)
    with limited.client("support") as support:
        for _ in range(2):  # the burst
            support.detokenize([card], "customer_support")
        with pytest.raises(QuotaExceededError) as caught:
            support.detokenize([card], "customer_support")
    error = caught.value
    assert error.reason == "RATE_LIMITED"
    assert (error.caller, error.purpose, error.limit) == ("support", None, 2)
    assert error.retry_after is not None
    assert error.retry_after > 10  # longer than the client's deadline: not waited for
    [entry] = [
        e.event for e in limited.app.stores.audit.entries(0, 1000) if e.event.action is Action.CALL
    ]
    assert (entry.caller, entry.outcome, entry.rule) == (
        "support",
        Outcome.REFUSED,
        "caller:support:rate",
    )
    assert entry.detail is not None
    assert "/pdvault.v1.TokenService/Detokenize" in entry.detail


@pytest.mark.postgres
def test_two_servers_on_one_database_grant_exactly_the_limit(
    tmp_path: Path, database_url_postgresql: str
) -> None:
    """2 servers x 3 callers x 10 calls of 2 items against a quota of 31: exactly 15 calls
    (30 items) granted in total, whichever server each went to."""
    settings = Settings(
        addr="127.0.0.1:0",
        data_dir=tmp_path / "data",
        database_url=database_url_postgresql,
        max_workers=4,
        # The longest window: a window that turns mid-test would start the count afresh.
        policy_file=_policy(tmp_path, items=31, window="31d"),
        retention_sweep_interval=0,
    )
    first = build_app(settings)
    second: App | None = None
    try:
        second = build_app(replace(settings), primary=False)  # the other replica
        with running(first) as a, running(second) as b:
            card = _card(a)
            keys = a.credentials()
            granted: list[int] = []
            refused: list[int] = []
            lock = threading.Lock()
            go = threading.Barrier(6)

            def caller(srv: RunningServer) -> None:
                with Client(srv.addr, keys["payment"], timeout=30) as client:
                    go.wait()
                    for _ in range(10):
                        try:
                            client.detokenize([card, UNKNOWN], "payment")
                            outcome = granted
                        except QuotaExceededError:
                            outcome = refused
                        with lock:
                            outcome.append(1)

            threads = [threading.Thread(target=caller, args=(srv,)) for srv in (a, b, a, b, a, b)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(granted) == 15
            assert len(refused) == 45
            rows = first.stores.quotas
            at = first.stores.audit.entries(0, 1)[0].event.occurred_at
            used = rows.used_items(
                CallerName("payment"), Purpose("payment"), window_start(at, 31 * 86400)
            )
            assert used == 30
    finally:
        if second is not None:
            second.close()
        first.close()


def test_a_document_download_for_a_purpose_is_one_item_of_the_quota(
    tmp_path: Path, database_url_sqlite: str
) -> None:
    text = default_policy_text()
    quota = 'identity_verification = { items = 50000, window = "1h" }'
    assert quota in text
    policy = tmp_path / "policy.toml"
    policy.write_text(
        text.replace(quota, 'identity_verification = { items = 1, window = "31d" }'), "utf-8"
    )
    settings = Settings(
        addr="127.0.0.1:0",
        data_dir=tmp_path / "data",
        database_url=database_url_sqlite,
        max_workers=4,
        policy_file=policy,
        retention_sweep_interval=0,
    )
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg(noisy_image()))
    with running(build_app(settings), close=True) as srv, srv.client("kyc") as kyc:
        doc = kyc.documents().upload("user-1", "passport", photo)
        kyc.documents().download(doc.id, "identity_verification", tmp_path / "one.jpg")
        with pytest.raises(QuotaExceededError) as caught:
            kyc.documents().download(doc.id, "identity_verification", tmp_path / "two.jpg")
        assert (caught.value.caller, caught.value.purpose, caught.value.limit) == (
            "kyc",
            "identity_verification",
            1,
        )
        assert doc.id not in caught.value.message
        assert not (tmp_path / "two.jpg").exists()
        refused = [
            e.event
            for e in srv.app.stores.audit.entries(0, 1000)
            if e.event.rule == "caller:kyc:quotas:identity_verification"
        ]
        assert [(e.action, e.outcome) for e in refused] == [(Action.DOCUMENT_READ, Outcome.REFUSED)]

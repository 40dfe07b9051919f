"""Limits on bulk reads (issue #12 §2): the policy's `rate` and `quotas`, the token bucket on an
injected clock, the item quota before any key is unwrapped, the rich error, and the client's
handling of RetryInfo. No timed assertion: clocks are injected, sleeps recorded."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from pdvault_client import Client, QuotaExceededError, ResourceExhaustedError
from pdvault_client.errors import from_status
from vault import errors
from vault.crypto.aead import AesGcmCipher
from vault.domain.context import RequestContext
from vault.domain.policy_file import default_policy_text, parse_policy
from vault.domain.quotas import (
    ItemQuota,
    ItemQuotas,
    Rate,
    RateLimiter,
    TokenBucket,
    audit_rate_refusal,
    parse_window,
    window_start,
)
from vault.domain.requests import FieldInput
from vault.domain.secrets import Secret
from vault.domain.service import TokenService
from vault.domain.types import (
    Action,
    CallerName,
    Outcome,
    PlainValue,
    Purpose,
    SubjectId,
    TokenFormat,
    WrappedKey,
)
from vault.kms.local import LocalKeyFileProvider
from vault.storage.memory import MemoryState, memory_stores
from vault.transport.status import to_status_proto

PAYMENT = CallerName("payment")
PAY = Purpose("payment")
UNKNOWN = "tok_" + "a" * 26  # well formed, never issued
T0 = datetime(2026, 11, 29, 12, 0, 10, tzinfo=UTC)


# -- the policy file -------------------------------------------------------------------------------


def test_the_shipped_policy_limits_every_caller_and_every_reading_purpose() -> None:
    policy = parse_policy(default_policy_text())
    for caller in policy.callers.values():
        assert caller.rate is not None, caller.name
        assert set(caller.quotas) == set(caller.purposes), caller.name
    payment = policy.callers[PAYMENT]
    assert payment.rate == Rate(1000.0, 2000)
    assert payment.quotas[PAY] == ItemQuota(1_000_000, 3600, "1h")
    assert any(n.id == "bulk-read-limits" for n in policy.notes)


_SMALL = """
[purposes.payment]
text = "payment"
[purposes.product_shipping]
text = "product shipping"
[categories.name]
kind = "text"
purposes = ["payment", "product_shipping"]
[callers.shipping]
purposes = ["product_shipping"]
%s
"""


def test_a_rate_and_quotas_are_read_from_the_caller() -> None:
    shipping = parse_policy(
        _SMALL
        % (
            "rate = { per_second = 2.5, burst = 5 }\n"
            "[callers.shipping.quotas]\n"
            'product_shipping = { items = 7, window = "15m" }'
        )
    ).callers[CallerName("shipping")]
    assert shipping.rate == Rate(2.5, 5)
    assert dict(shipping.quotas) == {Purpose("product_shipping"): ItemQuota(7, 900, "15m")}
    # Without them: no limit; a burst defaults to a second's worth.
    bare = parse_policy(_SMALL % "rate = { per_second = 3 }").callers[CallerName("shipping")]
    assert bare.rate == Rate(3.0, 3)
    assert dict(bare.quotas) == {}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("rate = 50", "callers.shipping.rate: must be a table"),
        ("rate = { per_second = 0, burst = 1 }", "callers.shipping.rate.per_second: must be a"),
        ("rate = { per_second = 5, burst = 0 }", "callers.shipping.rate.burst: must be an integer"),
        ("rate = { per_second = 5, bursts = 9 }", "callers.shipping.rate: unknown settings bursts"),
        (
            'quotas = { payment = { items = 5, window = "1h" } }',
            "callers.shipping.quotas.payment: 'payment' is not one of the purposes",
        ),
        (
            'quotas = { product_shipping = { items = 0, window = "1h" } }',
            "callers.shipping.quotas.product_shipping.items: must be an integer from 1",
        ),
        (
            'quotas = { product_shipping = { items = 5, window = "1 hour" } }',
            "callers.shipping.quotas.product_shipping.window: must be a whole number and a unit",
        ),
        (
            'quotas = { product_shipping = { items = 5, window = "90d" } }',
            "callers.shipping.quotas.product_shipping.window: must be at most 31 days",
        ),
        (
            "quotas = { product_shipping = { items = 5 } }",
            "callers.shipping.quotas.product_shipping: needs items and window",
        ),
        (
            'quotas = { product_shipping = { items = 5, window = "1h", per = 1 } }',
            "callers.shipping.quotas.product_shipping: unknown settings per",
        ),
        ("quotas = 5", "callers.shipping.quotas: must be a table"),
    ],
)
def test_a_bad_limit_is_refused_naming_the_setting(lines: str, message: str) -> None:
    with pytest.raises(errors.ConfigurationError, match="policy file is invalid") as caught:
        parse_policy(_SMALL % lines)
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("15m", 900), ("1h", 3600), ("1d", 86400), ("31d", 2678400)]
)
def test_windows_parse(text: str, seconds: int) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["", "0h", "1", "h", "1.5h", "-1h", "1w", "32d", " 1h"])
def test_bad_windows_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"must be"):
        parse_window(text)


def test_windows_are_aligned_to_the_epoch() -> None:
    assert window_start(T0, 3600) == int(datetime(2026, 11, 29, 12, tzinfo=UTC).timestamp())
    assert window_start(T0, 60) == int(datetime(2026, 11, 29, 12, 0, tzinfo=UTC).timestamp())


# -- the token bucket ------------------------------------------------------------------------------


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(Rate(per_second=2.0, burst=3), now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [None, None, None]
    assert bucket.take(100.0) == pytest.approx(0.5)  # one token needs half a second
    assert bucket.take(100.25) == pytest.approx(0.25)
    assert bucket.take(100.5) is None
    assert bucket.take(100.5) == pytest.approx(0.5)
    # Idle for long: full again, never above the burst.
    assert [bucket.take(1000.0) for _ in range(4)][-1] == pytest.approx(0.5)


def test_a_clock_going_backwards_never_adds_tokens() -> None:
    bucket = TokenBucket(Rate(per_second=1.0, burst=1), now=50.0)
    assert bucket.take(50.0) is None
    assert bucket.take(40.0) is not None
    assert bucket.take(50.5) == pytest.approx(0.5)


def test_the_rate_limiter_refuses_with_the_callers_limit_and_the_wait() -> None:
    now = [10.0]
    limiter = RateLimiter({PAYMENT: Rate(1.0, 2)}, lambda: now[0])
    limiter.admit(PAYMENT)
    limiter.admit(PAYMENT)
    limiter.admit(CallerName("shipping"))  # no rate: never limited
    with pytest.raises(errors.QuotaExceeded) as caught:
        limiter.admit(PAYMENT)
    exc = caught.value
    assert exc.reason is errors.Reason.RATE_LIMITED
    assert exc.retry_after == pytest.approx(1.0)
    assert (exc.caller, exc.purpose, exc.limit, exc.rule) == (
        "payment",
        None,
        2,
        "caller:payment:rate",
    )
    now[0] = 11.0
    limiter.admit(PAYMENT)


def test_a_rate_refusal_is_audited_naming_caller_method_and_rule() -> None:
    state = MemoryState()
    stores = memory_stores(state)
    limiter = RateLimiter({PAYMENT: Rate(1.0, 1)}, lambda: 0.0)
    limiter.admit(PAYMENT)
    with pytest.raises(errors.QuotaExceeded) as caught:
        limiter.admit(PAYMENT)
    audit_rate_refusal(stores.audit, lambda: T0)(
        caught.value, "/pdvault.v1.TokenService/Detokenize"
    )
    [entry] = state.audit
    assert (entry.action, entry.outcome, entry.rule) == (
        Action.CALL,
        Outcome.REFUSED,
        "caller:payment:rate",
    )
    assert entry.detail is not None
    assert "Detokenize" in entry.detail
    assert entry.token is None


# -- the item quota --------------------------------------------------------------------------------


class _CountingKeys:
    """A key provider that counts unwraps: a refused request must unwrap nothing."""

    def __init__(self, inner: LocalKeyFileProvider) -> None:
        self.inner = inner
        self.name = inner.name
        self.unwraps = 0

    def wrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, Secret]]
    ) -> list[WrappedKey]:
        return self.inner.wrap(ctx, keys)

    def unwrap(
        self, ctx: RequestContext, keys: Sequence[tuple[SubjectId, WrappedKey]]
    ) -> list[Secret | None]:
        self.unwraps += 1
        return self.inner.unwrap(ctx, keys)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _tokens(
    tmp_path: Path, items: int
) -> tuple[TokenService, MemoryState, _CountingKeys, list[datetime]]:
    policy = parse_policy(
        default_policy_text().replace(
            'payment = { items = 1000000, window = "1h" }',
            f'payment = {{ items = {items}, window = "1h" }}',
        )
    )
    state = MemoryState()
    stores = memory_stores(state)
    keys = _CountingKeys(LocalKeyFileProvider(tmp_path / "kek.json"))
    now = [T0]
    quotas = ItemQuotas(
        {(c.name, p): q for c in policy.callers.values() for p, q in c.quotas.items()},
        stores.quotas,
        lambda: now[0],
    )
    service = TokenService(
        policy=policy,
        values=stores.values,
        subjects=stores.subjects,
        idempotency=stores.idempotency,
        audit=stores.audit,
        keys=keys,
        cipher=AesGcmCipher(),
        clock=lambda: now[0],
        quotas=quotas,
    )
    return service, state, keys, now


def _card(service: TokenService) -> str:
    [made] = service.tokenize(
        RequestContext(CallerName("kyc")),
        "user-1",
        [FieldInput("card_number", PlainValue.text("4111111111111111"), TokenFormat.CARD_NUMBER)],
    )
    return made.token


def test_every_item_asked_for_counts_found_or_not_granted_or_refused(tmp_path: Path) -> None:
    service, state, _keys, _now = _tokens(tmp_path, items=10)
    card = _card(service)
    ctx = RequestContext(PAYMENT)
    service.detokenize(ctx, [card, card, UNKNOWN], "payment")  # repeats count too
    start = window_start(T0, 3600)
    assert state.quota_usage[(PAYMENT, PAY, start)] == 3
    # Refused by the policy per item (shipping may not read cards) still counts, for shipping.
    service.detokenize(RequestContext(CallerName("shipping")), [card], "product_shipping")
    assert state.quota_usage[(CallerName("shipping"), Purpose("product_shipping"), start)] == 1


def test_over_the_quota_the_request_is_refused_whole_before_any_unwrap(tmp_path: Path) -> None:
    service, state, keys, now = _tokens(tmp_path, items=3)
    card = _card(service)
    ctx = RequestContext(PAYMENT)
    service.detokenize(ctx, [card, card], "payment")
    unwraps, audited = keys.unwraps, len(state.audit)
    with pytest.raises(errors.QuotaExceeded) as caught:
        service.detokenize(ctx, [card, UNKNOWN], "payment")  # 2 + 2 > 3
    assert keys.unwraps == unwraps  # no key unwrapped
    start = window_start(T0, 3600)
    assert state.quota_usage[(PAYMENT, PAY, start)] == 2  # nothing of the refused request
    exc = caught.value
    assert exc.reason is errors.Reason.QUOTA_EXCEEDED
    assert (exc.caller, exc.purpose, exc.limit) == ("payment", "payment", 3)
    assert exc.retry_after == pytest.approx(3600 - 10)  # until the window ends
    assert card not in exc.message
    refused = state.audit[audited:]
    assert [(e.outcome, e.rule) for e in refused] == [
        (Outcome.REFUSED, "caller:payment:quotas:payment")
    ] * 2
    # As every refused detokenize: the items asked for are logged (a card-shaped one masked).
    assert [e.token for e in refused] == ["*" * 12 + card[-4:], UNKNOWN]
    # One item still fits; the next window starts afresh.
    service.detokenize(ctx, [card], "payment")
    now[0] = T0 + timedelta(hours=1)
    service.detokenize(ctx, [card, card, card], "payment")


def test_a_request_larger_than_the_whole_quota_is_refused_without_counting(tmp_path: Path) -> None:
    service, state, _keys, _now = _tokens(tmp_path, items=2)
    with pytest.raises(errors.QuotaExceeded, match="more than its whole quota"):
        service.detokenize(RequestContext(PAYMENT), [UNKNOWN] * 3, "payment")
    assert state.quota_usage == {}


# -- the status and the client ---------------------------------------------------------------------


def _over_quota() -> errors.QuotaExceeded:
    return errors.QuotaExceeded(
        "over",
        reason=errors.Reason.QUOTA_EXCEEDED,
        retry_after=12.5,
        caller="payment",
        purpose="payment",
        limit=10,
        quota_id="items",
        description="10 items per 1h",
    )


def test_the_status_carries_retry_info_and_a_quota_failure() -> None:
    status = to_status_proto(_over_quota())
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    quota = error_details_pb2.QuotaFailure()
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(quota) for d in status.details)
    assert any(d.Unpack(retry) for d in status.details)
    assert retry.retry_delay.ToMilliseconds() == 12500
    [violation] = quota.violations
    assert violation.subject == "caller:payment/purpose:payment"
    assert dict(violation.quota_dimensions) == {"caller": "payment", "purpose": "payment"}
    assert (violation.quota_id, violation.quota_value) == ("items", 10)
    error = from_status(status)
    assert isinstance(error, QuotaExceededError)
    assert (error.caller, error.purpose, error.limit, error.retry_after) == (
        "payment",
        "payment",
        10,
        12.5,
    )


class _Refusing:
    """A stub refusing with `statuses` (one per call), then answering; records requests."""

    def __init__(self, *statuses: status_pb2.Status) -> None:
        self.statuses = list(statuses)
        self.requests: list[Any] = []

    def __call__(self, request: Any, timeout: float, metadata: Any) -> str:
        self.requests.append(request)
        if self.statuses:
            raise _Rich(self.statuses.pop(0))
        return "answer"


class _Rich(grpc.RpcError):
    def __init__(self, status: status_pb2.Status) -> None:
        self.status = status

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED

    def details(self) -> str:
        return self.status.message

    def trailing_metadata(self) -> Any:
        return (("grpc-status-details-bin", self.status.SerializeToString()),)


def _rate_limited(wait: float) -> status_pb2.Status:
    limiter = RateLimiter({PAYMENT: Rate(1 / wait, 1)}, lambda: 0.0)
    limiter.admit(PAYMENT)
    try:
        limiter.admit(PAYMENT)
    except errors.QuotaExceeded as exc:
        return to_status_proto(exc)
    raise AssertionError("not refused")


def test_the_client_waits_out_a_rate_refusal_that_fits_and_sends_the_same_request() -> None:
    pauses: list[float] = []
    stub = _Refusing(_rate_limited(0.5))
    with Client("127.0.0.1:1", "pdv_x", timeout=5.0, sleep=pauses.append) as client:
        assert client._call(stub, "req-1") == "answer"
    assert stub.requests == ["req-1", "req-1"]  # the same request: the same request id
    assert len(pauses) == 1
    assert pauses[0] >= 0.5


def test_the_client_raises_a_rate_refusal_that_does_not_fit_in_its_deadline() -> None:
    pauses: list[float] = []
    stub = _Refusing(_rate_limited(60.0))
    with (
        Client("127.0.0.1:1", "pdv_x", timeout=2.0, sleep=pauses.append) as client,
        pytest.raises(QuotaExceededError) as caught,
    ):
        client._call(stub, "req")
    assert pauses == []
    assert len(stub.requests) == 1
    error = caught.value
    assert error.reason == "RATE_LIMITED"
    assert error.retry_after == pytest.approx(60.0)
    assert (error.caller, error.purpose, error.limit) == ("payment", None, 1)


def test_the_client_never_retries_an_item_quota() -> None:
    pauses: list[float] = []
    stub = _Refusing(to_status_proto(_over_quota()))
    with (
        Client("127.0.0.1:1", "pdv_x", timeout=60.0, sleep=pauses.append) as client,
        pytest.raises(QuotaExceededError) as caught,
    ):
        client._call(stub, "req")
    assert pauses == []
    assert len(stub.requests) == 1
    assert isinstance(caught.value, ResourceExhaustedError)
    assert caught.value.reason == "QUOTA_EXCEEDED"


def test_the_bench_policy_keeps_the_checks_but_never_refuses_its_caller() -> None:
    from bench.procs import unrefused_policy
    from bench.workloads import CALLER

    shipped = parse_policy(default_policy_text())
    bench = parse_policy(unrefused_policy(default_policy_text(), CALLER))
    mine = bench.callers[CallerName(CALLER)]
    assert mine.rate == Rate(1_000_000.0, 1_000_000)
    assert set(mine.quotas) == set(shipped.callers[CallerName(CALLER)].quotas)
    assert {q.items for q in mine.quotas.values()} == {1_000_000_000}
    others = [c for c in bench.callers if c != CALLER]
    assert all(bench.callers[c] == shipped.callers[c] for c in others)


def test_the_asyncio_client_waits_out_a_rate_refusal_too() -> None:
    import asyncio

    from pdvault_client import aio

    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    requests: list[Any] = []
    statuses = [_rate_limited(0.5)]

    async def stub(request: Any, timeout: float, metadata: Any) -> str:
        requests.append(request)
        if statuses:
            raise _Rich(statuses.pop(0))
        return "answer"

    async def work() -> Any:
        async with aio.Client("127.0.0.1:1", "pdv_x", timeout=5.0, sleep=sleep) as client:
            return await client._call(stub, "req-1")

    assert asyncio.run(work()) == "answer"
    assert requests == ["req-1", "req-1"]
    assert len(pauses) == 1
    assert pauses[0] >= 0.5


def test_policy_check_warns_of_a_readable_purpose_without_a_quota() -> None:
    limited = parse_policy(
        _SMALL % '[callers.shipping.quotas]\nproduct_shipping = { items = 7, window = "1h" }'
    )
    assert not [f for f in limited.check() if "item quota" in f]
    unlimited = parse_policy(_SMALL % "")
    assert [f for f in unlimited.check() if "item quota" in f] == [
        "warning: caller 'shipping' may read values for 'product_shipping' without an item "
        "quota (callers.shipping.quotas): its reads for it are not limited"
    ]


def test_a_database_failure_in_the_count_answers_unavailable_and_reads_nothing(
    tmp_path: Path,
) -> None:
    service, state, keys, _now = _tokens(tmp_path, items=10)
    card = _card(service)

    class Down:
        def take_items(self, *_args: object) -> int | None:
            raise errors.StorageUnavailable("the database is unavailable; retry later")

    quotas = service.detokenization._quotas
    assert quotas is not None
    quotas._store = Down()  # type: ignore[assignment]
    unwraps = keys.unwraps
    with pytest.raises(errors.StorageUnavailable):
        service.detokenize(RequestContext(PAYMENT), [card], "payment")
    assert keys.unwraps == unwraps
    assert state.quota_usage == {}

"""The status table, the error safety net, and the client's retries and error decoding."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from pdvault_client import (
    Client,
    FailedPreconditionError,
    InvalidArgumentError,
    PdvaultError,
    RetryPolicy,
    UnavailableError,
)
from pdvault_client.errors import from_status
from tests.conftest import RunningServer
from vault import errors
from vault.transport.status import STATUS_TABLE, internal_status, status_code_of, to_status_proto


def _all_error_classes() -> list[type[errors.PdvaultError]]:
    found: list[type[errors.PdvaultError]] = []
    stack: list[type[errors.PdvaultError]] = [errors.PdvaultError]
    while stack:
        cls = stack.pop()
        found.extend(cls.__subclasses__())
        stack.extend(cls.__subclasses__())
    return found


def test_every_error_class_has_a_status() -> None:
    for cls in _all_error_classes():
        assert cls.code in STATUS_TABLE, cls
        assert cls.default_reason.code is cls.code, cls
    assert status_code_of(errors.PdvaultError("x")) == grpc.StatusCode.INTERNAL


def test_each_reason_has_one_status_code_and_an_error_refuses_another() -> None:
    """Issue #10 §1: the reasons are one enum, each with one code; an error of another code
    cannot carry it, so the status and the ErrorInfo reason never disagree."""
    for reason in errors.Reason:
        assert reason.code in STATUS_TABLE
        assert reason.advice
    assert errors.Reason.SUBJECT_STOPPED.code is errors.Code.FAILED_PRECONDITION
    assert errors.Reason.SUBJECT_DELETED.code is errors.Code.NOT_FOUND
    with pytest.raises(ValueError, match="FAILED_PRECONDITION"):
        errors.PermissionDenied("x", rule="r", reason=errors.Reason.SUBJECT_STOPPED)
    status = to_status_proto(errors.NotFound("gone", reason=errors.Reason.SUBJECT_DELETED))
    assert status.code == grpc.StatusCode.NOT_FOUND.value[0]


def test_rich_details_round_trip_through_the_client_decoder() -> None:
    exc = errors.InvalidArgument(
        [
            errors.FieldViolation(
                "fields[0].value", "card_number.luhn", "fails the Luhn check digit"
            ),
            errors.FieldViolation("subject", "subject.syntax", "bad"),
        ]
    )
    decoded = from_status(to_status_proto(exc))
    assert isinstance(decoded, InvalidArgumentError)
    assert decoded.reason == "INVALID_ARGUMENT"
    assert [v.rule for v in decoded.violations] == ["card_number.luhn", "subject.syntax"]
    assert decoded.message == "fields[0].value: fails the Luhn check digit (and 1 more)"

    unavailable = from_status(to_status_proto(errors.StorageUnavailable("db down")))
    assert isinstance(unavailable, UnavailableError)
    assert unavailable.retry_delay == pytest.approx(0.2)

    denied = from_status(to_status_proto(errors.PermissionDenied("no", rule="caller:x:purposes")))
    assert denied.metadata == {"rule": "caller:x:purposes"}


def test_internal_errors_hide_their_message() -> None:
    try:
        raise RuntimeError("secret 4111111111111111")
    except RuntimeError as exc:
        status = internal_status(exc)
    assert status.code == code_pb2.INTERNAL
    assert "4111" not in status.message
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.metadata["error_id"] in status.message


def test_an_unexpected_server_failure_is_internal_not_unknown(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pan = "4111" + "111111111111"  # built at run time: the log shows code lines, not values

    def boom(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError(f"{pan} leaked?")

    monkeypatch.setattr(server.app.tokens, "detokenize", boom)
    with server.client("payment") as c, pytest.raises(PdvaultError) as err:
        c.detokenize(["tok_" + "a" * 26], "payment")
    assert err.value.code == grpc.StatusCode.INTERNAL
    assert "4111" not in str(err.value)
    assert "4111" not in caplog.text
    assert "RuntimeError" in caplog.text


def test_storage_outage_is_unavailable(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*_args: Any, **_kwargs: Any) -> None:
        raise errors.StorageUnavailable("the database is unavailable; retry later")

    monkeypatch.setattr(server.app.stores.values, "lookup", down)
    with server.client("payment", timeout=2.0) as c, pytest.raises(UnavailableError):
        c.detokenize(["tok_" + "a" * 26], "payment")


class _FlakyStub:
    """Fails with the given codes, then answers."""

    def __init__(self, codes: list[grpc.StatusCode]) -> None:
        self.codes = codes
        self.calls: list[Any] = []

    def __call__(self, request: Any, timeout: float, metadata: Any) -> str:
        self.calls.append(request)
        if self.codes:
            raise _RpcError(self.codes.pop(0))
        return "answer"


class _RpcError(grpc.RpcError):
    """What a failed call raises: an RpcError that also answers like a grpc.Call."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "flaky"

    def trailing_metadata(self) -> tuple[()]:
        return ()


def _client(**kw: Any) -> Client:
    return Client("127.0.0.1:1", "pdv_x", sleep=lambda _s: None, **kw)


def test_client_retries_unavailable_then_succeeds() -> None:
    stub = _FlakyStub([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE])
    with _client() as c:
        assert c._call(stub, "req") == "answer"
    assert stub.calls == ["req", "req", "req"]  # the same request (same request id) each time


def test_client_gives_up_after_its_attempts() -> None:
    stub = _FlakyStub([grpc.StatusCode.UNAVAILABLE] * 10)
    with _client(retry=RetryPolicy(attempts=3)) as c, pytest.raises(UnavailableError):
        c._call(stub, "req")
    assert len(stub.calls) == 3


def test_client_does_not_retry_other_errors() -> None:
    stub = _FlakyStub([grpc.StatusCode.FAILED_PRECONDITION])
    with _client() as c, pytest.raises(FailedPreconditionError):
        c._call(stub, "req")
    assert len(stub.calls) == 1


def test_tokenize_retries_reuse_one_request_id(server: RunningServer) -> None:
    """A retried Tokenize returns the first tokens: the id is generated once per call."""
    from pdvault_client import Field

    seen: list[str] = []
    lock = threading.Lock()
    with server.client("kyc") as c:
        real = c._stub.Tokenize

        def flaky(request: Any, timeout: float, metadata: Any) -> Any:
            with lock:
                seen.append(request.request_id)
                first = len(seen) == 1
            answer = real(request, timeout=timeout, metadata=metadata)
            if first:  # the server stored it, but the answer was "lost"
                raise _RpcError(grpc.StatusCode.UNAVAILABLE)
            return answer

        c._stub.Tokenize = flaky  # type: ignore[assignment]
        c._sleep = lambda _s: None
        [tok] = c.tokenize("user-1", [Field("name", "Ann Lee")])
    assert len(seen) == 2
    assert seen[0] == seen[1]
    from sqlalchemy import func, select

    from vault.storage.tables import token_values

    with server.app.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(token_values)).scalar_one() == 1
    assert tok.token.startswith("tok_")


def test_reprs_never_show_values() -> None:
    from pdvault_client import Detokenized, Field

    assert "4111" not in repr(Field("card_number", "4111111111111111"))
    assert "4111" not in repr(Detokenized("tok_x", "card_number", value="4111111111111111"))


# -- limits, quotas and the server's retry delay ---------------------------------------------------


def _status_error(code: grpc.StatusCode, message: str, *details: Any) -> _RpcError:
    """An RpcError carrying a google.rpc.Status with `details`, as the server sends them."""
    from google.rpc import status_pb2

    status = status_pb2.Status(code=code.value[0], message=message)
    for d in details:
        status.details.add().Pack(d)

    class _Rich(_RpcError):
        def details(self) -> str:
            return message

        def trailing_metadata(self) -> Any:
            return (("grpc-status-details-bin", status.SerializeToString()),)

    return _Rich(code)


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromMilliseconds(int(seconds * 1000))
    return info


def test_resource_exhausted_has_its_own_class_with_quota_and_retry_details() -> None:
    from pdvault_client import QuotaViolation, ResourceExhaustedError
    from pdvault_client.errors import from_rpc_error

    quota = error_details_pb2.QuotaFailure()
    quota.violations.add(subject="caller:kyc", description="at most 100 calls a second")
    err = from_rpc_error(
        _status_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", quota, _retry_info(1.5))
    )
    assert isinstance(err, ResourceExhaustedError)
    assert err.quota_violations == (QuotaViolation("caller:kyc", "at most 100 calls a second"),)
    assert err.retry_delay == pytest.approx(1.5)
    # Without rich details (the local "message larger than max" failure): still the class.
    bare = from_rpc_error(_RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED))
    assert isinstance(bare, ResourceExhaustedError)


def test_resource_exhausted_is_not_retried() -> None:
    from pdvault_client import ResourceExhaustedError

    stub = _FlakyStub([grpc.StatusCode.RESOURCE_EXHAUSTED])
    with _client() as c, pytest.raises(ResourceExhaustedError):
        c._call(stub, "req")
    assert len(stub.calls) == 1


def test_client_waits_as_long_as_the_server_asks_before_retrying() -> None:
    pauses: list[float] = []
    errors_left = [
        _status_error(grpc.StatusCode.UNAVAILABLE, "busy", _retry_info(0.75)),
    ]

    def stub(request: Any, timeout: float, metadata: Any) -> str:
        if errors_left:
            raise errors_left.pop()
        return "answer"

    c = Client("127.0.0.1:1", "pdv_x", timeout=5.0, sleep=pauses.append)
    with c:
        assert c._call(stub, "req") == "answer"
    assert len(pauses) == 1
    assert pauses[0] >= 0.75  # at least RetryInfo's delay, whatever the jitter drew


def test_client_does_not_wait_past_its_deadline_for_a_retry_delay() -> None:
    pauses: list[float] = []

    def stub(request: Any, timeout: float, metadata: Any) -> str:
        raise _status_error(grpc.StatusCode.UNAVAILABLE, "busy", _retry_info(60))

    with (
        Client("127.0.0.1:1", "pdv_x", timeout=2.0, sleep=pauses.append) as c,
        pytest.raises(UnavailableError),
    ):
        c._call(stub, "req")
    assert pauses == []


def test_the_client_receives_what_the_server_may_send(server: RunningServer) -> None:
    """Five 1 MiB documents in one answer: over gRPC's 4 MiB default, within the 8 MiB limit."""
    from pdvault_client import MAX_MESSAGE_BYTES, Field, ResourceExhaustedError

    assert MAX_MESSAGE_BYTES == 8 * 1024 * 1024
    doc = bytes(range(256)) * 4096  # 1 MiB
    with server.client("kyc", timeout=60) as kyc:
        first = kyc.tokenize("user-1", [Field("attachment", doc)] * 3)
        second = kyc.tokenize("user-1", [Field("attachment", doc)] * 2)
        got = kyc.detokenize([t.token for t in first + second], "identity_verification")
    assert [g.value for g in got] == [doc] * 5

    # A channel with a smaller limit: RESOURCE_EXHAUSTED, raised as its own class.
    small = grpc.insecure_channel(server.addr, options=[("grpc.max_receive_message_length", 1024)])
    key = server.credentials()["kyc"]
    with (
        Client(server.addr, key, channel=small) as c,
        pytest.raises(ResourceExhaustedError) as err,
    ):
        c.detokenize([first[0].token], "identity_verification")
    assert "larger than max" in err.value.message


@pytest.mark.parametrize(
    "addr", ["127.0.0.1:50051", "localhost:1", "[::1]:65535", "db.example:443"]
)
def test_addresses_the_client_accepts(addr: str) -> None:
    from pdvault_client import check_address

    assert check_address(addr) == addr


@pytest.mark.parametrize(
    "addr",
    ["127.0.0.1", "http://127.0.0.1:50051", "h:0", "h:65536", ":50051", "::1:50051", "h:port", ""],
)
def test_addresses_the_client_refuses(addr: str) -> None:
    from pdvault_client import check_address

    with pytest.raises(ValueError, match="expected HOST:PORT"):
        check_address(addr)

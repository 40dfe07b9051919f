"""The whole path over a real gRPC port, on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from pdvault.v1 import common_pb2, token_service_pb2, token_service_pb2_grpc
from sqlalchemy import select

from pdvault_client import (
    Field,
    InvalidArgumentError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from tests.conftest import RunningServer
from vault.storage.tables import audit_events, data_keys, token_values

PAN = "4111111111111111"


def as_call(err: grpc.RpcError) -> grpc.Call:
    """Errors raised by a call are also grpc.Call objects (the type stubs cannot say so)."""
    return cast(grpc.Call, err)


def test_tokenize_then_detokenize_for_a_permitted_purpose(server: RunningServer) -> None:
    with server.client("kyc") as kyc, server.client("payment") as payment:
        [tok] = kyc.tokenize("user-42", [Field("card_number", PAN)])
        assert tok.token.startswith("tok_")
        assert tok.category == "card_number"
        [got] = payment.detokenize([tok.token], "payment", justification="order-1234")
        # A known subject: its data key is reused and its encryption count goes up.
        [tok2] = kyc.tokenize("user-42", [Field("card_expiry", "12/2030")])
        [got2] = payment.detokenize([tok2.token], "payment")
    assert got.ok
    assert got.value == PAN
    assert got.category == "card_number"
    assert got2.value == "12/30"
    with server.app.engine.connect() as conn:
        [key_row] = conn.execute(select(data_keys)).mappings().all()
    assert key_row["encryptions"] == 2


def test_refusal_for_a_purpose_the_category_does_not_permit(server: RunningServer) -> None:
    with server.client("kyc") as kyc, server.client("shipping") as shipping:
        [tok] = kyc.tokenize("user-42", [Field("card_number", PAN)])
        [got] = shipping.detokenize([tok.token], "product_shipping")
    assert isinstance(got.error, PermissionDeniedError)
    assert got.error.reason == "TOKEN_REFUSED"
    assert "product_shipping" in got.error.message
    assert got.value is None


def test_unknown_and_forbidden_tokens_look_the_same(server: RunningServer) -> None:
    with server.client("kyc") as kyc, server.client("shipping") as shipping:
        [tok] = kyc.tokenize("user-42", [Field("card_number", PAN)])
        unknown = "tok_" + "a" * 26
        forbidden, missing = shipping.detokenize([tok.token, unknown], "product_shipping")
    assert forbidden.error is not None
    assert missing.error is not None
    assert (forbidden.error.code, forbidden.error.reason, forbidden.error.message) == (
        missing.error.code,
        missing.error.reason,
        missing.error.message,
    )
    assert forbidden.error.metadata == missing.error.metadata


def test_a_caller_may_not_claim_a_purpose_outside_its_list(server: RunningServer) -> None:
    with server.client("kyc") as kyc, server.client("shipping") as shipping:
        [tok] = kyc.tokenize("user-42", [Field("card_number", PAN)])
        with pytest.raises(PermissionDeniedError) as err:
            shipping.detokenize([tok.token], "payment")
    assert "may not claim purpose 'payment'" in err.value.message
    assert err.value.metadata["rule"] == "caller:shipping:purposes"


def test_support_sees_masked_values(server: RunningServer) -> None:
    with server.client("kyc") as kyc, server.client("support") as support:
        tokens = kyc.tokenize(
            "user-7",
            [
                Field("card_number", PAN),
                Field("email", "Jane.Doe@Example.com"),
                Field("name", "Jane Doe"),
            ],
        )
        results = support.detokenize([t.token for t in tokens], "customer_support")
    assert [r.masked for r in results] == ["************1111", "J***@example.com", "J. D."]
    assert all(r.value is None for r in results)


def test_card_number_token_is_format_preserving(server: RunningServer) -> None:
    with server.client("kyc") as kyc, server.client("payment") as payment:
        [tok] = kyc.tokenize("user-42", [Field("card_number", PAN, card_token=True)])
        assert len(tok.token) == 16
        assert tok.token.isdigit()
        assert tok.token.endswith("1111")
        assert tok.token != PAN
        [got] = payment.detokenize([tok.token], "payment")
    assert got.value == PAN


def test_batch_results_are_per_item_and_in_order(server: RunningServer) -> None:
    with server.client("kyc") as kyc, server.client("shipping") as shipping:
        tokens = kyc.tokenize(
            "user-9",
            [Field("name", "Ann Lee"), Field("card_number", PAN), Field("address", "1 Main St")],
        )
        results = shipping.detokenize([t.token for t in tokens], "product_shipping")
    assert [r.ok for r in results] == [True, False, True]
    assert [r.value for r in results] == ["Ann Lee", None, "1 Main St"]


def test_binary_document_round_trip(server: RunningServer) -> None:
    doc = bytes(range(256)) * 100
    with server.client("kyc") as kyc:
        [tok] = kyc.tokenize("user-5", [Field("attachment", doc)])
        [got] = kyc.detokenize([tok.token], "identity_verification")
    assert got.value == doc


def test_retry_with_the_same_request_id_returns_the_first_tokens(server: RunningServer) -> None:
    rid = str(uuid.uuid4())
    with server.client("kyc") as kyc:
        first = kyc.tokenize("user-1", [Field("email", "a@example.com")], request_id=rid)
        again = kyc.tokenize("user-1", [Field("email", "a@example.com")], request_id=rid)
        assert first == again
        with pytest.raises(InvalidArgumentError) as err:
            kyc.tokenize("user-1", [Field("email", "b@example.com")], request_id=rid)
    assert err.value.violations[0].rule == "request_id.reused"
    with server.app.engine.connect() as conn:
        assert conn.execute(select(token_values)).all().__len__() == 1


def test_bad_input_is_invalid_argument_naming_field_and_rule(server: RunningServer) -> None:
    with server.client("kyc") as kyc, pytest.raises(InvalidArgumentError) as err:
        kyc.tokenize(
            "user 42!",
            [
                Field("card_number", "4111111111111112"),
                Field("card_expiry", "13/27"),
                Field("email", "not-an-email"),
                Field("cvv", "123"),
                Field("no_such_category", "x"),
            ],
        )
    rules = {(v.field, v.rule) for v in err.value.violations}
    assert rules == {
        ("subject", "subject.syntax"),
        ("fields[0].value", "card_number.luhn"),
        ("fields[1].value", "card_expiry.month"),
        ("fields[2].value", "email.syntax"),
        ("fields[3].category", "category.card_security_code"),
        ("fields[4].category", "category.unknown"),
    }
    text = str(err.value) + "".join(v.description for v in err.value.violations)
    for value in ("4111111111111112", "13/27", "not-an-email", "123"):
        assert value not in text


def test_bad_input_writes_nothing(server: RunningServer) -> None:
    with server.client("kyc") as kyc, pytest.raises(InvalidArgumentError):
        kyc.tokenize("user-3", [Field("name", "Ok Name"), Field("card_number", "123")])
    with server.app.engine.connect() as conn:
        assert conn.execute(select(token_values)).all() == []
        assert conn.execute(select(data_keys)).all() == []


@pytest.mark.parametrize(
    ("request_", "field", "rule"),
    [
        (token_service_pb2.DetokenizeRequest(purpose="payment"), "tokens", "tokens.required"),
        (
            token_service_pb2.DetokenizeRequest(tokens=["nope"], purpose="payment"),
            "tokens[0]",
            "token.syntax",
        ),
        (
            token_service_pb2.DetokenizeRequest(tokens=["tok_" + "a" * 26], purpose="spying"),
            "purpose",
            "purpose.unknown",
        ),
        (
            token_service_pb2.DetokenizeRequest(tokens=["tok_" + "a" * 26]),
            "purpose",
            "purpose.required",
        ),
        (
            token_service_pb2.DetokenizeRequest(
                tokens=["tok_" + "a" * 26], purpose="payment", justification="x" * 300
            ),
            "justification",
            "justification.printable",
        ),
        (
            token_service_pb2.DetokenizeRequest(
                tokens=["tok_" + "a" * 26] * 1001, purpose="payment"
            ),
            "tokens",
            "tokens.max_count",
        ),
    ],
)
def test_detokenize_validation(
    server: RunningServer, request_: token_service_pb2.DetokenizeRequest, field: str, rule: str
) -> None:
    stub = token_service_pb2_grpc.TokenServiceStub(server.channel())
    auth = (("authorization", f"Bearer {server.credentials()['payment']}"),)
    with pytest.raises(grpc.RpcError) as err:
        stub.Detokenize(request_, metadata=auth, timeout=10)
    call = as_call(err.value)
    assert call.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(call)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details)
    assert (bad.field_violations[0].field, bad.field_violations[0].reason) == (field, rule)


def test_tokenize_raw_proto_edge_cases(server: RunningServer) -> None:
    stub = token_service_pb2_grpc.TokenServiceStub(server.channel())
    auth = (("authorization", f"Bearer {server.credentials()['kyc']}"),)
    cases = [
        (token_service_pb2.TokenizeRequest(subject="u1"), "fields.required"),
        (
            token_service_pb2.TokenizeRequest(
                subject="u1", fields=[token_service_pb2.TokenizeField(category="name")]
            ),
            "value.required",
        ),
        (
            token_service_pb2.TokenizeRequest(
                subject="u1",
                fields=[
                    token_service_pb2.TokenizeField(
                        category="name", value=common_pb2.Value(binary=b"\x00\x01")
                    )
                ],
            ),
            "name.text_only",
        ),
        (
            token_service_pb2.TokenizeRequest(
                subject="u1",
                fields=[
                    token_service_pb2.TokenizeField(
                        category="name",
                        value=common_pb2.Value(text="Ann"),
                        token_format=token_service_pb2.TOKEN_FORMAT_CARD_NUMBER,
                    )
                ],
            ),
            "token_format.category",
        ),
        (
            token_service_pb2.TokenizeRequest(
                subject="u1",
                fields=[
                    token_service_pb2.TokenizeField(
                        category="name",
                        value=common_pb2.Value(text="Ann"),
                        token_format=cast(Any, 99),  # a newer client's enum value
                    )
                ],
            ),
            "token_format.unknown",
        ),
        (
            token_service_pb2.TokenizeRequest(
                subject="u1",
                request_id="not-a-uuid",
                fields=[
                    token_service_pb2.TokenizeField(
                        category="name", value=common_pb2.Value(text="A")
                    )
                ],
            ),
            "request_id.uuid",
        ),
        (
            token_service_pb2.TokenizeRequest(
                subject="u1",
                fields=[
                    token_service_pb2.TokenizeField(
                        category="name", value=common_pb2.Value(text="A" * 300)
                    )
                ],
            ),
            "name.max_bytes",
        ),
    ]
    for request, rule in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.Tokenize(request, metadata=auth, timeout=10)
        call = as_call(err.value)
        assert call.code() == grpc.StatusCode.INVALID_ARGUMENT, rule
        status = rpc_status.from_call(call)
        assert status is not None
        bad = error_details_pb2.BadRequest()
        assert any(d.Unpack(bad) for d in status.details)
        assert rule in {v.reason for v in bad.field_violations}


def test_a_caller_may_store_only_its_categories(server: RunningServer) -> None:
    with server.client("shipping") as shipping, pytest.raises(PermissionDeniedError) as err:
        shipping.tokenize("user-1", [Field("card_number", PAN)])
    assert "may not store category 'card_number'" in err.value.message


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer nope"),),
        (("authorization", "Basic abc"),),
        (("authorization", "Bearer pdv_aaaaaaaaaaaaaaaa_" + "A" * 43),),
    ],
)
def test_every_call_is_authenticated(
    server: RunningServer, metadata: tuple[tuple[str, str], ...]
) -> None:
    stub = token_service_pb2_grpc.TokenServiceStub(server.channel())
    with pytest.raises(grpc.RpcError) as err:
        stub.Detokenize(
            token_service_pb2.DetokenizeRequest(tokens=["tok_" + "a" * 26], purpose="payment"),
            metadata=metadata,
            timeout=10,
        )
    assert as_call(err.value).code() == grpc.StatusCode.UNAUTHENTICATED


def test_client_raises_unauthenticated(server: RunningServer) -> None:
    from pdvault_client import Client

    with Client(server.addr, "pdv_bad") as c, pytest.raises(UnauthenticatedError):
        c.detokenize(["tok_" + "a" * 26], "payment")


def test_audit_records_every_decision_without_values(server: RunningServer) -> None:
    with server.client("kyc") as kyc, server.client("shipping") as shipping:
        [tok] = kyc.tokenize("user-42", [Field("card_number", PAN)])
        shipping.detokenize([tok.token], "product_shipping", justification="ticket-9")
        with server.client("payment") as payment:
            payment.detokenize([tok.token], "payment")
    with server.app.engine.connect() as conn:
        rows = conn.execute(select(audit_events).order_by(audit_events.c.id)).mappings().all()
    assert [(r["caller"], r["action"], r["outcome"]) for r in rows] == [
        ("kyc", "tokenize", "granted"),
        ("shipping", "detokenize", "refused"),
        ("payment", "detokenize", "granted"),
    ]
    refused = rows[1]
    assert refused["rule"] == "category:card_number:purposes"
    assert refused["purpose"] == "product_shipping"
    assert refused["justification"] == "ticket-9"
    assert refused["token"] == tok.token
    assert rows[2]["view"] == "full"
    assert all(PAN not in str(dict(r)) for r in rows)


def test_no_plaintext_anywhere_in_the_database_or_data_directory(server: RunningServer) -> None:
    secrets = ["4111111111111111", "Jane Q. Public", "1600 Pennsylvania Avenue"]
    with server.client("kyc") as kyc:
        kyc.tokenize(
            "user-77",
            [
                Field("card_number", secrets[0]),
                Field("name", secrets[1]),
                Field("address", secrets[2]),
            ],
        )
    server.app.engine.dispose()  # flush the WAL into the file too
    blob = b"".join(
        p.read_bytes() for p in Path(server.app.settings.data_dir).rglob("*") if p.is_file()
    )
    for s in secrets:
        assert s.encode() not in blob
        assert s.encode("utf-16-le") not in blob


def test_health_and_reflection_are_served_without_credentials(server: RunningServer) -> None:
    channel = server.channel()
    health: Any = health_pb2_grpc.HealthStub(channel)  # the stubs package types it loosely
    for service in ("", "pdvault.v1.TokenService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    refl: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = refl.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert "pdvault.v1.TokenService" in names
    assert "grpc.health.v1.Health" in names


def test_a_card_number_pasted_as_a_token_is_not_audited(server: RunningServer) -> None:
    with server.client("payment") as payment:
        [got] = payment.detokenize([PAN], "payment")
    assert got.error is not None
    with server.app.engine.connect() as conn:
        tokens = conn.execute(select(audit_events.c.token)).scalars().all()
    assert tokens == ["************1111"]

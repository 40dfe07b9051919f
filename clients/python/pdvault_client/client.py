"""A typed client for pdvault's services: deadlines, safe retries, errors as exceptions."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import grpc
from pdvault.v1 import (
    caller_service_pb2_grpc,
    document_service_pb2_grpc,
    key_service_pb2_grpc,
    policy_service_pb2_grpc,
    subject_service_pb2_grpc,
    token_service_pb2_grpc,
)

from pdvault_client.admin import ApprovalAdmin, CallerAdmin, KeyAdmin, PolicyAdmin, SubjectAdmin
from pdvault_client.convert import (
    detokenize_request,
    detokenized,
    retry_pause,
    tokenize_request,
    tokenized,
)
from pdvault_client.documents import DocumentClient
from pdvault_client.errors import from_rpc_error
from pdvault_client.types import (
    CHANNEL_OPTIONS,
    Detokenized,
    Field,
    RetryPolicy,
    Tokenized,
)

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """pdvault's TokenService. Thread-safe; close it (or use `with`) to release the channel."""

    def __init__(
        self,
        addr: str,
        api_key: str | None = None,
        *,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        channel: grpc.Channel | None = None,
        tls_ca: bytes | None = None,
        tls_server_name: str | None = None,
        tls_cert: bytes | None = None,
        tls_key: bytes | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`tls_ca`: the PEM CA bundle that signed the server's certificate; with it the
        channel uses TLS (`tls_server_name` overrides the name checked in the certificate).
        `tls_cert` and `tls_key`: this client's certificate chain and private key (PEM), for
        a server that identifies callers by client certificate (mTLS; TLS with the system's
        CAs when `tls_ca` is not given). `api_key` may then be left out: the certificate
        says who calls (if both are given, the server requires them to name the same caller).
        Without TLS the channel is plaintext, which pdvault serves on loopback only. A channel
        given in `channel` is used as it is (set its message limits to MAX_MESSAGE_BYTES)."""
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if channel is None:
            options: list[tuple[str, str | int]] = list(CHANNEL_OPTIONS)
            if tls_ca is not None or tls_cert is not None:
                if tls_server_name:
                    options.append(("grpc.ssl_target_name_override", tls_server_name))
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=tls_ca, private_key=tls_key, certificate_chain=tls_cert
                )
                channel = grpc.secure_channel(addr, credentials, options=options)
            else:
                channel = grpc.insecure_channel(addr, options=options)
        self._channel = channel
        self._stub = token_service_pb2_grpc.TokenServiceStub(self._channel)
        self._key_stub = key_service_pb2_grpc.KeyServiceStub(self._channel)
        self._subject_stub = subject_service_pb2_grpc.SubjectServiceStub(self._channel)
        self._caller_stub = caller_service_pb2_grpc.CallerServiceStub(self._channel)
        self._policy_stub = policy_service_pb2_grpc.PolicyServiceStub(self._channel)
        self._document_stub = document_service_pb2_grpc.DocumentServiceStub(self._channel)
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"Client(timeout={self._timeout})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def tokenize(
        self, subject: str, fields: Sequence[Field], *, request_id: str | None = None
    ) -> list[Tokenized]:
        """Store the fields of one subject; one token per field, in order.

        A request id is generated when none is given and reused on every retry, so a retry
        after a timeout never creates a second set of tokens.
        """
        request = tokenize_request(subject, fields, request_id)
        return tokenized(self._call(self._stub.Tokenize, request))

    def detokenize(
        self,
        tokens: Sequence[str],
        purpose: str,
        *,
        justification: str = "",
        legal_basis: str = "",
    ) -> list[Detokenized]:
        """Resolve tokens for a purpose. Refused tokens come back with `error`, not raised.

        `legal_basis` (law_or_regulation, public_interest, public_function, legitimate_rights)
        states a legal exception; give it only when it applies: it is audited.
        """
        request = detokenize_request(tokens, purpose, justification, legal_basis)
        return detokenized(self._call(self._stub.Detokenize, request))

    def subjects(self) -> SubjectAdmin:
        """The data-subject lifecycle (the SubjectService) for an operator caller."""
        return SubjectAdmin(self)

    def callers(self) -> CallerAdmin:
        """Callers' API keys (the CallerService) for an operator caller."""
        return CallerAdmin(self)

    def approvals(self, *, vault_token: str | None = None) -> ApprovalAdmin:
        """Dual control's requests (the ApprovalService) for an approving operator.

        `vault_token`: the approver's own HashiCorp Vault token, which approving a held
        `keys_trim` needs when pdvault runs on Vault Transit (sent with approvals only).
        """
        return ApprovalAdmin(self, vault_token)

    def policy(self) -> PolicyAdmin:
        """The policy in force and its reload (the PolicyService) for an operator caller."""
        return PolicyAdmin(self)

    def keys(self, *, vault_token: str | None = None) -> KeyAdmin:
        """Key administration (the KeyService) for an operator caller.

        `vault_token` is the operator's own HashiCorp Vault token, which rotate and trim need
        when pdvault runs on Vault Transit; it is sent with those calls only.
        """
        return KeyAdmin(self, vault_token)

    def documents(self) -> DocumentClient:
        """Identity documents (the DocumentService): upload, download, metadata, holds,
        verification and the retention sweep; who may call which is the policy's to say."""
        return DocumentClient(self)

    def _call(
        self,
        method: Callable[..., T],
        request: object,
        *,
        extra_metadata: tuple[tuple[str, str], ...] = (),
        retry: bool = True,
        timeout: float | None = None,
    ) -> T:
        """`method(request, timeout=..., metadata=...)`, retried on UNAVAILABLE and on a refusal
        over the caller's request rate whose RetryInfo delay fits (unless `retry` is False)
        within one deadline: `timeout` seconds, the client's by default. The same request (its
        request id) is sent again. A method that raises grpc.RpcError may be retried; a
        PdvaultError it raises is final (an item quota's refusal: `QuotaExceededError`)."""
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        backoff = self._retry.initial_backoff
        metadata = self._metadata + extra_metadata
        attempts = self._retry.attempts if retry else 1
        for attempt in range(1, attempts + 1):
            remaining = deadline - time.monotonic()
            try:
                return method(request, timeout=max(remaining, 0.001), metadata=metadata)
            except grpc.RpcError as err:
                error = from_rpc_error(err)
                left = deadline - time.monotonic()
                pause = retry_pause(error, attempt, attempts, backoff, left)
                if pause is None:
                    raise error from None
                self._sleep(pause)
                backoff = min(backoff * self._retry.multiplier, self._retry.max_backoff)
        raise AssertionError("unreachable")

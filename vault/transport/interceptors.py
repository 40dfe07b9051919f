"""Authentication and the error safety net, as one server interceptor.

Every method of pdvault's own services requires a bearer API key; health checking and reflection
do not (probes and grpcurl use them). The caller is passed to the servicer in a context variable
set around the handler, in the thread that runs it.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any

import grpc
from grpc_status import rpc_status

from vault.domain.callers import Authenticator
from vault.domain.deadline import deadline_in
from vault.domain.types import CallerName
from vault.errors import PdvaultError
from vault.transport.status import internal_status, to_status_proto

log = logging.getLogger(__name__)

_caller: contextvars.ContextVar[CallerName] = contextvars.ContextVar("pdvault_caller")

PUBLIC_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def current_caller() -> CallerName:
    """The authenticated caller of the RPC being handled (set by the interceptor)."""
    return _caller.get()


def _bearer(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata():
        if key == "authorization" and isinstance(value, str):
            scheme, _, credential = value.partition(" ")
            return credential.strip() if scheme.lower() == "bearer" else None
    return None


def _refuse_streams(request: Any, context: grpc.ServicerContext) -> Any:
    context.abort(grpc.StatusCode.UNIMPLEMENTED, "streaming methods are not served yet")


class ServiceInterceptor(grpc.ServerInterceptor):
    def __init__(self, authenticator: Authenticator) -> None:
        self._auth = authenticator

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(PUBLIC_PREFIXES):
            return handler
        if handler.unary_unary is None:
            # Fail closed: a streaming method gets authentication when one is added.
            return grpc.unary_stream_rpc_method_handler(_refuse_streams)
        behavior = handler.unary_unary

        def guarded(request: Any, context: grpc.ServicerContext) -> Any:  # noqa: RET503
            try:
                caller = self._auth.authenticate(_bearer(context))
                token = _caller.set(caller)
                try:
                    with deadline_in(context.time_remaining()):
                        return behavior(request, context)
                finally:
                    _caller.reset(token)
            except PdvaultError as exc:
                status = to_status_proto(exc)
            except Exception as exc:  # noqa: BLE001  (the safety net: never UNKNOWN, never a trace)
                status = internal_status(exc)
            context.abort_with_status(rpc_status.to_status(status))

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

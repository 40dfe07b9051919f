"""How one call of pdvault's own services is served, on `grpc.aio`.

The order is what keeps a stranger from stalling the service:

1. Authenticate, before anything waits for the request message: from the client certificate
   the TLS handshake verified (gRPC's auth context; read once per certificate) and from the API
   key in the metadata, checked in memory (an unknown key id costs at most one table read a
   second, off the event loop). See `vault.domain.identity` for how the two combine. A
   stranger's call ends here, whatever it sends next.
2. Admit the call against the caps: calls in flight per process and per caller, and the
   caller's request rate (the policy's `rate`, a token bucket in this process). Over a cap:
   RESOURCE_EXHAUSTED with RetryInfo (over the rate also QuotaFailure, and the refusal is
   audited before the caller hears it). Health checks and reflection are not counted.
3. Read the request message within `read_timeout`: every method is registered as
   client-streaming on the server side (identical on the wire to a unary call), so the server
   reads the message itself and can stop waiting. A caller that opens a call and never sends
   holds only a coroutine, never a thread, and only for that long.
4. Parse it here: malformed protobuf or invalid UTF-8 is INVALID_ARGUMENT, never INTERNAL.
5. Run the servicer (synchronous: the use cases, the database, the key provider) on the
   process's thread pool, with the call's deadline, and map any error through the one status
   table.

Around all of it, each call is observed (`vault.observability`): counted and timed under the
`grpc_server_*` names, given a span whose context the thread pool's jobs run in, and ended with
one access log line (`pdvault.access`: method, caller, purpose, status, duration, items).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from grpc_status import rpc_status

from vault.crypto.svid import CertificateCache
from vault.domain.context import RequestContext
from vault.domain.identity import Identification, PeerCertificate
from vault.domain.quotas import RateLimiter
from vault.domain.types import CallerName
from vault.errors import (
    DeadlineExceeded,
    InvalidArgument,
    PdvaultError,
    QuotaExceeded,
    Reason,
    ResourceExhausted,
)
from vault.logs import ACCESS_LOGGER, bind_call
from vault.observability import CallFacts, CallObservation, Observability
from vault.transport.status import internal_status, to_status_proto

__all__ = ["Call", "Gate", "Limits", "Method", "ServiceHandler", "Stream", "StreamingMethod"]


log = logging.getLogger(__name__)
access_log = logging.getLogger(ACCESS_LOGGER)
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call:
    """What a servicer learns about the call it serves: the request's context (who calls,
    until when, its id), which it hands to the use case, and the metadata."""

    ctx: RequestContext
    metadata: tuple[tuple[str, str | bytes], ...] = field(repr=False)
    # What the servicer notes for the access log and the metrics (names and counts only).
    facts: CallFacts = field(default_factory=CallFacts, repr=False)

    def header(self, key: str) -> str | None:
        for k, v in self.metadata:
            if k == key and isinstance(v, str) and v:
                return v
        return None


@dataclass(frozen=True, slots=True)
class Method(Generic[Req, Resp]):
    """One unary method of a service: its request type and the servicer function."""

    name: str
    request_type: type[Req]
    run: Callable[[Req, Call], Resp]


class Stream:
    """What a streaming method's servicer reads and runs with: the next request message (each
    within the read timeout), and synchronous work on the process's thread pool."""

    def __init__(
        self,
        requests: AsyncIterator[bytes],
        read_timeout: float,
        executor: Executor,
        context: contextvars.Context | None = None,
    ) -> None:
        self._requests = requests
        self._timeout = read_timeout
        self._executor = executor
        self._context = context or contextvars.copy_context()

    async def next(self, request_type: type[Req], within: float | None = None) -> Req | None:
        """The next message, parsed; None when the client has sent its last. It must arrive
        within the read timeout, and within `within` seconds when given (then a `TimeoutError`
        says that this shorter limit, the caller's own, ran out)."""
        limit = self._timeout if within is None else min(self._timeout, within)
        try:
            async with asyncio.timeout(limit):
                raw = await anext(self._requests)
        except TimeoutError:
            if within is not None and within < self._timeout:
                raise
            raise _slow(self._timeout) from None
        except StopAsyncIteration:
            return None
        return _parse(request_type, raw)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        # In a copy of the call's context: its span and log ids, even for jobs that overlap.
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._context.copy().run, fn, *args
        )


@dataclass(frozen=True, slots=True)
class StreamingMethod:
    """A method that streams: client-streaming (`run` is a coroutine function returning the
    response) or server-streaming (`run` is an async generator function yielding responses;
    its request is read with `Stream.next`). A `transfer` counts against the cap on document
    transfers as well as against the caps on calls."""

    name: str
    server_streaming: bool
    run: Callable[[Stream, Call], Any]
    transfer: bool = True


@dataclass(frozen=True, slots=True)
class Limits:
    read_timeout: float = 10.0  # seconds to deliver each request message
    max_calls: int = 256  # calls in flight in this process (health and reflection excluded)
    max_calls_per_caller: int = 128
    max_transfers: int = 8  # document uploads and downloads in flight in this process


AuthContext = Mapping[str, Iterable[bytes]]


class Gate:
    """Authentication and the concurrency caps. Lives on the event loop's thread only."""

    def __init__(
        self,
        identification: Identification,
        certificates: CertificateCache | None,
        executor: Executor,
        limits: Limits,
        rates: RateLimiter | None = None,
        audit_refusal: Callable[[QuotaExceeded, str], None] | None = None,
    ) -> None:
        # Swapped whole when the policy is reloaded (it maps SPIFFE IDs to callers), as are
        # the request rates (the buckets start full again).
        self.identification = identification
        self.rates = rates
        # Records a call refused over its caller's rate (blocking: run off the event loop).
        self._audit_refusal = audit_refusal
        # None when no port asks for client certificates: the auth context is not read.
        self._certificates = certificates
        self._executor = executor
        self.limits = limits
        self._in_flight = 0
        self._per_caller: dict[CallerName, int] = {}
        self._transfers = 0

    def __repr__(self) -> str:
        return f"Gate(in_flight={self._in_flight})"

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def admit_rate(self, caller: CallerName, method: str) -> None:
        """Take one call from the caller's bucket. Over its rate: the refusal is audited (off
        the event loop), then raised."""
        rates = self.rates
        if rates is None:
            return
        try:
            rates.admit(caller)
        except QuotaExceeded as exc:
            if self._audit_refusal is not None:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._executor, self._audit_refusal, exc, method)
            raise

    async def authenticate(
        self,
        metadata: tuple[tuple[str, str | bytes], ...],
        auth_context: Callable[[], AuthContext],
        identification: Identification | None = None,
    ) -> CallerName:
        """The caller, as `identification` (the one of the policy the call's methods were
        built for; the gate's own by default) says."""
        ident = identification or self.identification
        peer = None if self._certificates is None else self.peer(auth_context())
        presented = _bearer(metadata)
        caller = ident.check(peer, presented)
        if caller is None:  # a key table read or an audited refusal: off the event loop
            loop = asyncio.get_running_loop()
            caller = await loop.run_in_executor(self._executor, ident.authenticate, peer, presented)
        return caller

    def peer(self, auth_context: AuthContext) -> PeerCertificate | None:
        """The client certificate the handshake verified, as read (once per certificate);
        None on a connection without one. Only gRPC's auth context says what it is: nothing
        the caller sends in the call does."""
        pems = list(auth_context.get("x509_pem_cert", ()))
        if not pems or self._certificates is None:
            return None
        peer = self._certificates.read(pems[0])
        # gRPC reports a SPIFFE ID only for exactly one URI SAN: it must agree with ours.
        reported = list(auth_context.get("peer_spiffe_id", ()))
        if peer.spiffe_id is not None and reported != [peer.spiffe_id.encode()]:
            return dataclasses.replace(
                peer, spiffe_id=None, problem="gRPC reads another SPIFFE ID in it"
            )
        return peer

    def admit(self, caller: CallerName) -> None:
        mine = self._per_caller.get(caller, 0)
        if self._in_flight >= self.limits.max_calls:
            raise _busy("the server is at its limit of calls in flight; retry shortly")
        if mine >= self.limits.max_calls_per_caller:
            raise _busy(
                f"caller '{caller}' has {mine} calls in flight, the most one caller may have; "
                "retry when some have finished"
            )
        self._in_flight += 1
        self._per_caller[caller] = mine + 1

    def admit_transfer(self) -> None:
        if self._transfers >= self.limits.max_transfers:
            raise ResourceExhausted(
                f"the server is at its limit of {self.limits.max_transfers} document transfers "
                "in flight; retry shortly",
                reason=Reason.TOO_MANY_CALLS,
                retry_after=1.0,
            )
        self._transfers += 1

    def release_transfer(self) -> None:
        self._transfers -= 1

    def release(self, caller: CallerName) -> None:
        self._in_flight -= 1
        left = self._per_caller[caller] - 1
        if left:
            self._per_caller[caller] = left
        else:
            del self._per_caller[caller]


def _busy(message: str) -> ResourceExhausted:
    return ResourceExhausted(message, reason=Reason.TOO_MANY_CALLS, retry_after=0.1)


def _bearer(metadata: tuple[tuple[str, str | bytes], ...]) -> str | None:
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str):
            scheme, _, credential = value.partition(" ")
            return credential.strip() if scheme.lower() == "bearer" else None
    return None


class ServiceHandler(grpc.GenericRpcHandler):
    """The methods of one of pdvault's services, each served as described above."""

    def __init__(
        self,
        service: str,
        methods: Mapping[str, Method[Any, Any] | StreamingMethod],
        gate: Gate,
        executor: Executor,
        observed: Observability | None = None,
    ) -> None:
        self.name = service
        self._gate = gate
        self._executor = executor
        self._observed = observed or Observability()
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self.use(methods)

    def use(
        self,
        methods: Mapping[str, Method[Any, Any] | StreamingMethod],
        identification: Identification | None = None,
    ) -> None:
        """Serve these methods, authenticating with `identification` (both of one policy),
        from the next call on (a policy reload): the table is built, then swapped in one
        assignment; a call already under way keeps what it got, both halves."""
        self._handlers = {
            f"/{self.name}/{name}": _handler(
                method,
                self._gate,
                self._executor,
                _Watch(self._observed, self.name, method),
                identification,
            )
            for name, method in methods.items()
        }

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self._handlers.get(handler_call_details.method)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


class _Watch:
    """How the calls of one method are observed (its labels are fixed: the method's names)."""

    def __init__(
        self, observed: Observability, service: str, method: Method[Any, Any] | StreamingMethod
    ) -> None:
        self._observed = observed
        self._service = service
        self._method = method.name
        self.path = f"/{service}/{method.name}"
        if isinstance(method, Method):
            self._type = "unary"
        else:
            self._type = "server_stream" if method.server_streaming else "client_stream"

    def begin(self, metadata: tuple[tuple[str, str | bytes], ...]) -> _Observed:
        # The W3C traceparent alone (ids and flags): never tracestate, whose free text would
        # be exported with every span, nor any other header (the API key is one).
        carrier = {k: v for k, v in metadata if k == "traceparent" and isinstance(v, str)}
        call = self._observed.begin_call(self._type, self._service, self._method, carrier)
        call.context.run(bind_call, call.request_id, call.trace_id)
        return _Observed(call, self.path)


class _Observed:
    """One call under observation: its status once known, and its end."""

    def __init__(self, call: CallObservation, path: str) -> None:
        self.call = call
        self.path = path  # /package.Service/Method
        self.caller = ""
        self.code = "UNKNOWN"
        self.error: BaseException | None = None

    def failed(self, status: Any, error: BaseException | None = None) -> Any:
        self.code = _CODE_NAMES.get(status.code, "UNKNOWN")
        if error is not None and not isinstance(error, PdvaultError):
            self.error = error  # an internal error: its class goes on the span
        return status

    def internal(self, exc: BaseException) -> Any:
        """INTERNAL, logged (class and frames, with an id) among the call's own lines."""
        return self.failed(self.call.context.run(internal_status, exc), exc)

    def context(self, caller: CallerName, seconds: float | None) -> RequestContext:
        return RequestContext.for_call(
            caller, seconds, call_id=self.call.request_id, trace_id=self.call.trace_id
        )

    def end(self, cancelled: bool) -> None:
        if cancelled:
            self.code = "CANCELLED"
        fields = self.call.finish(self.caller, self.code, self.error)
        access_log.info("call", extra=fields)


def _handler(
    method: Method[Any, Any] | StreamingMethod,
    gate: Gate,
    executor: Executor,
    watch: _Watch,
    ident: Identification | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    # Requests arrive as raw bytes (no deserializer): parsed by pdvault, within its timeouts.
    if isinstance(method, Method):
        return grpc.stream_unary_rpc_method_handler(
            _serve(method, gate, executor, watch, ident),
            request_deserializer=None,
            response_serializer=_serialize,
        )
    if method.server_streaming:
        return grpc.stream_stream_rpc_method_handler(
            _serve_server_stream(method, gate, executor, watch, ident),
            request_deserializer=None,
            response_serializer=_serialize,
        )
    return grpc.stream_unary_rpc_method_handler(
        _serve_client_stream(method, gate, executor, watch, ident),
        request_deserializer=None,
        response_serializer=_serialize,
    )


async def _enter(
    gate: Gate,
    context: grpc.aio.ServicerContext[Any, Any],
    transfer: bool,
    seen: _Observed,
    ident: Identification | None,
) -> CallerName:
    """Authenticate and admit a call (and a transfer), or end it."""
    metadata = tuple(context.invocation_metadata() or ())
    try:
        caller = await gate.authenticate(metadata, context.auth_context, ident)
        await gate.admit_rate(caller, seen.path)
        gate.admit(caller)
    except PdvaultError as exc:
        await _abort(context, seen.failed(to_status_proto(exc)))
    seen.caller = caller
    if transfer:
        try:
            gate.admit_transfer()
        except PdvaultError as exc:
            gate.release(caller)
            await _abort(context, seen.failed(to_status_proto(exc)))
    return caller


def _leave(gate: Gate, caller: CallerName, transfer: bool) -> None:
    if transfer:
        gate.release_transfer()
    gate.release(caller)


def _serve_client_stream(
    method: StreamingMethod,
    gate: Gate,
    executor: Executor,
    watch: _Watch,
    ident: Identification | None,
) -> Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext[Any, Any]], Any]:
    async def handle(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> Message:
        metadata = tuple(context.invocation_metadata() or ())
        seen = watch.begin(metadata)
        cancelled = False
        try:
            caller = await _enter(gate, context, method.transfer, seen, ident)
            try:
                status = None
                try:
                    ctx = seen.context(caller, context.time_remaining())
                    stream = Stream(requests, gate.limits.read_timeout, executor, seen.call.context)
                    call = Call(ctx, metadata, seen.call.facts)
                    response: Message = await method.run(stream, call)
                    seen.code = "OK"
                    return response
                except PdvaultError as exc:
                    status = seen.failed(to_status_proto(exc))
                except Exception as exc:  # noqa: BLE001  (the safety net: never UNKNOWN)
                    status = seen.internal(exc)
                await _abort(context, status)
            finally:
                _leave(gate, caller, method.transfer)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            seen.end(cancelled)

    return handle


def _serve_server_stream(
    method: StreamingMethod,
    gate: Gate,
    executor: Executor,
    watch: _Watch,
    ident: Identification | None,
) -> Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext[Any, Any]], Any]:
    async def handle(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        metadata = tuple(context.invocation_metadata() or ())
        seen = watch.begin(metadata)
        cancelled = False
        try:
            caller = await _enter(gate, context, method.transfer, seen, ident)
            transfer = method.transfer
            try:
                status = None
                responses = None
                try:
                    ctx = seen.context(caller, context.time_remaining())
                    stream = Stream(requests, gate.limits.read_timeout, executor, seen.call.context)
                    responses = method.run(stream, Call(ctx, metadata, seen.call.facts))
                    async for response in responses:
                        if not await _sent(context, response, gate.limits.read_timeout):
                            # The client takes nothing. Ending the call waits for the message
                            # under way (flow control holds it: until the client reads,
                            # cancels, goes, or its connection's age or the call's deadline
                            # ends it), so give back its transfer slot first. It still counts
                            # as a call of its caller and of the process: the caps on calls
                            # bound how many.
                            if transfer:
                                gate.release_transfer()
                                transfer = False
                            raise _stalled(gate.limits.read_timeout)
                    seen.code = "OK"
                    return
                except PdvaultError as exc:
                    # Mid-stream too: the call ends with this status, never OK (DATA_LOSS after
                    # a segment that failed authentication).
                    status = seen.failed(to_status_proto(exc))
                except Exception as exc:  # noqa: BLE001  (the safety net: never UNKNOWN)
                    status = seen.internal(exc)
                finally:
                    if responses is not None:
                        await responses.aclose()  # its own `finally` (a download wipes its key)
                await _abort(context, status)
            finally:
                _leave(gate, caller, transfer)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            seen.end(cancelled)

    return handle


async def _sent(
    context: grpc.aio.ServicerContext[Any, Any], message: Message, timeout: float
) -> bool:
    """Send one message of a server stream; False if the client did not take it in time.
    Flow control holds a write while the client reads nothing: a download that waited for
    ever held its transfer slot (PDV_MAX_TRANSFERS) until the connection's age ended it (30
    minutes), and two stalled clients shut every other download out."""
    try:
        await asyncio.wait_for(context.write(message), timeout)
    except TimeoutError:
        return False
    return True


def _stalled(timeout: float) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"the client did not take the next message within {timeout:g} s",
        reason=Reason.REQUEST_TOO_SLOW,
    )


def _serve(
    method: Method[Any, Any],
    gate: Gate,
    executor: Executor,
    watch: _Watch,
    ident: Identification | None,
) -> Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext[Any, Any]], Any]:
    async def handle(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> Message:
        metadata = tuple(context.invocation_metadata() or ())
        seen = watch.begin(metadata)
        cancelled = False
        try:
            try:
                caller = await gate.authenticate(metadata, context.auth_context, ident)
                await gate.admit_rate(caller, watch.path)
                gate.admit(caller)
            except PdvaultError as exc:
                await _abort(context, seen.failed(to_status_proto(exc)))
            seen.caller = caller
            try:
                status = None
                try:
                    raw = await _read_one(requests, gate.limits.read_timeout)
                    request = _parse(method.request_type, raw)
                    ctx = seen.context(caller, context.time_remaining())
                    loop = asyncio.get_running_loop()
                    # In the call's context: its span is the parent of the work's spans, and
                    # the work's log lines carry the call's ids.
                    response: Message = await loop.run_in_executor(
                        executor,
                        seen.call.context.run,
                        method.run,
                        request,
                        Call(ctx, metadata, seen.call.facts),
                    )
                    seen.code = "OK"
                    return response
                except PdvaultError as exc:
                    status = seen.failed(to_status_proto(exc))
                except Exception as exc:  # noqa: BLE001  (the safety net: never UNKNOWN, never a trace)
                    status = seen.internal(exc)
                await _abort(context, status)
            finally:
                gate.release(caller)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            seen.end(cancelled)

    return handle


async def _read_one(requests: AsyncIterator[bytes], timeout: float) -> bytes:
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps the read in a task of its
    # own (a task per call on the hot path).
    try:
        async with asyncio.timeout(timeout):
            return await anext(requests)
    except TimeoutError:
        raise _slow(timeout) from None
    except StopAsyncIteration:
        raise InvalidArgument.one(
            "request", "request.required", "the request message is missing"
        ) from None


def _slow(timeout: float) -> DeadlineExceeded:
    return DeadlineExceeded(
        f"the request message did not arrive within {timeout:g} s", reason=Reason.REQUEST_TOO_SLOW
    )


def _parse(request_type: type[Req], raw: bytes) -> Req:
    try:
        return request_type.FromString(raw)
    except DecodeError:
        raise InvalidArgument.one(
            "request",
            "request.encoding",
            "is not a valid protobuf message of this method (or holds text that is not UTF-8)",
        ) from None


async def _abort(context: grpc.aio.ServicerContext[Any, Any], status: Any) -> NoReturn:
    converted = rpc_status.to_status(status)
    await context.abort(converted.code, converted.details, converted.trailing_metadata)

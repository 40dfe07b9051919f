"""The framework limit: TokenService with pdvault's server model and messages, doing nothing.

`python -m bench.noop_server --addr 127.0.0.1:PORT --model aio --processes 2 --max-workers 16`
serves Tokenize and Detokenize from `processes` spawned processes sharing the port through
SO_REUSEPORT (one is a plain single server), in one of two server models:

- `aio` (pdvault's, `vault.transport`): one `grpc.aio` server per process with the same options
  and limits as pdvault's defaults; each method registered as a client-streaming generic handler
  that reads the raw request itself with pdvault's own read-timeout wrapper, parses it with
  `FromString`, and answers on a thread pool of `max_workers` threads, as pdvault's servicers run;
- `threads` (pdvault's before grpc.aio): one `grpc.server` per process with a
  `ThreadPoolExecutor` of `max_workers` threads and the generated servicer registration.

Every call gets a canned response of the same shape as pdvault's (one result per field or
token). No authentication, no storage, no crypto: what is left is gRPC, protobuf, the server
model and Python's GIL. Once every process listens the parent prints one line naming them, as
`pdv serve` does: `noop server listening on ADDR (2 processes: pid 1, pid 2)`.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from concurrent import futures
from typing import Any

import grpc
from google.protobuf.message import Message
from pdvault.v1 import common_pb2, token_service_pb2, token_service_pb2_grpc

from vault.config import Settings
from vault.errors import PdvaultError

# The baseline must read and parse a request exactly as pdvault does, so it uses pdvault's own
# helpers and limits: a rename in vault/ breaks this import loudly rather than letting the two
# drift apart.
from vault.transport.rpc import _parse, _read_one
from vault.transport.server import HEALTH_HEADROOM, MAX_MESSAGE_BYTES

MODELS = ("aio", "threads")
SERVICE = "pdvault.v1.TokenService"
_TOKEN = "tok_" + "a" * 26
_CARD = "4111111111111111"


class CannedAnswers:
    """Responses cached per size: building them is not part of the framework's cost."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokenized: dict[int, token_service_pb2.TokenizeResponse] = {}
        self._detokenized: dict[int, token_service_pb2.DetokenizeResponse] = {}

    def tokenize(
        self, request: token_service_pb2.TokenizeRequest
    ) -> token_service_pb2.TokenizeResponse:
        n = len(request.fields)
        answer = self._tokenized.get(n)
        if answer is None:
            answer = token_service_pb2.TokenizeResponse(
                results=[
                    token_service_pb2.TokenizeResult(token=_TOKEN, category="card_number")
                    for _ in range(n)
                ]
            )
            with self._lock:
                self._tokenized[n] = answer
        return answer

    def detokenize(
        self, request: token_service_pb2.DetokenizeRequest
    ) -> token_service_pb2.DetokenizeResponse:
        n = len(request.tokens)
        answer = self._detokenized.get(n)
        if answer is None:
            answer = token_service_pb2.DetokenizeResponse(
                results=[
                    token_service_pb2.DetokenizeResult(
                        token=_TOKEN,
                        category="card_number",
                        view=token_service_pb2.VIEW_FULL,
                        value=common_pb2.Value(text=_CARD),
                    )
                    for _ in range(n)
                ]
            )
            with self._lock:
                self._detokenized[n] = answer
        return answer


# -- the thread-pool model ----------------------------------------------------------------------


class NoopTokenServicer(token_service_pb2_grpc.TokenServiceServicer):
    def __init__(self) -> None:
        self._answers = CannedAnswers()

    def Tokenize(
        self, request: token_service_pb2.TokenizeRequest, context: grpc.ServicerContext
    ) -> token_service_pb2.TokenizeResponse:
        return self._answers.tokenize(request)

    def Detokenize(
        self, request: token_service_pb2.DetokenizeRequest, context: grpc.ServicerContext
    ) -> token_service_pb2.DetokenizeResponse:
        return self._answers.detokenize(request)


def _serve_threads(
    addr: str, max_workers: int, reuse_port: bool, on_ready: Callable[[int], None]
) -> int:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
    )
    token_service_pb2_grpc.add_TokenServiceServicer_to_server(NoopTokenServicer(), server)
    port = server.add_insecure_port(addr)
    if port == 0:
        print(f"noop server: cannot listen on {addr}", file=sys.stderr)
        return 1
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    on_ready(port)
    stop.wait()
    server.stop(grace=2).wait()
    return 0


# -- the grpc.aio model, as vault.transport.server builds it -----------------------------------


def _aio_options(settings: Settings, reuse_port: bool) -> list[tuple[str, int]]:
    """vault.transport.server.start_server's options, from pdvault's default settings."""
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        ("grpc.max_connection_age_ms", int(settings.max_connection_age * 1000)),
        ("grpc.max_connection_age_grace_ms", int(min(30.0, settings.max_connection_age) * 1000)),
        ("grpc.max_connection_idle_ms", 300_000),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def _aio_method(
    request_type: type[Message],
    answer: Callable[[Any], Message],
    read_timeout: float,
    executor: futures.Executor,
) -> Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext[Any, Any]], Any]:
    async def handle(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> Message:
        try:
            raw = await _read_one(requests, read_timeout)
            request = _parse(request_type, raw)
        except PdvaultError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        context.time_remaining()  # pdvault hands the deadline to its servicer
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, answer, request)

    return handle


class _NoopHandler(grpc.GenericRpcHandler):
    def __init__(self, read_timeout: float, executor: futures.Executor) -> None:
        answers = CannedAnswers()
        methods: dict[str, tuple[type[Message], Callable[[Any], Message]]] = {
            "Tokenize": (token_service_pb2.TokenizeRequest, answers.tokenize),
            "Detokenize": (token_service_pb2.DetokenizeRequest, answers.detokenize),
        }
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            f"/{SERVICE}/{name}": grpc.stream_unary_rpc_method_handler(
                _aio_method(request_type, answer, read_timeout, executor),
                request_deserializer=None,  # raw bytes, parsed in the handler as pdvault does
                response_serializer=_serialize,
            )
            for name, (request_type, answer) in methods.items()
        }

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self._handlers.get(handler_call_details.method)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _serve_aio(
    addr: str, max_workers: int, reuse_port: bool, on_ready: Callable[[int], None]
) -> int:
    settings = Settings()

    async def main() -> int:
        executor = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc")
        server = grpc.aio.server(
            maximum_concurrent_rpcs=settings.max_calls + HEALTH_HEADROOM,
            options=_aio_options(settings, reuse_port),
        )
        server.add_generic_rpc_handlers([_NoopHandler(settings.request_read_timeout, executor)])
        port = server.add_insecure_port(addr)
        if port == 0:
            print(f"noop server: cannot listen on {addr}", file=sys.stderr)
            return 1
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        on_ready(port)
        await stop.wait()
        await server.stop(2)
        executor.shutdown(wait=True)
        return 0

    return asyncio.run(main())


SERVERS: dict[str, Callable[[str, int, bool, Callable[[int], None]], int]] = {
    "aio": _serve_aio,
    "threads": _serve_threads,
}


# -- processes ----------------------------------------------------------------------------------


def _child(model: str, addr: str, max_workers: int, ready: Any) -> None:
    status = SERVERS[model](addr, max_workers, True, lambda _port: ready.put(os.getpid()))
    sys.exit(status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--addr", default="127.0.0.1:0")
    parser.add_argument("--model", choices=MODELS, default="aio")
    parser.add_argument("--max-workers", type=int, default=16)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args(argv)
    if args.processes <= 1:

        def ready(port: int) -> None:
            print(
                f"noop server listening on {args.addr} (port {port}, pid {os.getpid()})",
                flush=True,
            )

        return SERVERS[args.model](args.addr, args.max_workers, False, ready)
    ctx = multiprocessing.get_context("spawn")
    pids: Any = ctx.Queue()
    children = [
        ctx.Process(
            target=_child, args=(args.model, args.addr, args.max_workers, pids), name=f"noop-{i}"
        )
        for i in range(args.processes)
    ]
    for child in children:
        child.start()

    def _stop(*_: object) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    serving: list[int] = []
    while len(serving) < len(children):
        try:
            serving.append(int(pids.get(timeout=0.5)))
        except queue.Empty:
            if any(c.exitcode is not None for c in children):
                print("noop server: a process exited while starting", file=sys.stderr)
                _stop()
                return 1
    print(
        f"noop server listening on {args.addr} ({len(serving)} processes: pid "
        + ", pid ".join(str(p) for p in serving)
        + ")",
        flush=True,
    )
    for child in children:
        child.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())

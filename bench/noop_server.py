"""The framework limit: TokenService with pdvault's server model and messages, doing nothing.

`python -m bench.noop_server --addr 127.0.0.1:PORT --max-workers 16 --processes 2` serves
Tokenize and Detokenize as pdvault does: `processes` spawned processes sharing the port through
SO_REUSEPORT (one is a plain single server), each a `grpc.server` with a `ThreadPoolExecutor` of
the same size and the same channel options as `vault.transport.server`. Every call gets a canned
response of the same shape as pdvault's (one result per field or token). No interceptor, no
storage, no crypto: what is left is gRPC, protobuf and Python's GIL.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import threading
from concurrent import futures

import grpc
from pdvault.v1 import common_pb2, token_service_pb2, token_service_pb2_grpc

MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # as vault.transport.server
_TOKEN = "tok_" + "a" * 26
_CARD = "4111111111111111"


class NoopTokenServicer(token_service_pb2_grpc.TokenServiceServicer):
    """Canned answers, cached per size: building them is not part of the framework's cost."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokenized: dict[int, token_service_pb2.TokenizeResponse] = {}
        self._detokenized: dict[int, token_service_pb2.DetokenizeResponse] = {}

    def Tokenize(  # noqa: N802  (the gRPC method name)
        self, request: token_service_pb2.TokenizeRequest, context: grpc.ServicerContext
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

    def Detokenize(  # noqa: N802
        self, request: token_service_pb2.DetokenizeRequest, context: grpc.ServicerContext
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


def build(addr: str, max_workers: int, reuse_port: bool = False) -> tuple[grpc.Server, int]:
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
    return server, port


def serve(addr: str, max_workers: int, reuse_port: bool) -> int:
    server, port = build(addr, max_workers, reuse_port)
    if port == 0:
        print(f"noop server: cannot listen on {addr}", file=sys.stderr)
        return 1
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"noop server listening on port {port} (pid {os.getpid()})", flush=True)
    stop.wait()
    server.stop(grace=2).wait()
    return 0


def _child(addr: str, max_workers: int) -> None:
    sys.exit(serve(addr, max_workers, reuse_port=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--addr", default="127.0.0.1:0")
    parser.add_argument("--max-workers", type=int, default=16)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args(argv)
    if args.processes <= 1:
        return serve(args.addr, args.max_workers, reuse_port=False)
    ctx = multiprocessing.get_context("spawn")
    children = [
        ctx.Process(target=_child, args=(args.addr, args.max_workers), name=f"noop-{i}")
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
    for child in children:
        child.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())

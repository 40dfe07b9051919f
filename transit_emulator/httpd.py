"""The socket side: a threading HTTP/1.1 server that hands each request to the emulator.

Every answer carries ``Content-Type: application/json`` (exactly) and ``Cache-Control:
no-store``, as Vault's do; 204 answers have no body. ``stop`` cuts kept-alive connections.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from transit_emulator.envelope import Reply

Answer = Callable[[str, str, dict[str, str], bytes], Reply]


class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], answer: Answer) -> None:
        self.answer = answer
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # not a client gone or cut by stop()
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self.connections_lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like Vault; every answer has a length
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls

    @property
    def _server(self) -> EmulatorHTTPServer:
        server = self.server
        if not isinstance(server, EmulatorHTTPServer):
            raise TypeError("this handler serves EmulatorHTTPServer only")
        return server

    def setup(self) -> None:
        super().setup()
        with self._server.connections_lock:
            self._server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self._server.connections_lock:
                self._server.connections.discard(self.connection)

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self._server.answer(method, self.path, headers, raw)
        self.send_response(reply.status)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Type", "application/json")
        if reply.status != 204:
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if method != "HEAD" and reply.status != 204:
            self.wfile.write(reply.body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_LIST(self) -> None:
        self._serve("LIST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log line."""

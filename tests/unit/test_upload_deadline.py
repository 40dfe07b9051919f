"""An upload's time limit (PDV_UPLOAD_TIMEOUT) holds against a client whose messages always
arrive in time: the deadline is checked before each read, not left to a timer alone."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from pdvault.v1 import document_service_pb2 as pb

from vault.errors import DeadlineExceeded, Reason
from vault.transport.document_servicer import DocumentServicer


class EagerStream:
    """Hands out a one-byte chunk on every read, at once: never a suspension point at which a
    timer could cancel the reader (the race a trickle could win at the deadline)."""

    def __init__(self) -> None:
        self.reads = 0

    async def next(self, request_type: type[Any], within: float | None = None) -> Any:
        self.reads += 1
        if self.reads > 2000:  # ~2 s: forty times the limit
            raise AssertionError("the upload's time limit never ended it")
        time.sleep(0.001)  # the loop's clock moves on; nothing yields to the loop
        return pb.UploadDocumentRequest(chunk=b"\xff")


def test_an_upload_that_never_pauses_still_ends_at_its_time_limit() -> None:
    archive: Any = SimpleNamespace(limits=SimpleNamespace(max_chunk_bytes=1024), policy=None)
    servicer = DocumentServicer(archive, SimpleNamespace(), upload_timeout=0.05)  # type: ignore[arg-type]
    stream = EagerStream()
    content = bytearray(10_000_000)  # never filled: only the deadline can end it
    with pytest.raises(DeadlineExceeded) as raised:
        asyncio.run(servicer._receive(stream, content))  # type: ignore[arg-type]
    assert raised.value.reason is Reason.REQUEST_TOO_SLOW
    assert "PDV_UPLOAD_TIMEOUT" in raised.value.message
    assert stream.reads < 1000  # ended by the deadline, not by the size

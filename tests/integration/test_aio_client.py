"""The asyncio client (issue #15 item 2): the synchronous client's surface, its conversions,
errors and retry rule, on `grpc.aio`, against the real server."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest
from sqlalchemy import text

import pdvault_client
from pdvault_client import DataLossError, Field, PermissionDeniedError, UnavailableError, aio
from pdvault_client.admin import CallerAdmin, PolicyAdmin
from tests.conftest import RunningServer
from tests.samples import noisy_image, photo_with_location

PAN = "4111111111111111"


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def public(cls: type) -> set[str]:
    return {n for n, v in inspect.getmembers(cls) if not n.startswith("_") and callable(v)}


@pytest.mark.parametrize(
    ("sync", "async_"),
    [
        (pdvault_client.Client, aio.Client),
        (pdvault_client.SubjectAdmin, aio.SubjectAdmin),
        (pdvault_client.KeyAdmin, aio.KeyAdmin),
        (CallerAdmin, aio.CallerAdmin),
        (PolicyAdmin, aio.PolicyAdmin),
        (pdvault_client.DocumentClient, aio.DocumentClient),
        (pdvault_client.ApprovalAdmin, aio.ApprovalAdmin),
    ],
)
def test_the_same_surface_as_the_synchronous_client(sync: type, async_: type) -> None:
    assert public(sync) - {"__enter__", "__exit__"} <= public(async_)
    for name in public(sync) - {"close"}:
        mine = getattr(async_, name)
        if name in ("subjects", "keys", "callers", "documents", "approvals", "policy"):
            continue
        assert inspect.iscoroutinefunction(mine), name
        assert list(inspect.signature(mine).parameters) == list(
            inspect.signature(getattr(sync, name)).parameters
        ), name


def test_tokens_and_a_refusal(server: RunningServer) -> None:
    keys = server.credentials()

    async def work() -> None:
        async with aio.Client(server.addr, keys["payment"]) as payment:
            [card] = await payment.tokenize("user-1", [Field("card_number", PAN)])
            [paid] = await payment.detokenize([card.token], "payment")
            assert paid.value == PAN
        async with aio.Client(server.addr, keys["shipping"]) as shipping:
            [refused] = await shipping.detokenize([card.token], "product_shipping")
            assert isinstance(refused.error, PermissionDeniedError)
            assert refused.error.reason == "TOKEN_REFUSED"
        async with aio.Client(server.addr, keys["ops"]) as ops:
            shown = await ops.subjects().get("user-1")
            with pdvault_client.Client(server.addr, keys["ops"]) as sync:
                assert shown == sync.subjects().get("user-1")
            status = await ops.keys().status()
            assert status.latest_version >= 1
            added = await ops.callers().add("shipping")
            assert added["apiKey"].startswith("pdv_")
            in_force = await ops.policy().get()
            assert in_force["digest"].startswith("sha256:")
            assert (await ops.policy().reload())["changed"] is False
            receipt = await ops.subjects().shred("user-1")
            assert (
                receipt["receipt"]["valuesDestroyed"] == "1"
                or receipt["receipt"]["valuesDestroyed"] == 1
            )

    run(work())


def test_documents_stream_in_and_out(server: RunningServer, tmp_path: Path) -> None:
    keys = server.credentials()
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(photo_with_location(image=noisy_image()))
    out = tmp_path / "out.jpg"
    sent: list[int] = []

    async def work() -> str:
        async with aio.Client(server.addr, keys["kyc"], timeout=30) as kyc:
            doc = await kyc.documents().upload(
                "user-2", "passport", photo, progress=lambda n, _t: sent.append(n)
            )
            got = await kyc.documents().download(doc.id, "identity_verification", out)
            assert got.id == doc.id
            clean = tmp_path / "clean.jpg"
            await kyc.documents().download(
                doc.id, "identity_verification", clean, variant="sanitized"
            )
            assert b"139.7454" not in clean.read_bytes()
            return doc.id

    doc_id = run(work())
    assert out.read_bytes() == photo.read_bytes()
    assert sent[-1] == photo.stat().st_size
    # A stored segment tampered with: DATA_LOSS, and no file left behind.
    with server.app.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE document_segments SET ciphertext = :c WHERE seq = 1 AND blob_id IN "
                "(SELECT blob_id FROM document_variants WHERE document_id = :d "
                "AND variant = 'original')"
            ),
            {"c": b"\x00" * 100, "d": doc_id},
        )
    broken = tmp_path / "broken.jpg"

    async def tampered() -> None:
        async with aio.Client(server.addr, keys["kyc"], timeout=30) as kyc:
            await kyc.documents().download(str(doc_id), "identity_verification", broken)

    with pytest.raises(DataLossError):
        run(tampered())
    assert not broken.exists()
    assert not list(tmp_path.glob(".broken.jpg.*"))


def test_unavailable_is_retried_with_backoff_then_raised() -> None:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    async def work() -> None:
        async with aio.Client("127.0.0.1:1", "pdv_x", timeout=5, sleep=sleep) as client:
            await client.tokenize("user-1", [Field("name", "Ann")])

    with pytest.raises(UnavailableError):
        run(work())
    assert len(pauses) >= 2

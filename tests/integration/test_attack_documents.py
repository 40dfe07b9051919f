"""Issue #11 attacked: identity documents under a racing shred, hostile uploads, reads of what
a caller may not read, and tampered ciphertext (in-process server, SQLite and PostgreSQL).
Stalled clients, kill -9 and two replicas: test_attack_documents_procs.py. Bounded loops,
outcomes counted, no clock."""

from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
import pytest
from pdvault.v1 import document_service_pb2 as pb
from pdvault.v1 import document_service_pb2_grpc as pb_grpc
from sqlalchemy import Engine, text

from pdvault_client import (
    Client,
    DataLossError,
    InvalidArgumentError,
    NotFoundError,
    PdvaultError,
    PermissionDeniedError,
)
from pdvault_client.errors import from_rpc_error
from tests.conftest import RunningServer
from tests.integration.attack_support import Tally, run_threads, same_receipt
from tests.samples import jpeg, noisy_image, pdf, png, png_bomb, saved

DOCUMENT_TABLES = (
    "documents",
    "document_variants",
    "document_segments",
    "document_blobs",
    "document_tombstones",
    "document_holds",
)


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in DOCUMENT_TABLES
        }


def orphan_segments(engine: Engine) -> int:
    """Segments that belong to no variant of a document and carry no blob mark (that the sweep
    would act on): unreachable and never cleaned."""
    with engine.connect() as conn:
        n: int = conn.execute(
            text(
                "SELECT count(*) FROM document_segments s WHERE s.blob_id NOT IN "
                "(SELECT blob_id FROM document_variants) AND s.blob_id NOT IN "
                "(SELECT blob_id FROM document_blobs)"
            )
        ).scalar_one()
    return n


def upload(client: Client, subject: str, kind: str, content: bytes) -> str:
    return (
        client.documents()
        .upload(
            subject,
            kind,
            io.BytesIO(content),
            insurer_number_masked=kind == "health_insurance_card",
        )
        .id
    )


def read(client: Client, document_id: str, purpose: str, **kw: Any) -> bytes:
    out = io.BytesIO()
    client.documents().download(document_id, purpose, out, **kw)
    return out.getvalue()


# -- 1. uploads while the subject is shredded -----------------------------------------------------

UPLOADERS = 4
UPLOADS = 6  # per thread and round, at most
RACE_ROUNDS = {"sqlite": 3, "postgresql": 2}
SHRED_TRIES = 2000
# Health insurance cards are destroyed by a shred; passports are kept (legal = true: 7 years
# after the relationship ends), sealed under a retention key, readable by `legal` only.
KINDS = ("health_insurance_card", "passport")


def upload_race(uploaders: list[Client], ops: Client, subject: str, content: bytes) -> Tally:
    tally = Tally()
    start = threading.Barrier(len(uploaders) + 1, timeout=30)

    def uploader(n: int, client: Client) -> None:
        start.wait()
        for i in range(UPLOADS):
            try:
                kind = KINDS[(n + i) % 2]
                tally.add("uploaded", (upload(client, subject, kind, content), kind))
            except NotFoundError as exc:
                if exc.reason == "SUBJECT_DELETED":
                    return
                tally.add("unexpected", f"upload: {exc.code.name} {exc.reason}")
            except PdvaultError as exc:
                tally.add("unexpected", f"upload: {exc.code.name} {exc.reason}")

    def shredder() -> None:
        start.wait()
        for _ in range(SHRED_TRIES):
            try:
                tally.add("receipt", ops.subjects().shred(subject)["receipt"])
                return
            except NotFoundError as exc:
                if exc.reason != "SUBJECT_UNKNOWN":
                    tally.add("unexpected", f"shred: {exc.code.name} {exc.reason}")
                    return
            except PdvaultError as exc:
                tally.add("unexpected", f"shred: {exc.code.name} {exc.reason}")
                return

    run_threads([*(lambda n=n, c=c: uploader(n, c) for n, c in enumerate(uploaders)), shredder])
    return tally


def shred_of_documents_held(
    engine: Engine, client: Callable[[str], Client], subject: str, tally: Tally
) -> list[str]:
    """What is wrong after a round of `upload_race` (the server's database, its clients)."""
    receipts = tally.get("receipt")
    if not receipts:
        return [f"{subject}: no receipt ({tally.get('unexpected')})"]
    [receipt] = receipts
    problems = []
    with engine.connect() as conn:
        live = conn.execute(
            text("SELECT count(*) FROM documents WHERE subject_id = :s"), {"s": subject}
        ).scalar_one()
        kept = {
            r.document_id: r.key_owner
            for r in conn.execute(
                text("SELECT document_id, key_owner FROM documents WHERE subject_id IS NULL")
            )
        }
    if live:
        problems.append(f"{subject}: {live} documents still linked to it after the receipt")
    retained = {r["documentId"] for r in receipt.get("retained", [])}
    uploaded = {doc for doc, _kind in tally.get("uploaded")}
    for doc in uploaded & set(kept):
        if doc not in retained or not kept[doc].startswith("#retention:"):
            problems.append(f"{subject}: {doc} kept but not as the receipt says ({kept[doc]})")
    # A passport is kept by law (7 years after the relationship ends): every passport whose
    # upload succeeded, before the receipt, must survive the shred under a retention key.
    lost = [doc for doc, kind in tally.get("uploaded") if kind == "passport" and doc not in kept]
    if lost:
        problems.append(f"{subject}: {len(lost)} passports destroyed despite the legal duty")
    if orphan_segments(engine):
        problems.append(f"{subject}: {orphan_segments(engine)} unreachable segments left")
    with client("kyc") as kyc:
        for doc in sorted(uploaded):
            try:
                read(kyc, doc, "identity_verification")
                problems.append(f"{subject}: {doc} readable by kyc after the receipt")
            except (NotFoundError, PermissionDeniedError):
                pass
        try:
            upload(kyc, subject, "passport", jpeg())
            problems.append(f"{subject}: an upload after the receipt succeeded")
        except NotFoundError as exc:
            if exc.reason != "SUBJECT_DELETED":
                problems.append(f"{subject}: a later upload refused with {exc.reason}")
    with client("legal") as legal:  # what is kept opens under its retention key
        for doc in sorted(uploaded & set(kept)):
            try:
                read(legal, doc, "third_party_provision", legal_basis="law_or_regulation")
            except PdvaultError as exc:
                problems.append(f"{subject}: kept {doc} unreadable for legal: {exc.code.name}")
    with client("ops") as ops:
        again = ops.subjects().shred(subject)["receipt"]
    if same_receipt(again) != same_receipt(receipt):
        problems.append(f"{subject}: a second shred gave another receipt: {again} after {receipt}")
    return problems


def test_uploads_racing_a_shred_leave_nothing_readable(server: RunningServer) -> None:
    """Four threads upload documents for a new subject while an operator shreds it: after
    the receipt no document of it is linked to it or readable by kyc, what is kept is kept
    under a retention key as the receipt says, no segment is left unreachable, a later upload
    is refused (SUBJECT_DELETED), and a repeat shred returns the same receipt."""
    content = jpeg()
    clients = [server.client("kyc") for _ in range(UPLOADERS)]
    problems: list[str] = []
    unexpected: list[str] = []
    rounds = RACE_ROUNDS[server.app.engine.dialect.name]
    try:
        with server.client("ops") as ops:
            for _ in range(rounds):
                subject = f"docrace-{uuid.uuid4().hex[:10]}"
                tally = upload_race(clients, ops, subject, content)
                unexpected += tally.get("unexpected")
                problems += shred_of_documents_held(
                    server.app.engine, server.client, subject, tally
                )
    finally:
        for c in clients:
            c.close()
    assert problems == []
    assert unexpected == []


# -- 2. hostile uploads ---------------------------------------------------------------------------

SMALL = jpeg()


def header(
    size: int = len(SMALL),
    media_type: str = "image/jpeg",
    subject: str = "user-1",
    kind: int = pb.DOCUMENT_TYPE_PASSPORT,
    **kw: Any,
) -> pb.UploadDocumentRequest:
    return pb.UploadDocumentRequest(
        header=pb.UploadHeader(
            subject=subject,
            document_type=pb.DocumentType.ValueType(kind),
            media_type=media_type,
            size=size,
            **kw,
        )
    )


def chunk(data: bytes) -> pb.UploadDocumentRequest:
    return pb.UploadDocumentRequest(chunk=data)


def whole(content: bytes, media_type: str, **kw: Any) -> list[pb.UploadDocumentRequest]:
    return [
        header(len(content), media_type, **kw),
        *(chunk(content[i : i + 65536]) for i in range(0, len(content), 65536)),
    ]


def many_pages() -> bytes:
    return saved(pdf(pages=21))


# (case, the messages, the field and rule of the first violation)
HOSTILE: list[tuple[str, list[pb.UploadDocumentRequest], str, str]] = [
    ("no message", [], "header", "upload.header_first"),
    ("a chunk first", [chunk(SMALL)], "header", "upload.header_first"),
    ("the header twice", [header(), header()], "header", "upload.header_twice"),
    (
        "a header after chunks",
        [header(), chunk(SMALL[:10]), header()],
        "header",
        "upload.header_twice",
    ),
    ("an empty upload", [header(size=0)], "header.size", "document.max_bytes"),
    ("a size and no chunk", [header()], "header.size", "document.size_mismatch"),
    ("a chunk of 0 bytes", [header(), chunk(b"")], "chunk", "upload.chunk_size"),
    (
        "a chunk over 256 KiB",
        [header(size=300_000), chunk(b"\xff" * 300_000)],
        "chunk",
        "upload.chunk_size",
    ),
    ("over max_bytes", [header(size=20 * 1024 * 1024 + 1)], "header.size", "document.max_bytes"),
    ("a negative size", [header(size=-1)], "header.size", "document.max_bytes"),
    (
        "a chunk after the last",
        [*whole(SMALL, "image/jpeg"), chunk(b"x")],
        "header.size",
        "document.size_mismatch",
    ),
    ("no media type", whole(SMALL, ""), "header.media_type", "document.media_type"),
    (
        "a media type not allowed",
        whole(SMALL, "image/gif"),
        "header.media_type",
        "document.media_type",
    ),
    (
        "a huge media type",
        whole(SMALL, "image/" + "ü" * 5000),
        "header.media_type",
        "document.media_type",
    ),
    ("a PNG declared a JPEG", whole(png(), "image/jpeg"), "header.media_type", "document.mismatch"),
    (
        "an executable",
        whole(b"\x7fELF\x02\x01\x01" + b"\0" * 200, "image/jpeg"),
        "content",
        "document.media_type",
    ),
    ("an image bomb", whole(png_bomb(), "image/png"), "content", "document.image_bomb"),
    (
        "a PDF over max_pages",
        whole(many_pages(), "application/pdf"),
        "content",
        "document.pdf_pages",
    ),
    (
        "a My Number card back",
        whole(SMALL, "image/jpeg", kind=pb.DOCUMENT_TYPE_MY_NUMBER_CARD_BACK),
        "header.document_type",
        "document.my_number_card_back",
    ),
    (
        "an unknown type",
        whole(SMALL, "image/jpeg", kind=999),
        "header.document_type",
        "document_type.unknown",
    ),
    (
        "no type",
        whole(SMALL, "image/jpeg", kind=0),
        "header.document_type",
        "document_type.unknown",
    ),
    (
        "an unmasked insurance card",
        whole(SMALL, "image/jpeg", kind=pb.DOCUMENT_TYPE_HEALTH_INSURANCE_CARD),
        "header.insurer_number_masked",
        "document.insurer_number_masked",
    ),
    (
        "a subject with a NUL",
        whole(SMALL, "image/jpeg", subject="user\x00-1"),
        "header.subject_id",
        "subject.syntax",
    ),
    (
        "a subject with a newline",
        whole(SMALL, "image/jpeg", subject="user-1\nINFO forged"),
        "header.subject_id",
        "subject.syntax",
    ),
    (
        "a unicode subject",
        whole(SMALL, "image/jpeg", subject="利用者-1"),
        "header.subject_id",
        "subject.syntax",
    ),
    (
        "a huge subject",
        whole(SMALL, "image/jpeg", subject="a" * 100_000),
        "header.subject_id",
        "subject.syntax",
    ),
    (
        "a short sha256",
        whole(SMALL, "image/jpeg", sha256=b"\x01" * 31),
        "header.sha256",
        "document.sha256",
    ),
    (
        "a wrong sha256",
        whole(SMALL, "image/jpeg", sha256=b"\x01" * 32),
        "header.sha256",
        "document.sha256_mismatch",
    ),
]


def raw_upload(
    channel: grpc.Channel, key: str, messages: Iterable[pb.UploadDocumentRequest]
) -> PdvaultError | pb.UploadDocumentResponse:
    stub: Any = pb_grpc.DocumentServiceStub(channel)
    try:
        answer: pb.UploadDocumentResponse = stub.UploadDocument(
            iter(list(messages)), metadata=(("authorization", f"Bearer {key}"),), timeout=30
        )
        return answer
    except grpc.RpcError as err:
        return from_rpc_error(err)


def hostile_uploads_are_refused_by_field_and_rule_and_keep_nothing(
    server: RunningServer,
) -> None:
    """Each hostile upload gets INVALID_ARGUMENT naming the field and the rule (never UNKNOWN
    or INTERNAL), its message echoes nothing it was sent, and no row of any document table is
    left by it."""
    key = server.credentials()["kyc"]
    before = counts(server.app.engine)
    wrong = []
    with server.channel() as channel:
        for case, messages, field, rule in HOSTILE:
            got = raw_upload(channel, key, messages)
            if not isinstance(got, InvalidArgumentError):
                wrong.append(f"{case}: {got!r}")
                continue
            first = got.violations[0] if got.violations else None
            if first is None or (first.field, first.rule) != (field, rule):
                wrong.append(f"{case}: {got.violations} ({got})")
            if "forged" in str(got) or "利用者" in str(got) or "ü" in str(got):
                wrong.append(f"{case}: the error echoes the input: {got}")
        after = counts(server.app.engine)
    assert wrong == []
    assert after == before


def more_bytes_than_declared_are_refused_at_once(server: RunningServer) -> None:
    """A stream that declares 1 KiB and goes on sending 256 KiB chunks (up to 100: 25 MiB,
    more than max_bytes) is refused at the first chunk too many: the sender waits after it
    for the answer (a bounded wait), and the answer comes before another chunk is sent."""
    key = server.credentials()["kyc"]
    sent = 0
    answered = threading.Event()

    def flood() -> Iterator[pb.UploadDocumentRequest]:
        nonlocal sent
        yield header(size=1024)
        for _ in range(100):
            if answered.is_set():
                return
            sent += 1
            yield chunk(b"\xff" * (256 * 1024))
            answered.wait(10)

    with server.channel() as channel:
        stub: Any = pb_grpc.DocumentServiceStub(channel)
        future = stub.UploadDocument.future(
            flood(), metadata=(("authorization", f"Bearer {key}"),), timeout=60
        )
        future.add_done_callback(lambda _f: answered.set())
        try:
            future.result()
            got: PdvaultError | None = None
        except grpc.RpcError as err:
            got = from_rpc_error(err)
    assert isinstance(got, InvalidArgumentError)
    assert [(v.field, v.rule) for v in got.violations] == [
        ("header.size", "document.size_mismatch")
    ]
    assert sent == 1, f"{sent} chunks of 256 KiB were sent before the refusal"
    assert orphan_segments(server.app.engine) == 0


def writing(engine: Engine) -> int:
    """Segments of uploads not committed yet (their blobs marked `writing`)."""
    with engine.connect() as conn:
        n: int = conn.execute(
            text(
                "SELECT count(*) FROM document_segments WHERE blob_id IN "
                "(SELECT blob_id FROM document_blobs WHERE state = 'writing')"
            )
        ).scalar_one()
    return n


CANCEL_TRIES = 3
ENDED = text(
    "SELECT count(*) FROM audit_events WHERE rule = 'upload:cancelled' OR "
    "(action = 'document_upload' AND outcome = 'refused')"
)


def cancelled_mid_seal_keeps_nothing(server: RunningServer) -> None:
    """An upload cancelled by its client once every chunk is handed over (the server
    receiving, checking or sealing it): the server audits it as ended, keeps nothing of it and
    lists nothing. (If the server answered before the cancel reached it, the upload simply
    succeeded: that try is cleaned up and made again, a bounded number of times.)"""
    engine = server.app.engine
    content = jpeg(noisy_image(1600, 1200))
    key = server.credentials()["kyc"]
    before = counts(engine)
    caught = False
    with server.channel() as channel, server.client("ops") as ops:
        stub: Any = pb_grpc.DocumentServiceStub(channel)
        for _ in range(CANCEL_TRIES):
            with engine.connect() as conn:
                ended_before = conn.execute(ENDED).scalar_one()
            sent = threading.Event()

            def requests(done: threading.Event = sent) -> Iterator[pb.UploadDocumentRequest]:
                yield from whole(content, "image/jpeg", subject="cancelled-1")
                done.set()  # every chunk handed over

            future = stub.UploadDocument.future(
                requests(), metadata=(("authorization", f"Bearer {key}"),), timeout=60
            )
            sent.wait(30)
            cancelled = future.cancel()
            ended = 0
            for _ in range(40):  # until the server has finished with the upload
                with engine.connect() as conn:
                    ended = conn.execute(ENDED).scalar_one() - ended_before
                idle = not writing(engine) and not _marks(engine)
                if idle and (ended or not cancelled):
                    break
                time.sleep(0.05)
            listed = ops.documents().list("cancelled-1")
            if cancelled and ended:
                # stopped while it was sent (to the server, a stream that ends short of its
                # size), stopped before the commit, or destroyed after it
                assert ended == 1
                assert listed == []
                caught = True
                break
            for d in listed:  # the server answered first: the upload succeeded
                ops.documents().delete(d.id)
    assert caught, "the server answered every upload before its cancel reached it"
    after = counts(engine)
    assert after["document_segments"] == before["document_segments"]
    assert orphan_segments(engine) == 0


def _marks(engine: Engine) -> int:
    with engine.connect() as conn:
        n: int = conn.execute(text("SELECT count(*) FROM document_blobs")).scalar_one()
    return n


# -- hostile reads and unary fields -----------------------------------------------------------


def hostile_read_and_hold_fields_are_invalid_argument(server: RunningServer) -> None:
    """The other fields a caller sends (a purpose, a justification, a hold id, a reason, a
    document id, a page token): huge, unicode or with control characters, each is refused
    with INVALID_ARGUMENT naming the field, never INTERNAL or UNKNOWN."""
    with server.client("kyc") as kyc:
        doc = upload(kyc, "user-1", "passport", SMALL)
    wrong = []

    def expect(case: str, field: str, call: Any) -> None:
        try:
            call()
            wrong.append(f"{case}: accepted")
        except InvalidArgumentError as exc:
            if field not in [v.field for v in exc.violations]:
                wrong.append(f"{case}: {exc.violations} ({exc})")
        except PdvaultError as exc:
            wrong.append(f"{case}: {exc.code.name} {exc.reason} {exc}")

    with server.client("kyc") as kyc, server.client("legal") as legal:
        d = kyc.documents()
        expect("a huge purpose", "purpose", lambda: read(kyc, doc, "p" * 10_000))
        expect("a unicode purpose", "purpose", lambda: read(kyc, doc, "本人確認"))
        expect("a purpose with a NUL", "purpose", lambda: read(kyc, doc, "identity\x00"))
        expect(
            "a justification with a NUL",
            "justification",
            lambda: read(kyc, doc, "identity_verification", justification="case\x001"),
        )
        expect(
            "a justification with a newline",
            "justification",
            lambda: read(kyc, doc, "identity_verification", justification="a\nINFO forged"),
        )
        expect(
            "a huge justification",
            "justification",
            lambda: read(kyc, doc, "identity_verification", justification="j" * 300),
        )
        expect("a huge document id", "document_id", lambda: d.show("doc_" + "a" * 10_000))
        expect("a document id with a NUL", "document_id", lambda: d.show("doc_\x00"))
        ld = legal.documents()
        expect("a hold reason with a NUL", "reason", lambda: ld.hold(doc, "case\x00"))
        expect("a huge hold reason", "reason", lambda: ld.hold(doc, "r" * 10_000))
        expect("a hold id with a NUL", "hold_id", lambda: ld.release(doc, "h\x00"))
        expect("a huge hold id", "hold_id", lambda: ld.release(doc, "h" * 10_000))
    assert wrong == []
    with server.client("kyc") as kyc:
        assert read(kyc, doc, "identity_verification") == SMALL  # nothing broke


# -- 5. access, tampering, canaries -------------------------------------------------------------


def refusal(
    client: Client, document_id: str, purpose: str
) -> tuple[str, str, str, tuple[Any, ...]]:
    try:
        read(client, document_id, purpose)
    except PdvaultError as exc:
        return exc.code.name, exc.reason, str(exc), exc.violations
    return ("OK", "", "", ())


def unknown_foreign_and_forbidden_documents_look_alike(server: RunningServer) -> None:
    """A document of another subject read for a purpose the caller has but the category does
    not allow, a caller that may not read documents, and an id never issued: the same code,
    reason and message; the metadata call likewise."""
    with server.client("kyc") as kyc:
        doc = upload(kyc, "user-2", "passport", SMALL)
    unknown = "doc_" + "a" * 26
    with server.client("shipping") as shipping, server.client("kyc") as kyc:
        answers = {
            refusal(shipping, doc, "product_shipping"),
            refusal(shipping, unknown, "product_shipping"),
            refusal(kyc, unknown, "identity_verification"),
        }
        shows: set[tuple[str, ...]] = set()
        for caller in ("shipping", "payment"):
            with server.client(caller) as c:
                for d in (doc, unknown):
                    try:
                        c.documents().show(d)
                        shows.add(("OK",))
                    except PdvaultError as exc:
                        shows.add((exc.code.name, exc.reason, str(exc)))
    assert len(answers) == 1, answers
    assert next(iter(answers))[0] == "PERMISSION_DENIED"
    assert len(shows) == 1, shows


def swap(engine: Engine, statements: list[tuple[str, dict[str, Any]]]) -> None:
    with engine.begin() as conn:
        for sql, params in statements:
            conn.execute(text(sql), params)


def blob_of(engine: Engine, doc: str) -> str:
    with engine.connect() as conn:
        b: str = conn.execute(
            text(
                "SELECT blob_id FROM document_variants"
                " WHERE document_id = :d AND variant = 'original'"
            ),
            {"d": doc},
        ).scalar_one()
    return b


def swapped_or_reordered_segments_end_with_data_loss(server: RunningServer) -> None:
    """Ciphertext segments swapped between two documents of the same size, reordered within
    one or the last one deleted, or a variant row given another document's blob, header and
    wrapped key, in the database: the download ends with DATA_LOSS, never OK."""
    big = jpeg(noisy_image())  # two 64 KiB segments
    with server.client("kyc") as kyc:
        a = upload(kyc, "user-3", "passport", big)
        b = upload(kyc, "user-4", "passport", big)
        c = upload(kyc, "user-3", "passport", big)
        d = upload(kyc, "user-3", "passport", big)
        e = upload(kyc, "user-5", "passport", big)
        f = upload(kyc, "user-5", "passport", big)
    engine = server.app.engine
    ba, bb, bc = blob_of(engine, a), blob_of(engine, b), blob_of(engine, c)
    with engine.connect() as conn:
        segments = conn.execute(
            text("SELECT count(*) FROM document_segments WHERE blob_id = :b"), {"b": ba}
        ).scalar_one()
    assert segments >= 2
    # a's segment 0 <-> b's segment 0 (same sizes, same positions)
    swap(
        engine,
        [
            (
                "UPDATE document_segments SET blob_id = 'tmp' WHERE blob_id = :a AND seq = 0",
                {"a": ba},
            ),
            (
                "UPDATE document_segments SET blob_id = :a WHERE blob_id = :b AND seq = 0",
                {"a": ba, "b": bb},
            ),
            ("UPDATE document_segments SET blob_id = :b WHERE blob_id = 'tmp'", {"b": bb}),
        ],
    )
    # c's segments 0 and 1 exchanged
    swap(
        engine,
        [
            ("UPDATE document_segments SET seq = -1 WHERE blob_id = :c AND seq = 0", {"c": bc}),
            ("UPDATE document_segments SET seq = 0 WHERE blob_id = :c AND seq = 1", {"c": bc}),
            ("UPDATE document_segments SET seq = 1 WHERE blob_id = :c AND seq = -1", {"c": bc}),
        ],
    )
    # d's original variant given e's blob, header and wrapped key (a whole row spliced in)
    with engine.connect() as conn:
        theirs = conn.execute(
            text(
                "SELECT blob_id, header, wrapped_key FROM document_variants"
                " WHERE document_id = :e AND variant = 'original'"
            ),
            {"e": e},
        ).one()
    swap(
        engine,
        [
            (
                "UPDATE document_variants SET blob_id = :b, header = :h, wrapped_key = :w"
                " WHERE document_id = :d AND variant = 'original'",
                {"b": theirs.blob_id, "h": theirs.header, "w": theirs.wrapped_key, "d": d},
            )
        ],
    )
    # f's last segment gone (a truncated stream)
    swap(
        engine,
        [
            (
                "DELETE FROM document_segments WHERE blob_id = :f AND seq ="
                " (SELECT max(seq) FROM document_segments WHERE blob_id = :f)",
                {"f": blob_of(engine, f)},
            )
        ],
    )
    outcomes = []
    with server.client("kyc") as kyc:
        for doc in (a, b, c, d, f):
            try:
                read(kyc, doc, "identity_verification")
                outcomes.append("OK")
            except DataLossError:
                outcomes.append("DATA_LOSS")
            except PdvaultError as exc:
                outcomes.append(exc.code.name)
    assert outcomes == ["DATA_LOSS"] * 5


CANARY_SUBJECT = "canary-subject-7f3a"
CANARY_TEXT = "CANARY-CONTENT-93b1"


def no_document_id_content_or_subject_in_logs_or_errors(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Upload, read, refuse, tamper, delete: no log line names a document id, the subject or
    the content, and no error message a caller gets does either."""
    caplog.set_level(logging.DEBUG)
    content = png(text={"Comment": CANARY_TEXT})
    messages: list[str] = []
    with (
        server.client("kyc") as kyc,
        server.client("shipping") as shipping,
        server.client("ops") as ops,
    ):
        doc = upload(kyc, CANARY_SUBJECT, "passport", content)
        assert CANARY_TEXT.encode() in read(kyc, doc, "identity_verification")
        for attempt in (
            lambda: read(shipping, doc, "product_shipping"),
            lambda: read(kyc, doc, "identity_verification", variant="nonexistent"),
            lambda: ops.documents().delete(doc + "x"),
            lambda: kyc.documents().upload(
                CANARY_SUBJECT, "passport", io.BytesIO(content), media_type="image/jpeg"
            ),
        ):
            try:
                attempt()
            except (PdvaultError, ValueError) as exc:
                messages.append(f"{exc!r} {exc}")
        blob = blob_of(server.app.engine, doc)
        with server.app.engine.begin() as conn:
            conn.execute(
                text("UPDATE document_segments SET ciphertext = :c WHERE blob_id = :b"),
                {"c": b"\0" * 100, "b": blob},
            )
        try:
            read(kyc, doc, "identity_verification")
        except PdvaultError as exc:
            messages.append(f"{exc!r} {exc}")
        ops.documents().delete(doc)
        try:
            read(kyc, doc, "identity_verification")
        except PdvaultError as exc:
            messages.append(f"{exc!r} {exc}")
    lines = [r.getMessage() for r in caplog.records]
    for canary in (doc, CANARY_SUBJECT, CANARY_TEXT):
        assert not [m for m in messages if canary in m], canary
        assert not [line for line in lines if canary in line], canary


# One server per database for each group (starting one costs more than the attacks).


def test_hostile_input_is_refused_by_field_and_rule(server: RunningServer) -> None:
    """Hostile uploads, a flood past the declared size, hostile fields of the other calls, an
    upload cancelled while it is sealed."""
    hostile_uploads_are_refused_by_field_and_rule_and_keep_nothing(server)
    more_bytes_than_declared_are_refused_at_once(server)
    hostile_read_and_hold_fields_are_invalid_argument(server)
    cancelled_mid_seal_keeps_nothing(server)


def test_reads_are_refused_alike_tampering_is_data_loss_and_nothing_leaks(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Unknown, foreign and forbidden ids; swapped and reordered segments; canaries."""
    unknown_foreign_and_forbidden_documents_look_alike(server)
    swapped_or_reordered_segments_end_with_data_loss(server)
    no_document_id_content_or_subject_in_logs_or_errors(server, caplog)

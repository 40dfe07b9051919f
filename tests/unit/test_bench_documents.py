"""bench.documents in its smallest configuration, for correctness only (no timing is asserted):
the documents it makes are what it says, its baselines cut and store the bytes as pdvault
does, and one in-process run, one validation and one gRPC round trip produce the figures the
report and the JSON need."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from bench import report
from bench.baselines import SegmentAead, SegmentTable, dv1_pieces
from bench.document_samples import MIB, camera_jpeg, pad_jpeg, scanned_pdf, small_validation_samples
from bench.document_transfers import CALLER, GrpcClient, settings
from bench.documents import (
    Options,
    _parser,
    evaluate,
    grpc_rounds,
    main,
    options_from,
    render,
    run,
    validation,
)
from vault.app import build_app
from vault.crypto.documents import DEFAULT_SEGMENT_SIZE, DocumentCrypto
from vault.domain.documents import DocumentBinding, DocumentId, MediaType, Variant
from vault.domain.secrets import Secret
from vault.media.inspect import ContentInspector
from vault.transport.server import ServerThread

SMALL = 64 * 1024


def _quiet(_message: str) -> None:
    pass


@pytest.mark.parametrize("size", [1, 65_479, 65_480, 65_481, 200_000, MIB])
def test_the_baseline_cuts_a_document_as_dv1_does(size: int) -> None:
    content = os.urandom(size)
    crypto = DocumentCrypto()
    binding = DocumentBinding(
        "d" * 64, DocumentId("doc_" + "a" * 26), Variant.ORIGINAL, MediaType.JPEG
    )
    sealer = crypto.sealer(Secret(os.urandom(32)), binding)
    sealed = sealer.push(content) + sealer.finish()
    raw = SegmentAead().seal(dv1_pieces(content))
    assert [len(s) for s in raw] == [len(s) for s in sealed]
    # Segment 0 is shorter by Tink's header (40 bytes); the others are full but the last.
    assert all(len(s) == DEFAULT_SEGMENT_SIZE for s in raw[1:-1])


def test_the_raw_table_reads_back_what_it_wrote(tmp_path: Path) -> None:
    table = SegmentTable(f"sqlite:///{tmp_path / 'raw.db'}")
    try:
        aead = SegmentAead()
        content = os.urandom(40 * DEFAULT_SEGMENT_SIZE)
        sealed = aead.seal(dv1_pieces(content))
        table.write("blob", sealed)  # three transactions of up to 16 rows
        assert table.read("blob", len(sealed)) == sealed
        assert b"".join(aead.open(sealed)) == content
        table.clear()
        assert table.read("blob", len(sealed)) == []
    finally:
        table.close()


def test_documents_are_exactly_their_size_and_pass_the_checks() -> None:
    inspector = ContentInspector()
    jpeg = camera_jpeg(SMALL)
    assert jpeg.size == SMALL
    found = inspector.inspect(bytearray(jpeg.content), MediaType.JPEG)
    assert found.sanitized is not None  # decoded and re-encoded: a real image
    scanned = scanned_pdf(SMALL, 2)
    assert inspector.inspect(bytearray(scanned.content), MediaType.PDF).pages == 2
    for sample in small_validation_samples():
        inspector.inspect(bytearray(sample.content), MediaType(sample.media_type))


@pytest.mark.parametrize("missing", [4, 5, 65_537, 65_538, 65_540, 65_541, 200_000])
def test_padding_reaches_the_size_in_comment_segments(missing: int) -> None:
    base = camera_jpeg(SMALL).content[:100]  # the start of a JPEG is enough
    assert len(pad_jpeg(base, len(base) + missing)) == len(base) + missing
    with pytest.raises(ValueError, match="4 bytes"):
        pad_jpeg(base, len(base) + 3)


def test_the_smallest_configuration_in_process(tmp_path: Path) -> None:
    opts = Options(dbs=("sqlite",), sizes=(SMALL,), parts=("inprocess",), rounds=1)
    out = run(opts, _quiet)
    [row] = out["in_process"]
    assert (row["size"], row["segments"], row["rounds"]) == (SMALL, 2, 1)
    keys = ("upload_mb_s", "download_mb_s", "aes_gcm_encrypt_mb_s", "db_write_mb_s")
    for key in (*keys, "upload_checked_mb_s"):
        assert math.isfinite(row[key])
        assert row[key] > 0
    assert row["memory"]["upload_traced_x"] >= 1  # the upload buffer at least
    out["meta"] = report.metadata(report.now())
    out["options"] = {"quick": True, "rounds": 1}
    out["targets"] = evaluate(out)
    assert {t["verdict"] for t in out["targets"]} <= {"PASS", "MISS"}
    assert len(out["targets"]) == 4
    text = render(out)
    assert "INSPECTOR STUB" in text
    assert "Targets" in text
    report.write_json(out, tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text())["in_process"][0]["segments"] == 2


def test_validation_runs_in_a_process_of_its_own(tmp_path: Path) -> None:
    opts = Options(validation_rounds=1)
    [row] = validation([small_validation_samples()[0]], tmp_path, opts, _quiet)
    assert row["bytes"] == SMALL
    assert row["sanitized_bytes"]  # decoded and re-encoded
    assert row["traced_peak_bytes"] > 0
    assert len(row["seconds"]) == 1


def test_a_grpc_round_trip(tmp_path: Path) -> None:
    app = build_app(settings(tmp_path / "data", ""))
    server = ServerThread(app, "127.0.0.1:0")
    try:
        keys = json.loads(app.settings.credentials_file.read_text())
        client = GrpcClient(f"127.0.0.1:{server.port}", keys[CALLER], "bench-unit")
        try:
            jpeg = camera_jpeg(SMALL)
            row = grpc_rounds("sqlite", client, os.getpid(), jpeg, Options(grpc_rounds=1))
        finally:
            client.close()
    finally:
        server.stop(grace=None)
        app.close()
    assert row["rounds"] == 1
    assert row["upload_mb_s"] > 0
    assert row["download_mb_s"] > 0
    assert len(row["server_rss"]["upload_growth_bytes"]) == 1


def test_options() -> None:
    opts = options_from(_parser().parse_args(["--quick", "--db", "sqlite", "--sizes", "0.0625"]))
    assert (opts.dbs, opts.sizes, opts.rounds) == (("sqlite",), (SMALL,), 3)
    assert main(["--sizes", "100"]) == 2  # over the 20 MiB upload limit
    assert main(["--only", "nothing"]) == 2

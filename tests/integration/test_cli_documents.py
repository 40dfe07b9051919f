"""`pdv document ...`, `pdv retention sweep` and `pdv subject export --with-documents` against
the real server, as the README's callers use them: kyc uploads and reads for identity
verification, ops lists, deletes and sweeps, legal holds.

In-process (`pdvault_client.cli.main`) against a test server on SQLite and PostgreSQL, as
test_cli_output.py; the last test runs `pdv serve` and `pdv document` as processes, as
test_cli.py does. tests/unit/test_cli_document_commands.py runs the same commands against a
scripted DocumentService."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select, update

from pdvault_client.cli import main
from tests import samples
from tests.conftest import RunningServer, pdv_env, spawn_serve
from vault.storage.tables import document_segments, document_variants

pytestmark = pytest.mark.documents


@dataclass
class Ran:
    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode()

    def json(self) -> Any:
        return json.loads(self.out)


Pdv = Callable[..., Ran]


@pytest.fixture
def pdv(
    server: RunningServer,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> Pdv:
    monkeypatch.setenv("PDV_ADDR", server.addr)
    monkeypatch.setenv("PDV_DATA_DIR", str(server.app.settings.data_dir))
    for var in ("PDV_API_KEY", "PDV_TLS_CA", "PDV_TLS_SERVER_NAME"):
        monkeypatch.delenv(var, raising=False)

    def run(*argv: str) -> Ran:
        code = main(list(argv))
        out = capsysbinary.readouterr()
        assert "Traceback" not in out.err.decode()
        return Ran(code, out.out, out.err.decode())

    return run


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "licence.jpg"
    path.write_bytes(samples.photo_with_location())
    return path


def upload(pdv: Pdv, path: Path, kind: str = "drivers_license", *more: str) -> str:
    ran = pdv(
        "document", "upload", "--caller", "kyc", "--subject", "user-42", "--type", kind, str(path),
        *more,
    )  # fmt: skip
    assert ran.code == 0, ran.err
    doc_id = ran.text.strip()
    assert doc_id.startswith("doc_")
    return doc_id


def test_upload_show_get_list(pdv: Pdv, photo: Path, tmp_path: Path) -> None:
    doc_id = upload(pdv, photo)

    shown = pdv("document", "show", "--caller", "kyc", doc_id)
    assert shown.code == 0, shown.err
    for line in (
        f"document: {doc_id}",
        "type: drivers_license",
        "media type: image/jpeg",
        f"size: {photo.stat().st_size} bytes",
        "verified: not yet",
        "holds: none",
    ):
        assert f"{line}\n" in shown.text
    assert "scan: " in shown.text
    assert "retention: documents.drivers_license: " in shown.text

    out = tmp_path / "out.jpg"
    got = pdv(
        "document", "get", "--caller", "kyc", "--purpose", "identity_verification", doc_id,
        "-o", str(out),
    )  # fmt: skip
    assert got.code == 0, got.err
    assert out.read_bytes() == photo.read_bytes()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert got.text == f"wrote {out} (original, image/jpeg, {photo.stat().st_size} bytes)\n"

    clean = tmp_path / "clean.jpg"
    got = pdv(
        "document", "get", "--caller", "kyc", "--purpose", "identity_verification", doc_id,
        "-o", str(clean), "--variant", "sanitized", "--justification", "ticket-7",
    )  # fmt: skip
    assert got.code == 0, got.err
    assert clean.read_bytes()[:3] == b"\xff\xd8\xff"
    assert samples.SECRET.encode() not in clean.read_bytes()

    listed = pdv("document", "list", "--caller", "ops", "user-42")
    assert listed.code == 0, listed.err
    [line] = listed.text.splitlines()
    assert line.split("\t")[:4] == [
        doc_id,
        "drivers_license",
        "image/jpeg",
        str(photo.stat().st_size),
    ]
    as_json = pdv("document", "list", "--caller", "ops", "user-42", "--output", "json").json()
    assert [d["documentId"] for d in as_json] == [doc_id]


def test_get_to_standard_output(pdv: Pdv, photo: Path) -> None:
    doc_id = upload(pdv, photo)
    got = pdv(
        "document", "get", "--caller", "kyc", "--purpose", "identity_verification", doc_id,
        "-o", "-",
    )  # fmt: skip
    assert (got.code, got.err) == (0, "")
    assert got.out == photo.read_bytes()


def test_png_and_pdf(pdv: Pdv, tmp_path: Path) -> None:
    png = tmp_path / "card.png"
    png.write_bytes(samples.png())
    pdf = tmp_path / "passport.pdf"
    pdf.write_bytes(samples.saved(samples.pdf(pages=2)))
    png_id = upload(pdv, png, "residence_card")
    pdf_id = upload(pdv, pdf, "passport")
    shown = pdv("document", "show", "--caller", "kyc", pdf_id, "--output", "json").json()
    assert (shown["mediaType"], shown["pages"]) == ("application/pdf", 2)
    assert (
        pdv("document", "show", "--caller", "kyc", png_id, "--output", "json").json()["mediaType"]
        == "image/png"
    )


def test_refusals(pdv: Pdv, photo: Path, tmp_path: Path) -> None:
    doc_id = upload(pdv, photo)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    out = downloads / "out.jpg"
    # A caller whose purpose does not permit documents, and an unknown id: the same answer.
    refused = pdv(
        "document", "get", "--caller", "shipping", "--purpose", "product_shipping", doc_id,
        "-o", str(out),
    )  # fmt: skip
    unknown = pdv(
        "document", "get", "--caller", "shipping", "--purpose", "product_shipping",
        "doc_" + "a" * 26, "-o", str(out),
    )  # fmt: skip
    assert (refused.code, unknown.code) == (4, 4)
    assert refused.err.startswith("PERMISSION_DENIED: ")
    assert refused.err == unknown.err.replace("doc_" + "a" * 26, doc_id)
    assert list(downloads.iterdir()) == []  # no file, no partial file either

    back = pdv(
        "document", "upload", "--caller", "kyc", "--subject", "user-42",
        "--type", "my_number_card_back", str(photo),
    )  # fmt: skip
    assert back.code == 3, back.err
    assert "document.my_number_card_back" in back.err

    unmasked = pdv(
        "document", "upload", "--caller", "kyc", "--subject", "user-42",
        "--type", "health_insurance_card", str(photo),
    )  # fmt: skip
    assert unmasked.code == 3, unmasked.err
    assert "document.insurer_number_masked" in unmasked.err
    upload(pdv, photo, "health_insurance_card", "--insurer-number-masked")

    executable = tmp_path / "scan.jpg"
    executable.write_bytes(samples.elf_executable())
    not_a_scan = pdv(
        "document", "upload", "--caller", "kyc", "--subject", "user-42",
        "--type", "passport", str(executable), "--media-type", "image/jpeg",
    )  # fmt: skip
    assert not_a_scan.code == 3, not_a_scan.err

    not_kyc = pdv(
        "document", "upload", "--caller", "shipping", "--subject", "user-42",
        "--type", "passport", str(photo),
    )  # fmt: skip
    assert not_kyc.code == 4, not_kyc.err


def test_hold_blocks_delete_until_released(pdv: Pdv, photo: Path) -> None:
    doc_id = upload(pdv, photo)
    held = pdv("document", "hold", "--caller", "legal", doc_id, "--reason", "case 2026-118")
    assert held.code == 0, held.err
    hold_id = held.text.strip()
    shown = pdv("document", "show", "--caller", "ops", doc_id, "--output", "json").json()
    assert [(h["holdId"], h["reason"]) for h in shown["holds"]] == [(hold_id, "case 2026-118")]

    refused = pdv("document", "delete", "--caller", "ops", doc_id)
    assert refused.code == 4, refused.err
    assert refused.err.startswith("FAILED_PRECONDITION: ")

    released = pdv(
        "document", "hold", "--caller", "legal", doc_id, "--release", "--hold-id", hold_id
    )  # fmt: skip
    assert (released.code, released.text) == (0, f"released 1 hold on {doc_id}\n"), released.err
    assert pdv("document", "delete", "--caller", "ops", doc_id).code == 0


def test_a_hold_by_a_caller_without_holds_is_refused(pdv: Pdv, photo: Path) -> None:
    doc_id = upload(pdv, photo)
    refused = pdv("document", "hold", "--caller", "kyc", doc_id, "--reason", "case 2026-118")
    assert refused.code == 4, refused.err
    assert refused.err.startswith("PERMISSION_DENIED: ")
    assert pdv("document", "hold", "--caller", "kyc", doc_id, "--release").code == 4


def test_delete(pdv: Pdv, photo: Path, tmp_path: Path) -> None:
    doc_id = upload(pdv, photo)
    assert pdv("document", "delete", "--caller", "kyc", doc_id).code == 4  # operators only
    deleted = pdv("document", "delete", "--caller", "ops", doc_id, "--output", "json")
    assert deleted.code == 0, deleted.err
    assert deleted.json()["documentId"] == doc_id
    assert deleted.json()["destroyedAt"].endswith("Z")
    assert pdv("document", "show", "--caller", "ops", doc_id).code == 4
    gone = pdv(
        "document", "get", "--caller", "kyc", "--purpose", "identity_verification", doc_id,
        "-o", str(tmp_path / "out.jpg"),
    )  # fmt: skip
    assert gone.code == 4, gone.err
    assert not (tmp_path / "out.jpg").exists()
    assert pdv("document", "list", "--caller", "ops", "user-42").text == ""


def test_verified_starts_the_retention_period(pdv: Pdv, photo: Path) -> None:
    """Health insurance cards are kept 30 days from verification (the default policy)."""
    doc_id = upload(pdv, photo, "health_insurance_card", "--insurer-number-masked")
    before = pdv("document", "show", "--caller", "kyc", doc_id, "--output", "json").json()
    assert before["verifiedAt"] is None
    assert before["insurerNumberMasked"] is True
    assert (before["retention"]["trigger"], before["retention"]["keep"]) == ("verified", "P30D")
    ran = pdv("document", "verified", "--caller", "kyc", doc_id)
    assert ran.code == 0, ran.err
    assert ran.text.startswith(f"{doc_id} verified at ")
    assert "; kept until " in ran.text
    after = pdv("document", "show", "--caller", "kyc", doc_id, "--output", "json").json()
    verified_at = datetime.fromisoformat(after["verifiedAt"])
    due_at = datetime.fromisoformat(after["retention"]["dueAt"])
    assert due_at - verified_at == timedelta(days=30)
    shown = pdv("document", "show", "--caller", "kyc", doc_id).text
    assert "retention: documents.health_insurance_card: P30D from verified, then shred\n" in shown
    assert "insurer number masked: yes\n" in shown


def test_retention_sweep_is_document_sweep(pdv: Pdv) -> None:
    first = pdv("retention", "sweep", "--caller", "ops", "--output", "json")
    second = pdv("document", "sweep", "--caller", "ops", "--output", "json")
    assert (first.code, second.code) == (0, 0), first.err + second.err
    assert set(first.json()) == set(second.json())
    assert first.json()["sweepId"] != second.json()["sweepId"]
    assert pdv("retention", "sweep", "--caller", "kyc").code == 4


def test_subject_export_lists_and_writes_the_documents(
    pdv: Pdv, photo: Path, tmp_path: Path
) -> None:
    doc_id = upload(pdv, photo)
    listed = pdv("subject", "export", "user-42", "--caller", "ops", "--output", "json")
    assert listed.code == 0, listed.err
    [entry] = listed.json()["documents"]
    assert entry["documentId"] == doc_id
    assert "files" not in entry

    directory = tmp_path / "disclosure"
    ran = pdv(
        "subject", "export", "user-42", "--caller", "ops", "--output", "json",
        "--with-documents", str(directory),
    )  # fmt: skip
    assert ran.code == 0, ran.err
    [entry] = ran.json()["documents"]
    files = {variant: Path(path) for variant, path in entry["files"].items()}
    assert files["original"] == directory / f"{doc_id}.jpg"
    assert files["original"].read_bytes() == photo.read_bytes()
    assert files["sanitized"] == directory / f"{doc_id}.sanitized.jpg"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    # Again into the same directory: nothing is overwritten.
    again = pdv(
        "subject", "export", "user-42", "--caller", "ops", "--with-documents", str(directory)
    )
    assert again.code == 2
    assert again.err.endswith("exists: export into an empty directory\n")


def large_photo(path: Path) -> Path:
    """A noisy photo of a few MiB: dozens of chunks each way, and of 64 KiB segments."""
    noise = Image.effect_noise((1600, 1200), 90).convert("RGB")
    noise.save(path, "JPEG", quality=95)
    assert path.stat().st_size > 1024 * 1024
    return path


def test_a_large_document_round_trip(pdv: Pdv, tmp_path: Path) -> None:
    photo = large_photo(tmp_path / "large.jpg")
    doc_id = upload(pdv, photo, "passport", "--progress")
    out = tmp_path / "out.jpg"
    got = pdv(
        "document", "get", "--caller", "kyc", "--purpose", "identity_verification", doc_id,
        "-o", str(out),
    )  # fmt: skip
    assert got.code == 0, got.err
    assert out.read_bytes() == photo.read_bytes()


def test_data_loss_mid_stream_leaves_no_file(
    pdv: Pdv, server: RunningServer, tmp_path: Path
) -> None:
    """A stored segment that fails its integrity check, well into the document: the chunks
    before it arrive and are written, then DATA_LOSS; the partial file goes, exit status 1."""
    photo = large_photo(tmp_path / "large.jpg")
    doc_id = upload(pdv, photo, "passport")
    with server.app.engine.begin() as conn:
        blob = conn.execute(
            select(document_variants.c.blob_id).where(
                document_variants.c.document_id == doc_id,
                document_variants.c.variant == "original",
            )
        ).scalar_one()
        where = (document_segments.c.blob_id == blob) & (document_segments.c.seq == 10)
        sealed = conn.execute(select(document_segments.c.ciphertext).where(where)).scalar_one()
        conn.execute(
            update(document_segments)
            .where(where)
            .values(ciphertext=sealed[:-1] + bytes([sealed[-1] ^ 1]))
        )
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    got = pdv(
        "document", "get", "--caller", "kyc", "--purpose", "identity_verification", doc_id,
        "-o", str(downloads / "out.jpg"),
    )  # fmt: skip
    assert got.code == 1, got.err
    assert got.err.startswith("DATA_LOSS: "), got.err
    assert got.err.count("\n") == 1
    assert list(downloads.iterdir()) == []


# -- as a user runs it ----------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, str]]:
    proc, addr, log = spawn_serve(tmp_path)
    try:
        yield pdv_env(PDV_ADDR=addr, PDV_DATA_DIR=str(tmp_path / ".pdvault"))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        assert proc.returncode == 0, log.read_text()


@pytest.mark.slow
def test_readme_documents_walk_through(served: dict[str, str], photo: Path, tmp_path: Path) -> None:
    def pdv(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "pdvault_client.cli", *args],
            cwd=tmp_path,
            env=served,
            capture_output=True,
            timeout=60,
            check=False,
        )

    up = pdv(
        "document", "upload", "--caller", "kyc", "--subject", "user-42",
        "--type", "drivers_license", str(photo), "--progress",
    )  # fmt: skip
    assert up.returncode == 0, up.stderr
    doc_id = up.stdout.decode().strip()
    assert up.stderr.decode().endswith("(100%)\n")
    got = pdv(
        "document", "get", "--caller", "kyc", "--purpose", "identity_verification", doc_id,
        "-o", "-",
    )  # fmt: skip
    assert (got.returncode, got.stdout) == (0, photo.read_bytes()), got.stderr
    again = pdv(
        "document", "get", "--caller", "kyc", "--purpose", "identity_verification", doc_id,
        "-o", str(photo),
    )  # fmt: skip
    assert again.returncode == 2
    assert again.stderr.decode().endswith("exists: choose another file, or --force\n")
    assert b"Traceback" not in again.stderr
    assert os.listdir(tmp_path).count(photo.name) == 1

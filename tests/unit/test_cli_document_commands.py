"""`pdv document ...` through the real client library, against the scripted DocumentService of
document_fake.py: what each command prints, where a document's content goes, and what each
failure becomes (one line on standard error, the exit status of its kind, never a traceback,
never a partial file). test_cli_options.py checks that every flag reaches its call;
tests/integration/test_cli_documents.py runs the same commands against the real server."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.rpc import code_pb2

from pdvault_client.cli import documents, main, parser
from tests.unit.document_fake import DOC_ID, JPEG, Fake, serving


@dataclass
class Ran:
    code: int
    out: bytes
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Pdv = Callable[..., Ran]


@pytest.fixture
def fake() -> Iterator[Fake]:
    with serving() as running:
        yield running


@pytest.fixture
def pdv(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> Pdv:
    monkeypatch.setenv("PDV_ADDR", fake.addr)
    monkeypatch.setenv("PDV_API_KEY", "key-test")
    for var in ("PDV_TLS_CA", "PDV_TLS_SERVER_NAME"):
        monkeypatch.delenv(var, raising=False)

    def run(*argv: str) -> Ran:
        code = main(list(argv))
        out = capsysbinary.readouterr()
        return Ran(code, out.out, out.err.decode())

    return run


def one_line(ran: Ran, code: int, starts: str) -> None:
    assert "Traceback" not in ran.err
    assert ran.err.count("\n") == 1, ran.err
    assert ran.err.startswith(starts), ran.err
    assert ran.code == code, ran.err


@pytest.fixture
def scan(tmp_path: Path) -> Path:
    path = tmp_path / "licence.jpg"
    path.write_bytes(JPEG)
    return path


# -- upload ---------------------------------------------------------------------------------------


def test_upload_prints_the_id(pdv: Pdv, fake: Fake, scan: Path) -> None:
    ran = pdv("document", "upload", "--subject", "user-42", "--type", "drivers_license", str(scan))
    assert (ran.code, ran.out, ran.err) == (0, f"{DOC_ID}\n".encode(), "")
    header = fake.script.uploads[0][0].header
    assert (header.subject, header.media_type, header.size) == ("user-42", "image/jpeg", len(JPEG))


def test_upload_json_is_the_document(pdv: Pdv, scan: Path) -> None:
    ran = pdv(
        "document", "upload", "--subject", "u", "--type", "passport", str(scan), "--output", "json"
    )
    assert ran.code == 0
    answer = ran.json()
    assert answer["documentId"] == DOC_ID
    assert answer["documentType"] == "drivers_license"
    assert answer["variants"][0] == {
        "variant": "original",
        "mediaType": "image/jpeg",
        "size": len(JPEG),
    }
    assert answer["createdAt"] == "2026-11-29T16:09:44Z"
    assert answer["verifiedAt"] is None


def test_upload_of_a_missing_file_is_a_usage_error(pdv: Pdv, fake: Fake, tmp_path: Path) -> None:
    ran = pdv(
        "document", "upload", "--subject", "u", "--type", "passport", str(tmp_path / "no.jpg")
    )
    one_line(ran, 2, f"pdv document upload: cannot read {tmp_path / 'no.jpg'}: No such file")
    assert fake.script.uploads == []


def test_upload_of_content_no_type_fits_is_invalid(pdv: Pdv, fake: Fake, tmp_path: Path) -> None:
    path = tmp_path / "scan.gif"
    path.write_bytes(b"GIF89a....")
    ran = pdv("document", "upload", "--subject", "u", "--type", "passport", str(path))
    one_line(ran, 3, "pdv document upload: the content does not begin as a JPEG, PNG or PDF")
    assert fake.script.uploads == []


def test_a_refused_upload_is_one_line_with_its_status(pdv: Pdv, fake: Fake, scan: Path) -> None:
    fake.script.upload_failure = (
        code_pb2.PERMISSION_DENIED,
        "caller 'ops' may not store documents",
    )
    ran = pdv("document", "upload", "--subject", "u", "--type", "passport", str(scan))
    one_line(ran, 4, "PERMISSION_DENIED: caller 'ops' may not store documents")


def test_a_file_changing_under_way_is_one_line(
    pdv: Pdv, scan: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def change(_meter: object, sent: int, total: int) -> None:
        scan.write_bytes(JPEG[:100])

    monkeypatch.setattr(documents._Meter, "__call__", change)
    ran = pdv("document", "upload", "--subject", "u", "--type", "passport", str(scan), "--progress")
    one_line(ran, 1, "pdv document upload: the file changed while it was uploaded")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_redraws_one_line() -> None:
    err = Terminal()
    meter = documents._Meter.for_upload(False, documents.PROGRESS_FROM, err)
    assert meter is not None
    meter(1024 * 1024, 2 * 1024 * 1024)
    meter(2 * 1024 * 1024, 2 * 1024 * 1024)
    meter.finish()
    assert err.getvalue() == (
        "\ruploaded 1.0 MiB of 2.0 MiB (50%)\ruploaded 2.0 MiB of 2.0 MiB (100%)\n"
    )
    assert documents._Meter.for_upload(False, documents.PROGRESS_FROM - 1, Terminal()) is None


def test_progress_elsewhere_only_when_asked_and_a_line_a_tenth() -> None:
    assert documents._Meter.for_upload(False, 10**9, io.StringIO()) is None
    err = io.StringIO()
    meter = documents._Meter.for_upload(True, 100, err)
    assert meter is not None
    for sent in range(0, 101, 5):
        meter(sent, 100)
    meter.finish()
    assert err.getvalue().splitlines()[::5] == [
        "uploaded 0.0 MiB of 0.0 MiB (0%)",
        "uploaded 0.0 MiB of 0.0 MiB (50%)",
        "uploaded 0.0 MiB of 0.0 MiB (100%)",
    ]
    assert len(err.getvalue().splitlines()) == 11


# -- get ------------------------------------------------------------------------------------------


def test_get_writes_the_file_and_says_so(pdv: Pdv, fake: Fake, tmp_path: Path) -> None:
    out = tmp_path / "out.jpg"
    ran = pdv("document", "get", "--purpose", "identity_verification", DOC_ID, "-o", str(out))
    assert ran.code == 0, ran.err
    assert ran.out == f"wrote {out} (original, image/jpeg, {len(JPEG)} bytes)\n".encode()
    assert out.read_bytes() == JPEG


def test_get_to_standard_output_is_the_content_alone(pdv: Pdv) -> None:
    ran = pdv("document", "get", "--purpose", "p", DOC_ID, "-o", "-")
    assert (ran.code, ran.err) == (0, "")
    assert ran.out == JPEG


def test_get_never_overwrites_without_force(pdv: Pdv, fake: Fake, tmp_path: Path) -> None:
    out = tmp_path / "out.jpg"
    out.write_bytes(b"mine")
    ran = pdv("document", "get", "--purpose", "p", DOC_ID, "-o", str(out))
    one_line(ran, 2, f"pdv document get: {out} exists: choose another file, or --force")
    assert out.read_bytes() == b"mine"
    assert fake.script.requests == []
    assert pdv("document", "get", "--purpose", "p", DOC_ID, "-o", str(out), "--force").code == 0
    assert out.read_bytes() == JPEG


def test_data_loss_leaves_no_file_and_exits_1(pdv: Pdv, fake: Fake, tmp_path: Path) -> None:
    fake.script.fail_after_chunks = 2
    ran = pdv("document", "get", "--purpose", "p", DOC_ID, "-o", str(tmp_path / "out.jpg"))
    one_line(ran, 1, "DATA_LOSS: stored content failed its integrity check")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["-o", "{tmp}/out"], "say why: --purpose PURPOSE, or --disclosure"),
        (["--purpose", "p", "-o", "-", "--output", "json"], "-o - gives standard output"),
        (["--purpose", "p", "-o", "{tmp}/no/such/dir/out"], "-o {tmp}/no/such/dir/out: no dir"),
    ],
)
def test_get_usage_errors(pdv: Pdv, fake: Fake, tmp_path: Path, argv: list[str], says: str) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    ran = pdv("document", "get", DOC_ID, *argv)
    one_line(ran, 2, f"pdv document get: {says.replace('{tmp}', str(tmp_path))}")
    assert fake.script.requests == []


def test_get_refuses_to_write_a_document_to_a_terminal(
    pdv: Pdv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    ran = pdv("document", "get", "--purpose", "p", DOC_ID, "-o", "-")
    one_line(ran, 2, "pdv document get: refusing to write a document to a terminal")


def test_a_full_disk_is_one_line(pdv: Pdv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", full)
    ran = pdv("document", "get", "--purpose", "p", DOC_ID, "-o", str(tmp_path / "out.jpg"))
    one_line(ran, 1, "pdv document get: No space left on device")
    assert list(tmp_path.iterdir()) == []


# -- the others -----------------------------------------------------------------------------------


def test_show_says_what_matters(pdv: Pdv) -> None:
    ran = pdv("document", "show", DOC_ID)
    assert ran.code == 0
    text = ran.out.decode()
    for line in [
        f"document: {DOC_ID}",
        "type: drivers_license",
        "media type: image/jpeg",
        f"size: {len(JPEG)} bytes",
        "scan: not_scanned (none configured)",
        "verified: not yet",
        "retention: documents.drivers_license: P7Y from verified, then shred; a legal duty to keep",
        "  due: not started",
        "holds: none",
    ]:
        assert f"{line}\n" in text


def test_list_is_one_line_per_document(pdv: Pdv, fake: Fake) -> None:
    fake.script.pages = 2
    ran = pdv("document", "list", "user-42")
    assert ran.code == 0
    assert ran.out.decode().splitlines() == [
        f"doc_{n}\tdrivers_license\timage/jpeg\t{len(JPEG)}\t2026-11-29T16:09:44Z" for n in (0, 1)
    ]
    assert [d["documentId"] for d in pdv("document", "list", "u", "--output", "json").json()] == [
        "doc_0",
        "doc_1",
    ]


def test_hold_release_verified_delete_sweep(pdv: Pdv) -> None:
    assert pdv("document", "hold", DOC_ID, "--reason", "case 2026-118").out == b"h-1\n"
    assert (
        pdv("document", "hold", DOC_ID, "--release").out
        == f"released 2 holds on {DOC_ID}\n".encode()
    )
    assert pdv("document", "hold", DOC_ID, "--release", "--hold-id", "h-1").out == (
        f"released 1 hold on {DOC_ID}\n".encode()
    )
    verified = pdv("document", "verified", DOC_ID).out.decode()
    assert (
        verified == f"{DOC_ID} verified at 2026-11-29T16:09:44Z; kept until 2033-11-29T16:09:44Z\n"
    )
    assert pdv("document", "delete", DOC_ID, "--output", "json").json() == {
        "documentId": DOC_ID,
        "destroyedAt": "2026-11-29T16:09:44Z",
    }
    swept = pdv("retention", "sweep", "--output", "json").json()
    assert swept == pdv("document", "sweep", "--output", "json").json()
    assert swept["documentsRedestroyed"] == 7
    assert pdv("document", "sweep").out.startswith(b"sweep s-1: 1 documents destroyed, ")


def test_hold_id_without_release_is_a_usage_error(pdv: Pdv, fake: Fake) -> None:
    ran = pdv("document", "hold", DOC_ID, "--reason", "r", "--hold-id", "h-1")
    one_line(ran, 2, "pdv document hold: --hold-id goes with --release")
    assert fake.script.requests == []


def test_a_refused_delete_exits_4(pdv: Pdv, fake: Fake) -> None:
    fake.script.unary_failures = [(code_pb2.FAILED_PRECONDITION, "1 legal hold(s) stand")]
    one_line(pdv("document", "delete", DOC_ID), 4, "FAILED_PRECONDITION: 1 legal hold(s) stand")


def test_upload_takes_the_types_of_the_api_but_unclassified(pdv: Pdv, scan: Path) -> None:
    with pytest.raises(SystemExit) as done:
        pdv("document", "upload", "--subject", "u", "--type", "unclassified", str(scan))
    assert done.value.code == 2
    assert parser.UPLOAD_TYPES == (
        "passport",
        "drivers_license",
        "residence_card",
        "health_insurance_card",
        "my_number_card_front",
        "my_number_card_back",
    )

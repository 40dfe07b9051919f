"""The content checks of identity documents (vault.media.inspect): what is refused, and by which
rule; what an image's sanitized copy keeps. Every test file is made here, at run time: no
suspicious file is committed (and none trips a scanner on a developer's machine)."""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Iterator

import pikepdf
import pytest
from PIL import ExifTags, Image

from tests.samples import (
    SECRET,
    elf_executable,
    javascript,
    jpeg,
    jpeg_markers,
    link,
    pdf,
    pe_executable,
    photo_with_location,
    png,
    png_bomb,
    png_chunk,
    png_chunks,
    saved,
    two_colour_image,
    zip_archive,
)
from vault.domain.documents import Inspection, MediaType
from vault.errors import ConfigurationError, FieldViolation, InvalidArgument
from vault.media.inspect import ContentInspector

JPEG, PNG, PDF = MediaType.JPEG, MediaType.PNG, MediaType.PDF


@pytest.fixture(autouse=True)
def _pillow_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """An inspector lowers Pillow's process-wide pixel limit; each test gets it back."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


@pytest.fixture
def inspector() -> ContentInspector:
    return ContentInspector()


def refused(inspector: ContentInspector, content: bytes, declared: MediaType) -> FieldViolation:
    with pytest.raises(InvalidArgument) as caught:
        inspector.inspect(content, declared)
    violation = caught.value.violations[0]
    assert SECRET not in str(caught.value)
    return violation


def is_red(pixel: tuple[int, ...]) -> bool:
    return pixel[0] > 150 and pixel[2] < 100


def is_blue(pixel: tuple[int, ...]) -> bool:
    return pixel[2] > 150 and pixel[0] < 100


def rgb(image: Image.Image, x: int, y: int) -> tuple[int, ...]:
    pixel = image.convert("RGB").getpixel((x, y))
    assert isinstance(pixel, tuple)
    return pixel


# Images: what the sanitized copy is


def test_a_photo_comes_back_upright_without_its_metadata(inspector: ContentInspector) -> None:
    original = photo_with_location(orientation=6)
    assert {0xE1, 0xE2, 0xFE} <= set(jpeg_markers(original))  # EXIF and XMP, ICC, comment
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert SECRET.encode() in original

    result = inspector.inspect(original, JPEG)

    assert result.media_type is JPEG
    assert result.sanitized is not None
    # Orientation 6 is "rotate 90 degrees clockwise to display": 60x40 stored, 40x60 shown, the
    # red top half now on the right.
    assert (result.width, result.height) == (40, 60)
    clean = Image.open(io.BytesIO(result.sanitized), formats=["JPEG"])
    assert clean.size == (40, 60)
    assert is_red(rgb(clean, 35, 30))
    assert is_blue(rgb(clean, 4, 30))
    # Only the markers an image needs: no APP1 (EXIF, XMP), APP2 (ICC, MPF), other APPn, or COM.
    markers = set(jpeg_markers(result.sanitized))
    assert markers <= {0xD8, 0xE0, 0xDB, 0xC0, 0xC4, 0xDA, 0xD9}, sorted(hex(m) for m in markers)
    assert 0xE1 not in markers
    assert 0xFE not in markers
    for mark in (b"Exif", b"xmpmeta", b"ICC_PROFILE", SECRET.encode(), b"PdvaultTestCam"):
        assert mark not in result.sanitized
    assert not clean.getexif()
    assert clean.getexif().get_ifd(ExifTags.IFD.GPSInfo) == {}
    assert "exif" not in clean.info
    assert "xmp" not in clean.info
    assert "comment" not in clean.info
    assert "icc_profile" not in clean.info


def test_an_upright_photo_keeps_its_size(inspector: ContentInspector) -> None:
    result = inspector.inspect(photo_with_location(orientation=1), JPEG)
    assert (result.width, result.height) == (60, 40)
    assert result.sanitized is not None
    assert b"Exif" not in result.sanitized


def test_a_png_loses_its_text_chunks(inspector: ContentInspector) -> None:
    original = png(text={"Author": SECRET})
    assert {b"tEXt", b"zTXt", b"iTXt"} <= set(png_chunks(original))

    result = inspector.inspect(original, PNG)

    assert result == Inspection(PNG, result.sanitized, width=60, height=40)
    assert result.sanitized is not None
    assert set(png_chunks(result.sanitized)) == {b"IHDR", b"IDAT", b"IEND"}
    assert SECRET.encode() not in result.sanitized


def test_a_palette_png_with_transparency_keeps_it(inspector: ContentInspector) -> None:
    image = two_colour_image().convert("P")
    out = io.BytesIO()
    image.save(out, "PNG", transparency=0)

    result = inspector.inspect(out.getvalue(), PNG)

    assert result.sanitized is not None
    clean = Image.open(io.BytesIO(result.sanitized))
    assert clean.mode == "RGBA"
    assert set(png_chunks(result.sanitized)) == {b"IHDR", b"IDAT", b"IEND"}


def test_a_cmyk_jpeg_becomes_rgb(inspector: ContentInspector) -> None:
    result = inspector.inspect(jpeg(two_colour_image().convert("CMYK")), JPEG)
    assert result.sanitized is not None
    assert Image.open(io.BytesIO(result.sanitized)).mode == "RGB"


def test_the_jpeg_quality_is_the_inspectors() -> None:
    noisy = Image.effect_noise((200, 200), 64).convert("RGB")
    low = ContentInspector(jpeg_quality=20).inspect(jpeg(noisy), JPEG).sanitized
    high = ContentInspector(jpeg_quality=95).inspect(jpeg(noisy), JPEG).sanitized
    assert low is not None
    assert high is not None
    assert len(low) < len(high)


# Images: refused


def test_a_renamed_elf_executable_is_refused(inspector: ContentInspector) -> None:
    violation = refused(inspector, elf_executable(), JPEG)
    assert (violation.field, violation.rule) == ("content", "document.media_type")
    assert violation.description == "is an ELF executable, not a JPEG, PNG or PDF file"


def test_a_renamed_windows_executable_is_refused(inspector: ContentInspector) -> None:
    violation = refused(inspector, pe_executable(), JPEG)
    assert violation.rule == "document.media_type"
    assert "Windows executable" in violation.description


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (b"GIF89a" + b"\0" * 32, "a GIF image"),
        (b"\0\0\0\x18ftypheic" + b"\0" * 32, "a HEIC image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "markup (HTML, XML or SVG)"),
        (b"", None),
        (b"\0" * 64, None),
        (b"\xff\xd8", None),  # a JPEG's first two bytes, and no more
    ],
)
def test_other_formats_are_refused_by_name(
    inspector: ContentInspector, content: bytes, found: str | None
) -> None:
    violation = refused(inspector, content, PNG)
    assert violation.rule == "document.media_type"
    expected = (
        f"is {found}, not a JPEG, PNG or PDF file" if found else "is not a JPEG, PNG or PDF file"
    )
    assert violation.description == expected


def test_a_png_declared_as_jpeg_is_refused(inspector: ContentInspector) -> None:
    violation = refused(inspector, png(), JPEG)
    assert (violation.field, violation.rule) == ("header.media_type", "document.mismatch")
    assert violation.description == "declared as image/jpeg, but the content is a PNG image"


def test_a_pdf_declared_as_png_is_refused(inspector: ContentInspector) -> None:
    assert refused(inspector, saved(pdf()), PNG).rule == "document.mismatch"


def test_a_jpeg_with_a_zip_appended_is_refused(inspector: ContentInspector) -> None:
    violation = refused(inspector, jpeg() + zip_archive(), JPEG)
    assert violation.rule == "document.polyglot"
    assert "ZIP archive" in violation.description


def test_a_zip_hidden_in_a_jpeg_comment_is_refused(inspector: ContentInspector) -> None:
    """A ZIP reader finds an archive from its end record, wherever the rest of it sits: here in
    the comment segment of a small image, and no byte after the end marker."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "JPEG", comment=zip_archive())
    content = out.getvalue()
    assert zipfile.ZipFile(io.BytesIO(content)).namelist() == ["payload.class"]
    violation = refused(inspector, content, JPEG)
    assert (violation.rule, violation.description) == ("document.polyglot", "carries a ZIP archive")


@pytest.mark.parametrize(
    ("appended", "name"),
    [
        (elf_executable(), "an ELF executable"),
        (pe_executable(), "a Windows executable"),
        (b"%PDF-1.7\n", "a PDF"),
        (b"\n", None),
        (b"\0" * 16, None),
    ],
)
def test_anything_after_an_images_end_is_refused(
    inspector: ContentInspector, appended: bytes, name: str | None
) -> None:
    for declared, content in ((JPEG, jpeg()), (PNG, png())):
        violation = refused(inspector, content + appended, declared)
        assert violation.rule == "document.polyglot"
        where = "after the end of the image"
        expected = f"carries {name} {where}" if name else f"carries data {where}"
        assert violation.description == expected


def test_a_png_with_a_pdf_header_in_its_first_kilobyte_is_refused(
    inspector: ContentInspector,
) -> None:
    content = png(text={"Comment": "%PDF-1.4 1 0 obj"})
    assert content.index(b"%PDF") < 1024
    violation = refused(inspector, content, PNG)
    assert violation.rule == "document.polyglot"
    assert violation.description == "carries a PDF header inside the image"


def test_a_jpeg_with_a_pdf_header_further_in_is_refused(inspector: ContentInspector) -> None:
    out = io.BytesIO()
    two_colour_image().save(out, "JPEG", comment=b"x" * 2000 + b"%PDF-1.7 trailer")
    assert out.getvalue().index(b"%PDF") > 1024
    assert refused(inspector, out.getvalue(), JPEG).rule == "document.polyglot"


def test_a_png_decompression_bomb_is_refused(inspector: ContentInspector) -> None:
    content = png_bomb()
    assert len(content) < 100
    violation = refused(inspector, content, PNG)
    assert violation.rule == "document.image_bomb"
    assert violation.description == "declares more pixels than the limit of 50000000"


def test_a_jpeg_declaring_huge_dimensions_is_refused(inspector: ContentInspector) -> None:
    content = bytearray(jpeg(Image.new("RGB", (16, 16))))
    sof = content.index(b"\xff\xc0")
    struct.pack_into(
        ">HH", content, sof + 5, 60000, 60000
    )  # SOF0: length, precision, height, width
    assert refused(inspector, bytes(content), JPEG).rule == "document.image_bomb"


def test_the_pixel_limit_is_the_inspectors_exactly() -> None:
    small = ContentInspector(max_pixels=60 * 40)
    assert small.inspect(png(), PNG).width == 60
    smaller = ContentInspector(max_pixels=60 * 40 - 1)
    assert refused(smaller, png(), PNG).rule == "document.image_bomb"


def test_a_truncated_jpeg_is_refused(inspector: ContentInspector) -> None:
    content = jpeg(Image.effect_noise((64, 64), 64).convert("RGB"))
    violation = refused(inspector, content[: len(content) // 2], JPEG)
    assert violation.rule == "document.undecodable"


def test_a_jpeg_whose_pixels_do_not_decode_is_refused(inspector: ContentInspector) -> None:
    """Well-formed markers, but a frame header the decoder refuses (0 components)."""
    content = bytearray(jpeg(Image.new("RGB", (16, 16))))
    sof = content.index(b"\xff\xc0")
    content[sof + 9] = 0  # SOF0: number of components
    assert refused(inspector, bytes(content), JPEG).rule == "document.undecodable"


def test_a_truncated_png_is_refused(inspector: ContentInspector) -> None:
    content = png()
    assert refused(inspector, content[:-20], PNG).rule == "document.undecodable"


def test_a_png_with_a_corrupt_image_chunk_is_refused(inspector: ContentInspector) -> None:
    header = struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)
    content = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"not zlib data")
        + png_chunk(b"IEND", b"")
    )
    assert refused(inspector, content, PNG).rule == "document.undecodable"


def test_a_png_not_starting_with_its_header_chunk_is_refused(inspector: ContentInspector) -> None:
    content = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IEND", b"")
    assert refused(inspector, content, PNG).rule == "document.undecodable"


# PDFs


def test_a_plain_pdf_is_accepted_as_it_is(inspector: ContentInspector) -> None:
    document = pdf(pages=20)
    link(document, pikepdf.Dictionary(S=pikepdf.Name.URI, URI=pikepdf.String("https://a.test")))
    assert inspector.inspect(saved(document), PDF) == Inspection(PDF, None, pages=20)


def test_a_form_without_actions_is_accepted(inspector: ContentInspector) -> None:
    document = pdf()
    field = document.make_indirect(
        pikepdf.Dictionary(FT=pikepdf.Name.Tx, T=pikepdf.String("name"), Rect=[0, 0, 10, 10])
    )
    document.Root.AcroForm = pikepdf.Dictionary(Fields=pikepdf.Array([field]))
    assert inspector.inspect(saved(document), PDF).pages == 1


def active_pdfs() -> Iterator[tuple[str, bytes, str]]:
    """(what, the file, a key or action type that a refusal may name: several may be found)"""
    document = pdf()
    document.Root.OpenAction = javascript()
    yield "open action running JavaScript", saved(document), "/OpenAction /JavaScript /JS"

    document = pdf()
    document.Root.OpenAction = pikepdf.Array([document.pages[0].obj, pikepdf.Name.Fit])
    yield "open action", saved(document), "/OpenAction"

    document = pdf()
    link(document, javascript())
    # Saved in object streams: the action is in no object's plain text.
    content = saved(document, object_streams=True)
    assert b"JavaScript" not in content
    yield "JavaScript in a page's link, in an object stream", content, "/JavaScript /JS"

    document = pdf()
    names = pikepdf.Dictionary(Names=pikepdf.Array([pikepdf.String("init"), javascript()]))
    document.Root.Names = pikepdf.Dictionary(JavaScript=names)
    yield "document-level JavaScript", saved(document), "/JavaScript /JS"

    document = pdf()
    document.attachments["invoice.exe"] = pikepdf.AttachedFileSpec(document, elf_executable())
    yield "embedded file", saved(document), "/EmbeddedFile /EmbeddedFiles /EF"

    document = pdf()
    launch = pikepdf.Dictionary(S=pikepdf.Name.Launch, F=pikepdf.String("calc.exe"))
    link(document, launch)
    yield "launch action", saved(document), "/Launch"

    document = pdf()
    document.pages[0].AA = pikepdf.Dictionary(O=javascript())
    yield "page open action", saved(document), "/AA /JavaScript /JS"

    document = pdf()
    field = pikepdf.Dictionary(
        FT=pikepdf.Name.Tx, T=pikepdf.String("name"), AA=pikepdf.Dictionary(K=javascript())
    )
    document.Root.AcroForm = pikepdf.Dictionary(Fields=pikepdf.Array([field]))
    yield "form with actions", saved(document), "/AA /JavaScript /JS"

    document = pdf()
    document.Root.AcroForm = pikepdf.Dictionary(Fields=pikepdf.Array(), XFA=pikepdf.Array())
    yield "XFA form", saved(document), "/XFA"

    for action in ("GoToR", "SubmitForm", "ImportData"):
        document = pdf()
        link(document, pikepdf.Dictionary(S=pikepdf.Name("/" + action), F=pikepdf.String("x")))
        yield f"{action} action", saved(document), f"/{action}"


@pytest.mark.parametrize(
    ("content", "found"), [pytest.param(c, f, id=i) for i, c, f in active_pdfs()]
)
def test_a_pdf_with_active_content_is_refused(
    inspector: ContentInspector, content: bytes, found: str
) -> None:
    violation = refused(inspector, content, PDF)
    assert violation.rule == "document.pdf_active_content"
    assert violation.description in {f"has active content ({key})" for key in found.split()}


@pytest.mark.parametrize(
    "encryption",
    [
        pytest.param(pikepdf.Encryption(owner="owner", user="user"), id="user password"),
        pytest.param(pikepdf.Encryption(owner="owner", user=""), id="owner password only"),
    ],
)
def test_an_encrypted_pdf_is_refused(
    inspector: ContentInspector, encryption: pikepdf.Encryption
) -> None:
    violation = refused(inspector, saved(pdf(), encryption=encryption), PDF)
    assert violation.rule == "document.pdf_encrypted"


def test_a_pdf_over_the_page_limit_is_refused(inspector: ContentInspector) -> None:
    violation = refused(inspector, saved(pdf(pages=25)), PDF)
    assert violation.rule == "document.pdf_pages"
    assert violation.description == "has 25 pages, more than the limit of 20"
    assert ContentInspector(max_pages=25).inspect(saved(pdf(pages=25)), PDF).pages == 25


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda content: content[: len(content) // 2], id="truncated"),
        pytest.param(lambda content: content.replace(b"xref", b"xxxx"), id="no xref"),
        pytest.param(lambda content: b"%PDF-1.7\n%%EOF\n", id="empty"),
    ],
)
def test_a_damaged_pdf_is_refused(inspector: ContentInspector, damage: object) -> None:
    assert callable(damage)
    content = damage(saved(pdf(pages=3)))
    assert isinstance(content, bytes)
    assert refused(inspector, content, PDF).rule == "document.undecodable"


def test_a_pdf_with_a_zip_inside_is_refused(inspector: ContentInspector) -> None:
    """A PDF that a ZIP reader also opens: the archive stored, uncompressed, as a stream."""
    document = pdf()
    document.Root.Thumbnail = document.make_indirect(pikepdf.Stream(document, zip_archive()))
    out = io.BytesIO()
    document.save(out, compress_streams=False)
    content = out.getvalue()
    assert zipfile.ZipFile(io.BytesIO(content)).namelist() == ["payload.class"]
    violation = refused(inspector, content, PDF)
    assert (violation.rule, violation.description) == ("document.polyglot", "carries a ZIP archive")


# The inspector's own settings


@pytest.mark.parametrize(
    "settings",
    [{"max_pixels": 0}, {"max_pages": 0}, {"jpeg_quality": 0}, {"jpeg_quality": 96}],
)
def test_limits_out_of_range_are_refused(settings: dict[str, int]) -> None:
    with pytest.raises(ConfigurationError):
        ContentInspector(**settings)


def test_pillows_limit_is_lowered_never_raised() -> None:
    ContentInspector(max_pixels=1000)
    assert Image.MAX_IMAGE_PIXELS == 1000
    ContentInspector(max_pixels=10_000)
    assert Image.MAX_IMAGE_PIXELS == 1000

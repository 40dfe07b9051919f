"""Sample documents made at run time (no suspicious file is committed, and none trips a scanner
on a developer's machine): camera photos with metadata, PNGs, bombs, executables, PDFs with and
without active content. Shared by the unit, contract and integration tests of documents."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Iterator

import pikepdf
from PIL import ExifTags, Image, ImageCms, PngImagePlugin

RED, BLUE = (220, 20, 20), (20, 20, 220)
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
# Marks written into the test files' metadata: none may appear in the sanitized copy, nor in any
# error message.
SECRET = "user-42 lives at 35.6586 N 139.7454 E"


def two_colour_image(width: int = 60, height: int = 40) -> Image.Image:
    """Top half red, bottom half blue: which way up it is can be read off its pixels."""
    image = Image.new("RGB", (width, height), RED)
    image.paste(BLUE, (0, height // 2, width, height))
    return image


def photo_with_location(orientation: int = 6, image: Image.Image | None = None) -> bytes:
    """A camera JPEG: EXIF (orientation, maker, GPS position), XMP, an ICC profile and a
    comment."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "PdvaultTestCam"
    exif[ExifTags.Base.ImageDescription] = SECRET
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (35.0, 39.0, 31.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (139.0, 44.0, 43.0)
    xmp = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        f'22-rdf-syntax-ns#"><rdf:Description>{SECRET}</rdf:Description></rdf:RDF></x:xmpmeta>'
    ).encode()
    out = io.BytesIO()
    (image or two_colour_image()).save(
        out, "JPEG", quality=95, exif=exif, xmp=xmp, comment=SECRET.encode(), icc_profile=ICC
    )
    return out.getvalue()


def noisy_image(width: int = 400, height: int = 300, seed: int = 7) -> Image.Image:
    """Random pixels: a JPEG of them is large (about 3 bytes a pixel), as a real scan is."""
    import random

    rng = random.Random(seed)
    return Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))


def jpeg(image: Image.Image | None = None) -> bytes:
    out = io.BytesIO()
    (image or two_colour_image()).save(out, "JPEG")
    return out.getvalue()


def png(image: Image.Image | None = None, text: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    info.add_text("Compressed", SECRET, zip=True)
    info.add_itxt("International", SECRET)
    out = io.BytesIO()
    (image or two_colour_image()).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header declares 10^10 pixels, in a few dozen bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + png_chunk(b"IEND", b"")
    )


def zip_archive() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("payload.class", b"\xca\xfe\xba\xbe" + b"\0" * 64)
    return out.getvalue()


def elf_executable() -> bytes:
    return b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack("<HH", 2, 0x3E) + b"\0" * 100


def pe_executable() -> bytes:
    dos = bytearray(b"MZ" + b"\0" * 126)
    struct.pack_into("<I", dos, 0x3C, len(dos))
    return bytes(dos) + b"PE\0\0" + struct.pack("<H", 0x8664) + b"\0" * 100


def jpeg_markers(content: bytes | bytearray) -> Iterator[int]:
    """The markers of a JPEG file, in order, up to its end (entropy-coded data skipped)."""
    assert content[:2] == b"\xff\xd8"
    yield 0xD8
    pos = 2
    while pos < len(content):
        assert content[pos] == 0xFF
        marker = content[pos + 1]
        pos += 2
        yield marker
        if marker == 0xD9:
            return
        (length,) = struct.unpack_from(">H", content, pos)
        pos += length
        if marker == 0xDA:
            while not (content[pos] == 0xFF and content[pos + 1] not in (0x00, *range(0xD0, 0xD8))):
                pos += 1


def png_chunks(content: bytes | bytearray) -> Iterator[bytes]:
    pos = 8
    while pos < len(content):
        length, kind = struct.unpack_from(">I4s", content, pos)
        yield kind
        pos += 12 + length


def pdf(pages: int = 1) -> pikepdf.Pdf:
    document = pikepdf.new()
    for _ in range(pages):
        document.add_blank_page(page_size=(595, 842))
    return document


def saved(
    document: pikepdf.Pdf,
    encryption: pikepdf.Encryption | None = None,
    object_streams: bool = False,
) -> bytes:
    mode = (
        pikepdf.ObjectStreamMode.generate if object_streams else pikepdf.ObjectStreamMode.preserve
    )
    out = io.BytesIO()
    document.save(out, encryption=encryption, object_stream_mode=mode)
    return out.getvalue()


def javascript(code: str = "app.alert(1)") -> pikepdf.Dictionary:
    return pikepdf.Dictionary(S=pikepdf.Name.JavaScript, JS=pikepdf.String(code))


def link(document: pikepdf.Pdf, action: pikepdf.Dictionary) -> None:
    """An annotation on the first page that runs `action` when clicked."""
    annotation = pikepdf.Dictionary(
        Type=pikepdf.Name.Annot, Subtype=pikepdf.Name.Link, Rect=[10, 10, 100, 30], A=action
    )
    document.pages[0].Annots = document.make_indirect(pikepdf.Array([annotation]))

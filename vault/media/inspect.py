"""The content checks of an identity document: what the bytes are, whether they hide another
format, and (for images) a re-encoded copy without metadata.

Nothing the client says is trusted. The media type is read from the bytes against the allow-list
(JPEG, PNG, PDF), then each file is parsed whole: sniffing is not enough, because readers are
lenient (a PDF reader accepts a header anywhere in the first 1024 bytes, a ZIP reader reads from
the end of the file), so one file can be two formats at once (documents.md §3).

- Images are walked marker by marker (JPEG) or chunk by chunk (PNG) to their end marker, and
  refused if anything follows it; decoded by Pillow within a pixel limit; turned upright; and
  their pixels alone re-encoded (the `sanitized` variant), so no EXIF, GPS, XMP, ICC profile,
  comment or text chunk of the upload survives.
- PDFs are opened by qpdf (pikepdf) without recovery, and every object of the document is walked
  for active content: a viewer runs an action wherever it sits, not only in the catalog.

The work is bounded by the limits a document can break (pixels, pages), not by its size: the
document size is capped before the content gets here (the upload's declared size), and the
parsers here are linear in it.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import pikepdf
from PIL import Image, ImageOps

from vault.domain.documents import Inspection, MediaType
from vault.errors import ConfigurationError, InvalidArgument

Content = bytes | bytearray  # the upload's buffer: a bytearray, wiped after

__all__ = [
    "DEFAULT_JPEG_QUALITY",
    "DEFAULT_MAX_PAGES",
    "DEFAULT_MAX_PIXELS",
    "ContentInspector",
]

# documents.md §6, the limits table: images up to 50 MP, PDFs up to 20 pages.
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_PAGES = 20
# High enough that a document's small print stays legible; above 95 JPEG only grows (Pillow).
DEFAULT_JPEG_QUALITY = 90

CONTENT = "content"
DECLARED = "header.media_type"  # the field of the upload's header it checks

_ALLOWED = "a JPEG, PNG or PDF file"
_NAMES = {MediaType.JPEG: "a JPEG image", MediaType.PNG: "a PNG image", MediaType.PDF: "a PDF"}

_JPEG_MAGIC = b"\xff\xd8\xff"
# The start-of-frame markers (T.81 Table B.1): SOF0-3, 5-7, 9-11, 13-15; not DHT, JPG or DAC.
_JPEG_FRAME_HEADERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PDF_MAGIC = b"%PDF-"

# What a refused file is, named by its first bytes (a name only, never the bytes themselves).
_FOREIGN: tuple[tuple[bytes, int, str], ...] = (
    (b"\x7fELF", 0, "an ELF executable"),
    (b"MZ", 0, "a Windows executable"),
    (b"\xca\xfe\xba\xbe", 0, "a Mach-O or Java class file"),
    (b"\xcf\xfa\xed\xfe", 0, "a Mach-O executable"),
    (b"#!", 0, "a script"),
    (b"PK\x03\x04", 0, "a ZIP archive"),
    (b"\x1f\x8b", 0, "a gzip archive"),
    (b"Rar!", 0, "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", 0, "a 7-Zip archive"),
    (b"GIF8", 0, "a GIF image"),
    (b"II*\x00", 0, "a TIFF image"),
    (b"MM\x00*", 0, "a TIFF image"),
    (b"BM", 0, "a BMP image"),
    (b"WEBP", 8, "a WebP image"),
    (b"ftypheic", 4, "a HEIC image"),
    (b"ftypmif1", 4, "a HEIF image"),
    (b"ftypavif", 4, "an AVIF image"),
    (b"\xd0\xcf\x11\xe0", 0, "an Office (OLE) document"),
    (b"<", 0, "markup (HTML, XML or SVG)"),
)

# The signatures of another format that a reader would find in a file it is handed whole.
_PDF_HEADER = b"%PDF"
_PDF_HEADER_WINDOW = 1024  # PDF 1.4 implementation notes: the header may be anywhere in these
# Past that window a PDF header is matched with its version digit: four bytes alone turn up by
# chance in compressed pixel data (about once in 400 MiB), six bytes practically never.
_PDF_HEADER_ANYWHERE = re.compile(rb"%PDF-[0-9]")
_TRAILING: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a ZIP archive"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"\x7fELF", "an ELF executable"),
    (b"PE\x00\x00", "a Windows executable"),
    (b"MZ", "a Windows executable"),
    (_PDF_HEADER, "a PDF"),
)
_ZIP_END = b"PK\x05\x06"
_ZIP_DIRECTORY = b"PK\x01\x02"
_ZIP_END_SIZE = 22
_ZIP_END_WINDOW = _ZIP_END_SIZE + 0xFFFF  # the end record and its longest comment

# PDF: the keys and action types that make a document do something when it is opened or used
# (eternal-todo.com "PDF actions"; documents.md §3). Links (/URI, /GoTo) are not refused.
_ACTIVE_KEYS = frozenset(
    {
        "/OpenAction",
        "/AA",
        "/JS",
        "/JavaScript",
        "/Launch",
        "/EmbeddedFile",
        "/EmbeddedFiles",
        "/EF",
        "/RichMedia",
        "/RichMediaContent",
        "/XFA",
        "/GoToR",
        "/GoToE",
        "/SubmitForm",
        "/ImportData",
    }
)
_ACTIVE_NAMES = frozenset(
    {
        "/JavaScript",
        "/Launch",
        "/GoToR",
        "/GoToE",
        "/SubmitForm",
        "/ImportData",
        "/RichMedia",
        "/RichMediaExecute",
        "/EmbeddedFile",
    }
)

# What Pillow's decoders raise for a file they cannot decode. Anything else is a bug of ours, and
# surfaces as one (the upload fails all the same: nothing is kept).
_DECODER_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
)

# Pillow's modes that the re-encoded copy keeps as they are; any other is converted.
_JPEG_MODES = frozenset({"L", "RGB"})
_PNG_MODES = frozenset({"1", "L", "LA", "I", "I;16", "RGB", "RGBA"})


def _refuse(rule: str, description: str, field: str = CONTENT) -> InvalidArgument:
    return InvalidArgument.one(field, f"document.{rule}", description)


class ContentInspector:
    """`DocumentInspector` on Pillow (images) and pikepdf (PDFs). Thread-safe: it holds only
    its limits, and each call parses its own copy.

    Pillow's own decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`) is process-wide: it is
    lowered to `max_pixels` (never raised), as a second line behind this inspector's exact
    check, which refuses an image as soon as its header declares more than `max_pixels`."""

    def __init__(
        self,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_pages: int = DEFAULT_MAX_PAGES,
        jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    ) -> None:
        if max_pixels < 1 or max_pages < 1:
            raise ConfigurationError("document limits: max_pixels and max_pages must be >= 1")
        if not 1 <= jpeg_quality <= 95:
            raise ConfigurationError("document limits: jpeg_quality must be within 1..95")
        self.max_pixels = max_pixels
        self.max_pages = max_pages
        self.jpeg_quality = jpeg_quality
        pillow_limit = Image.MAX_IMAGE_PIXELS
        if pillow_limit is None or pillow_limit > max_pixels:
            Image.MAX_IMAGE_PIXELS = max_pixels

    def inspect(self, content: Content, declared: MediaType) -> Inspection:
        media_type = _sniff(content)
        if media_type is not declared:
            raise _refuse(
                "mismatch",
                f"declared as {declared.value}, but the content is {_NAMES[media_type]}",
                field=DECLARED,
            )
        _refuse_zip_directory(content)
        if media_type is MediaType.PDF:
            return self._inspect_pdf(content)
        layout = _jpeg_layout(content) if media_type is MediaType.JPEG else _png_layout(content)
        _refuse_trailing(content, layout.end)
        _refuse_pdf_header(content)
        # Before any decoder sees the file: a bomb's header is all it takes to refuse it.
        self._refuse_bomb(layout.width, layout.height)
        return self._sanitize(content, media_type)

    # Images

    def _sanitize(self, content: Content, media_type: MediaType) -> Inspection:
        pillow_format = "JPEG" if media_type is MediaType.JPEG else "PNG"
        try:
            with Image.open(io.BytesIO(content), formats=[pillow_format]) as image:
                self._refuse_bomb(*image.size)  # as Pillow reads the header, should it differ
                image.load()  # every pixel decoded: a truncated or corrupt image fails here
                ImageOps.exif_transpose(image, in_place=True)
                clean = _pixels_only(image, media_type)
        except Image.DecompressionBombError:
            raise _bomb(self.max_pixels) from None
        except _DECODER_ERRORS:
            raise _refuse("undecodable", f"is not a decodable {pillow_format} image") from None
        out = io.BytesIO()
        if media_type is MediaType.JPEG:
            clean.save(out, format="JPEG", quality=self.jpeg_quality)
        else:
            clean.save(out, format="PNG")
        return Inspection(
            media_type=media_type,
            sanitized=out.getvalue(),
            width=clean.width,
            height=clean.height,
        )

    def _refuse_bomb(self, width: int, height: int) -> None:
        if width < 1 or height < 1:
            raise _refuse("undecodable", "is an image without pixels")
        if width * height > self.max_pixels:
            raise _bomb(self.max_pixels)

    # PDFs

    def _inspect_pdf(self, content: Content) -> Inspection:
        try:
            # No recovery: a damaged cross-reference table is refused, not rebuilt by guessing.
            pdf = pikepdf.open(
                io.BytesIO(content), attempt_recovery=False, inherit_page_attributes=False
            )
        except pikepdf.PasswordError:
            raise _refuse("pdf_encrypted", "is an encrypted PDF") from None
        except (pikepdf.PdfError, ValueError, RuntimeError):
            raise _refuse("undecodable", "is a damaged PDF") from None
        with pdf:
            # An owner password alone opens without a password, and still restricts the file.
            if pdf.is_encrypted:
                raise _refuse("pdf_encrypted", "is an encrypted PDF")
            try:
                pages = len(pdf.pages)
                if pages > self.max_pages:
                    raise _refuse(
                        "pdf_pages", f"has {pages} pages, more than the limit of {self.max_pages}"
                    )
                if pages == 0:
                    raise _refuse("undecodable", "is a PDF without pages")
                found = _active_content(pdf)
                damaged = bool(pdf.get_warnings())
            except (pikepdf.PdfError, RuntimeError):
                raise _refuse("undecodable", "is a damaged PDF") from None
        if found is not None:
            raise _refuse("pdf_active_content", f"has active content ({found})")
        if damaged:
            raise _refuse("undecodable", "is a damaged PDF")
        return Inspection(media_type=MediaType.PDF, sanitized=None, pages=pages)


def _bomb(max_pixels: int) -> InvalidArgument:
    return _refuse("image_bomb", f"declares more pixels than the limit of {max_pixels}")


@dataclass(frozen=True, slots=True)
class _Layout:
    """What an image's structure says, read without decoding it."""

    end: int  # just past the end marker
    width: int
    height: int


def _sniff(content: Content) -> MediaType:
    if content.startswith(_JPEG_MAGIC):
        return MediaType.JPEG
    if content.startswith(_PNG_MAGIC):
        return MediaType.PNG
    if content.startswith(_PDF_MAGIC):
        return MediaType.PDF
    for signature, offset, name in _FOREIGN:
        if content.startswith(signature, offset):
            raise _refuse("media_type", f"is {name}, not {_ALLOWED}")
    raise _refuse("media_type", f"is not {_ALLOWED}")


def _refuse_pdf_header(content: Content) -> None:
    """An image that a PDF reader would also open."""
    if _PDF_HEADER in content[:_PDF_HEADER_WINDOW] or _PDF_HEADER_ANYWHERE.search(content):
        raise _refuse("polyglot", "carries a PDF header inside the image")


def _refuse_zip_directory(content: Content) -> None:
    """A file that a ZIP (or JAR) reader would also open, wherever in the file the archive is
    hidden: readers find it from its end record near the end of the file, and the central
    directory just before that record. Both are required, so that four bytes occurring by
    chance in compressed data do not refuse a file."""
    window_start = max(0, len(content) - _ZIP_END_WINDOW)
    at = content.rfind(_ZIP_END, window_start)
    while at >= 0:
        record = content[at : at + _ZIP_END_SIZE]
        if len(record) == _ZIP_END_SIZE:
            directory_size = struct.unpack_from("<I", record, 12)[0]
            directory = at - directory_size
            if 0 <= directory < at and content.startswith(_ZIP_DIRECTORY, directory):
                raise _refuse("polyglot", "carries a ZIP archive")
        at = content.rfind(_ZIP_END, window_start, at)


def _refuse_trailing(content: Content, end: int) -> None:
    """Anything after an image's end marker: no viewer shows it, so it is there to be read by
    something else (an appended archive or executable), or to smuggle data past the checks."""
    if end >= len(content):
        return
    trailing = content[end:]
    for signature, name in _TRAILING:
        if signature in trailing:
            raise _refuse("polyglot", f"carries {name} after the end of the image")
    raise _refuse("polyglot", "carries data after the end of the image")


def _jpeg_layout(content: Content) -> _Layout:
    """Where the JPEG ends (just past its end-of-image marker) and the size its frame header
    declares (ITU-T T.81 B.1: marker segments, and entropy-coded data after each start-of-scan
    up to the next marker)."""
    truncated = _refuse("undecodable", "is a JPEG image that ends before its end marker")
    size = len(content)
    pos = 2  # after SOI
    width = height = 0
    while True:
        if pos >= size:
            raise truncated
        if content[pos] != 0xFF:
            raise _refuse("undecodable", "is not a well-formed JPEG image")
        while pos < size and content[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= size:
            raise truncated
        marker = content[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            if not width:
                raise _refuse("undecodable", "is a JPEG image without a frame header")
            return _Layout(pos, width, height)
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            continue
        if marker in (0x00, 0xD8):
            raise _refuse("undecodable", "is not a well-formed JPEG image")
        if pos + 2 > size:
            raise truncated
        (length,) = struct.unpack_from(">H", content, pos)
        if length < 2:
            raise _refuse("undecodable", "is not a well-formed JPEG image")
        if marker in _JPEG_FRAME_HEADERS and not width:
            if length < 7 or pos + 7 > size:
                raise truncated
            height, width = struct.unpack_from(">HH", content, pos + 3)  # after P (1 byte)
            if not width:
                raise _refuse("undecodable", "is an image without pixels")
        pos += length
        if marker == 0xDA:  # SOS: entropy-coded data up to the next marker
            pos = _entropy_coded_end(content, pos, truncated)


def _entropy_coded_end(content: Content, pos: int, truncated: InvalidArgument) -> int:
    size = len(content)
    while True:
        at = content.find(b"\xff", pos)
        if at < 0 or at + 1 >= size:
            raise truncated
        following = content[at + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:  # a stuffed 0xFF, or RSTn
            pos = at + 2
        elif following == 0xFF:  # fill bytes
            pos = at + 1
        else:
            return at


def _png_layout(content: Content) -> _Layout:
    """Where the PNG ends (just past its IEND chunk) and the size its IHDR declares (PNG spec
    5.3: chunks of length, type, data, CRC; IHDR first)."""
    truncated = _refuse("undecodable", "is a PNG image that ends before its IEND chunk")
    size = len(content)
    pos = len(_PNG_MAGIC)
    if pos + 16 > size:
        raise truncated
    length, kind, width, height = struct.unpack_from(">I4sII", content, pos)
    if kind != b"IHDR" or length != 13:
        raise _refuse("undecodable", "is not a well-formed PNG image")
    while True:
        if pos + 8 > size:
            raise truncated
        length, kind = struct.unpack_from(">I4s", content, pos)
        if length > 0x7FFFFFFF:
            raise _refuse("undecodable", "is not a well-formed PNG image")
        pos += 12 + length
        if pos > size:
            raise truncated
        if kind == b"IEND":
            return _Layout(pos, width, height)


def _pixels_only(image: Image.Image, media_type: MediaType) -> Image.Image:
    """A new image holding `image`'s pixels and nothing else: `info` (EXIF, XMP, ICC profile,
    comments, text chunks, DPI) is not copied, so the encoder has no metadata to write.

    The ICC profile goes too, on purpose: it is an opaque blob of the uploader's choosing (up to
    megabytes, with free-text tags, and a camera or scanner model's fingerprint), and a colour
    engine parsing it is attack surface for every viewer of the copy. The cost is small for a
    document: a wide-gamut photo (Display P3) looks a little less saturated when shown as sRGB;
    the original, profile included, is kept where the policy keeps originals."""
    if media_type is MediaType.JPEG:
        mode = image.mode if image.mode in _JPEG_MODES else "RGB"
    elif image.mode in _PNG_MODES:
        mode = image.mode
    elif image.mode in ("P", "PA") or "A" in image.getbands():
        has_alpha = image.mode == "PA" or "transparency" in image.info or "A" in image.getbands()
        mode = "RGBA" if has_alpha else "RGB"
    else:
        mode = "RGB"
    source = image if image.mode == mode else image.convert(mode)
    clean = Image.new(mode, source.size)
    clean.paste(source)
    return clean


def _active_content(pdf: pikepdf.Pdf) -> str | None:
    """The first key or action type of active content in any object of the document, or None.

    Every indirect object is visited (those in object streams too), and the direct dictionaries
    and arrays nested in each, with a stack rather than recursion (nesting is the file's
    choice)."""
    for top in pdf.objects:
        for obj in _direct_tree(top):
            if isinstance(obj, pikepdf.Name):
                if str(obj) in _ACTIVE_NAMES:
                    return str(obj)
            elif isinstance(obj, (pikepdf.Dictionary, pikepdf.Stream)):
                for key in sorted(obj.keys()):  # sorted: the same refusal for the same file
                    if key in _ACTIVE_KEYS:
                        return key
    return None


def _direct_tree(top: pikepdf.Object) -> Iterator[pikepdf.Object]:
    """`top` and every object nested in it directly (indirect references are visited as
    objects of their own)."""
    stack = [top]
    while stack:
        obj = stack.pop()
        yield obj
        if isinstance(obj, pikepdf.Array):
            children: list[pikepdf.Object] = list(obj)
        elif isinstance(obj, (pikepdf.Dictionary, pikepdf.Stream)):
            children = [obj[key] for key in sorted(obj.keys())]
        else:
            continue
        # Scalars come back as Python values (pikepdf's implicit conversion): no children.
        stack.extend(
            child
            for child in children
            if isinstance(child, pikepdf.Object) and not child.is_indirect
        )

"""The documents `python -m bench.documents` uploads and validates, made at run time from the
tests' sample makers (tests/samples.py): camera JPEGs of random pixels (a JPEG of noise is as
large as a JPEG gets for its pixels, as a detailed scan is), PNGs, and PDFs of scanned pages
(one JPEG image per page, as a scanner writes them). Deterministic: the same seeds every run.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass

import pikepdf

from tests.samples import jpeg, noisy_image, pdf, photo_with_location, png, saved, two_colour_image

JPEG = "image/jpeg"
PNG = "image/png"
PDF = "application/pdf"
MIB = 1 << 20

# A JPEG comment segment: marker FF FE, a 2-byte length that counts itself, then the text.
_COMMENT = b"\xff\xfe"
_COMMENT_MAX = 0xFFFF - 2
_FILLER = b"."  # nothing a polyglot check could mistake for another format's signature


@dataclass(frozen=True)
class Sample:
    name: str
    media_type: str
    content: bytes
    what: str  # how it was made, for the output
    pixels: int | None = None  # images
    pages: int | None = None  # PDFs

    @property
    def size(self) -> int:
        return len(self.content)

    def describe(self) -> dict[str, object]:
        """What the JSON keeps of a sample (never its bytes)."""
        return {
            "name": self.name,
            "media_type": self.media_type,
            "bytes": self.size,
            "what": self.what,
            "pixels": self.pixels,
            "pages": self.pages,
        }


def _dimensions(pixels: float) -> tuple[int, int]:
    """3:2, as a camera's sensor; at most `pixels`."""
    width = max(1, int(math.sqrt(pixels * 1.5)))
    return width, max(1, int(pixels // width))


def pad_jpeg(content: bytes, size: int) -> bytes:
    """`content` grown to exactly `size` bytes by comment segments after its start marker (a
    camera writes as much metadata: maker notes, thumbnails). Needs at least 4 bytes to add."""
    missing = size - len(content)
    if missing == 0:
        return content
    if missing < 4:
        raise ValueError("a comment segment takes at least 4 bytes")
    segments = []
    while missing:
        body = min(missing - 4, _COMMENT_MAX)
        if 0 < missing - 4 - body < 4:  # the rest must fit a segment of its own
            body -= 4
        segments.append(_COMMENT + struct.pack(">H", body + 2) + _FILLER * body)
        missing -= body + 4
    return content[:2] + b"".join(segments) + content[2:]


def camera_jpeg(size: int, seed: int = 7) -> Sample:
    """A camera JPEG (EXIF with an orientation to apply and a GPS position, XMP, an ICC profile,
    a comment: tests.samples.photo_with_location, quality 95) of random pixels, padded with
    comments to exactly `size` bytes."""
    target = size * 0.97  # leave room for the padding
    pixels = target / 1.2  # a noisy JPEG at quality 95 takes about 1.2 bytes a pixel
    for _ in range(5):
        width, height = _dimensions(pixels)
        content = photo_with_location(image=noisy_image(width, height, seed))
        if len(content) <= size - 4:
            return Sample(
                f"jpeg_{_size_name(size)}",
                JPEG,
                pad_jpeg(content, size),
                f"camera JPEG of noise, {width}x{height}, EXIF orientation 6 and GPS, q95, "
                f"padded to {size:,} bytes",
                pixels=width * height,
            )
        pixels *= target / len(content)
    raise ValueError(f"no JPEG of at most {size} bytes")


def camera_photo(pixels: int, seed: int = 7) -> Sample:
    """A camera JPEG (as `camera_jpeg`, unpadded) of `pixels` random pixels."""
    width, height = _dimensions(pixels)
    return Sample(
        f"jpeg_{_mp(width * height)}_camera",
        JPEG,
        photo_with_location(image=noisy_image(width, height, seed)),
        f"camera JPEG of noise, {width}x{height}, EXIF orientation 6 and GPS, q95",
        pixels=width * height,
    )


def noisy_jpeg(pixels: int, quality: int, seed: int = 11) -> Sample:
    """Random pixels at a given JPEG quality, without metadata."""
    width, height = _dimensions(pixels)
    out = io.BytesIO()
    noisy_image(width, height, seed).save(out, "JPEG", quality=quality)
    return Sample(
        f"jpeg_{_mp(width * height)}_noise_q{quality}",
        JPEG,
        out.getvalue(),
        f"JPEG of noise, {width}x{height}, q{quality}",
        pixels=width * height,
    )


def smooth_jpeg(pixels: int) -> Sample:
    """Two flat colours: many pixels in a small file."""
    width, height = _dimensions(pixels)
    return Sample(
        f"jpeg_{_mp(width * height)}_flat",
        JPEG,
        jpeg(two_colour_image(width, height)),
        f"JPEG of two flat colours, {width}x{height}, q75",
        pixels=width * height,
    )


def noisy_png(pixels: int, seed: int = 13) -> Sample:
    """Random pixels (RGB) with text chunks (tests.samples.png)."""
    width, height = _dimensions(pixels)
    return Sample(
        f"png_{_mp(width * height)}_noise",
        PNG,
        png(noisy_image(width, height, seed)),
        f"PNG of noise, {width}x{height}, text chunks",
        pixels=width * height,
    )


def smooth_png(pixels: int) -> Sample:
    width, height = _dimensions(pixels)
    return Sample(
        f"png_{_mp(width * height)}_flat",
        PNG,
        png(two_colour_image(width, height)),
        f"PNG of two flat colours, {width}x{height}",
        pixels=width * height,
    )


def blank_pdf(pages: int) -> Sample:
    return Sample(
        f"pdf_{pages}p_blank",
        PDF,
        saved(pdf(pages)),
        f"PDF of {pages} blank A4 pages",
        pages=pages,
    )


def scanned_pdf(size: int, pages: int, seed: int = 17, name: str = "") -> Sample:
    """`pages` A4 pages, each one JPEG image of noise (q75, about 0.6 bytes a pixel), together
    about `size` bytes."""
    per_page = max(1.0, size / pages / 0.61)
    width, height = _dimensions(per_page)
    document = pdf(0)
    for i in range(pages):
        scan = jpeg(noisy_image(width, height, seed + i))
        image = pikepdf.Stream(
            document,
            scan,
            Type=pikepdf.Name.XObject,
            Subtype=pikepdf.Name.Image,
            Width=width,
            Height=height,
            ColorSpace=pikepdf.Name.DeviceRGB,
            BitsPerComponent=8,
            Filter=pikepdf.Name.DCTDecode,
        )
        page = document.add_blank_page(page_size=(595, 842))
        resource = str(page.add_resource(image, pikepdf.Name.XObject, pikepdf.Name.Im0))
        draw = f"q 595 0 0 842 0 0 cm {resource} Do Q".encode()
        page.contents_add(document.make_stream(draw))
    content = saved(document)
    return Sample(
        name or f"pdf_{pages}p_scanned_{_size_name(len(content))}",
        PDF,
        content,
        f"PDF of {pages} A4 pages, each a {width}x{height} JPEG scan of noise",
        pages=pages,
    )


def _size_name(size: int) -> str:
    mib = size / MIB
    if mib >= 1:
        return f"{mib:.0f}mib" if abs(mib - round(mib)) < 0.05 else f"{mib:.1f}mib"
    return f"{size // 1024}kib"


def _mp(pixels: int) -> str:
    mp = pixels / 1e6
    return f"{mp:.0f}mp" if mp >= 1 else f"{pixels // 1000}kp"


def transfer_samples(size: int) -> tuple[Sample, Sample]:
    """The two documents of one size that the gRPC runs upload: a camera JPEG of exactly `size`
    bytes (also the bytes of the in-process runs and of the baselines) and a scanned PDF of about
    `size` bytes (a page per MiB)."""
    pages = max(1, round(size / MIB))
    return camera_jpeg(size), scanned_pdf(size, pages, name=f"pdf_{_size_name(size)}")


def validation_samples(max_pixels: int, max_pages: int, max_bytes: int) -> list[Sample]:
    """What validation is measured on: images of 10 MP and at the pixel limit, noisy (large
    files) and flat (small files, as many pixels), a PNG of each kind, PDFs at the page limit
    blank and scanned. Every one fits the upload limit (`max_bytes`)."""
    samples = [
        camera_photo(10_000_000),  # 11.8 MB
        # Noise at quality 40: the most that fits the 20 MiB upload limit at 50 MP (16.5 MiB).
        noisy_jpeg(max_pixels, 40),
        smooth_jpeg(max_pixels),
        noisy_png(3_000_000),
        smooth_png(max_pixels),
        blank_pdf(max_pages),
        scanned_pdf(10 * MIB, max_pages),
    ]
    for s in samples:
        if s.size > max_bytes:
            raise ValueError(f"{s.name} is {s.size} bytes, over the upload limit {max_bytes}")
    return samples


def small_validation_samples() -> list[Sample]:
    """A few small files of each kind: the unit test's configuration."""
    return [
        camera_jpeg(64 * 1024),
        smooth_jpeg(200_000),
        noisy_png(20_000),
        blank_pdf(2),
        scanned_pdf(64 * 1024, 2),
    ]

"""The content checks of one document, measured apart: `ContentInspector.inspect` (decode, turn
upright and re-encode an image; parse a PDF and walk its objects) in MB/s, and its peak memory.

`python -m bench.document_validation FILE MEDIA_TYPE REPS MAX_PIXELS MAX_PAGES` prints one JSON
object; `python -m bench.documents` runs it in a fresh process per document, so that no
document's memory is reused by the next one's and the process's peak is this document's.

Memory is measured twice, in separate calls: the growth of the process's peak resident memory
over its RSS before the call (which already holds the upload buffer: the servicer's, holding
the whole document), which sees Pillow's pixel buffers and qpdf's objects (C allocations); and
tracemalloc's peak, which sees only Python's allocators (the copy of the content that
`io.BytesIO` makes, the re-encoded output). A warm-up on a tiny document of the same type comes
first, so that decoders loaded on first use are not counted.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.document_transfers import PeakRss, traced
from tests.samples import jpeg, pdf, png, saved
from vault.domain.documents import MediaType
from vault.media.inspect import ContentInspector

_TINY: dict[MediaType, Callable[[], bytes]] = {
    MediaType.JPEG: jpeg,
    MediaType.PNG: png,
    MediaType.PDF: lambda: saved(pdf(1)),
}


def measure(
    content: bytes, media_type: str, reps: int, inspector: ContentInspector
) -> dict[str, Any]:
    declared = MediaType(media_type)
    inspector.inspect(bytearray(_TINY[declared]()), declared)
    buffer = bytearray(content)  # as the upload hands it over
    rss = PeakRss(os.getpid())
    rss_growth = None
    if PeakRss.available(rss.pid):
        rss.begin()
        inspector.inspect(buffer, declared)
        rss_growth = rss.growth()
    with traced() as peak:
        found = inspector.inspect(buffer, declared)
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        inspector.inspect(buffer, declared)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    pixels = found.width * found.height if found.width and found.height else None
    return {
        "bytes": len(content),
        "seconds": seconds,
        "median_s": median,
        "mb_per_s": len(content) / median / 1e6,
        "megapixels_per_s": pixels / median / 1e6 if pixels else None,
        "pages_per_s": found.pages / median if found.pages else None,
        "rss_growth_bytes": rss_growth,
        "traced_peak_bytes": peak[0],
        "width": found.width,
        "height": found.height,
        "pages": found.pages,
        "sanitized_bytes": len(found.sanitized) if found.sanitized is not None else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    path, media_type, reps, max_pixels, max_pages = args
    inspector = ContentInspector(int(max_pixels), int(max_pages))
    out = measure(Path(path).read_bytes(), media_type, int(reps), inspector)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

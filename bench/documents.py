"""`python -m bench.documents`: document upload and download throughput, and validation, against
the baselines that bound them, measured in one run (issue #11, "Performance").

1. **Storage and encryption path, in-process**, per database and document size: the
   `DocumentArchive` as vault/app.py wires it (SQL stores, the local key file's provider behind
   the key cache, DocumentCrypto's format DV1 in 64 KiB segments), but with an inspector stub
   that reads the media type off the first bytes and decodes nothing (`MediaTypeOnly`): a
   document already validated. Upload = `admit_upload` + `store` of a buffer holding the whole
   document (as the servicer hands it over); download = `open` and every plaintext segment.
   In the same rounds, the same upload through the archive build_app wired (the real
   ContentInspector): what the content checks add.
2. **Baselines in the same rounds, over the same bytes**: raw AES-256-GCM over the document cut
   as DV1 cuts it (one key, a counter nonce), and the raw write and read of as many 64 KiB rows
   in a scratch table of the same database (a transaction per 16 rows, reads of 16).
   Ratios: upload MB/s / min(AES-GCM encrypt, DB write); download / min(AES-GCM decrypt, DB
   read). Target: >= 0.5 each. Peak memory of one upload and one download (tracemalloc, the
   upload buffer included) as a multiple of the document's size: target < 3.
3. **End to end over gRPC**: `pdv serve` (one serving process, the local key file) spawned on
   the same database, driven through the raw generated stubs in 64 KiB chunks, with real
   validation of a camera JPEG (decoded, turned upright, re-encoded: a second, sanitized copy is
   sealed too) and of a scanned PDF of about the same size; the server's peak RSS growth per
   transfer (its peak reset before each).
4. **Validation apart**: `ContentInspector.inspect` on images at 10 MP and at the 50 MP limit
   (noisy: large files; flat: small files, as many pixels), PNGs, PDFs at the 20-page limit,
   and the documents of (3), each in a fresh process: MB/s and peak memory.

Rounds interleave the baselines with pdvault's transfers, so that the machine's drift (two
cores shared with other work) falls on both alike; each figure is the median of its rounds.
MB/s is 10^6 bytes per second.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import report
from bench.baselines import SegmentAead, SegmentTable, dv1_pieces
from bench.document_samples import (
    MIB,
    Sample,
    small_validation_samples,
    transfer_samples,
    validation_samples,
)
from bench.document_transfers import (
    CALLER,
    GrpcClient,
    InProcess,
    PeakRss,
    settings,
    validated_archive,
)
from bench.procs import ROOT, BenchError, PdvaultServer, database_url, python_env
from vault.app import App, build_app
from vault.domain.documents import DocumentId
from vault.media.inspect import DEFAULT_MAX_PAGES, DEFAULT_MAX_PIXELS

RATIO_TARGET = 0.5  # of the slower baseline
MEMORY_TARGET = 3.0  # times the document's size
MAX_BYTES = 20 * MIB  # the shipped policy's [documents] max_bytes
Say = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    dbs: tuple[str, ...] = ("sqlite", "postgresql")
    sizes: tuple[int, ...] = (MIB, 10 * MIB)
    parts: tuple[str, ...] = ("inprocess", "grpc", "validation")
    rounds: int = 10  # in-process rounds per size (baselines, upload, download), after one more
    grpc_rounds: int = 5  # per document, after a warm-up on a tiny one
    validation_rounds: int = 3  # timed inspections per document, after the memory runs
    small_validation: bool = False  # the unit test's small files instead of the real set
    quick: bool = False
    postgres_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    keep: bool = False


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else math.nan


def _rate(size: int, seconds: Sequence[float]) -> float:
    """MB/s of the median round."""
    m = _median(seconds)
    return size / m / 1e6 if m and not math.isnan(m) else math.nan


# -- the database under test --------------------------------------------------------------------


def database(db: str, opts: Options) -> contextlib.AbstractContextManager[str]:
    """The database URL pdvault is given, created for the run and dropped after it."""
    return database_url(db, opts.postgres_url, f"pdvault_bench_docs_{os.getpid()}")


# -- 1 and 2: in-process, with the baselines ----------------------------------------------------


def in_process(
    db: str, url: str, data_dir: Path, samples: dict[int, Sample], opts: Options, say: Say
) -> list[dict[str, Any]]:
    app = build_app(settings(data_dir, url))
    out = []
    table = None
    try:
        archive = validated_archive(app)
        table = SegmentTable(url or str(app.engine.url))
        path = InProcess(archive, subject=f"bench-documents-{db}")
        # The archive build_app wired, with the real ContentInspector: what the checks add.
        checked = InProcess(app.documents, subject=f"bench-documents-{db}")
        for size, sample in samples.items():
            pieces = dv1_pieces(sample.content)
            times = _rounds(db, app, table, (path, checked), sample, pieces, opts.rounds)
            document_id, up_traced = path.upload_traced(sample)
            down_traced = path.download_traced(document_id)[1]
            row = _in_process_row(db, sample, len(pieces), times)
            row["memory"] = {
                "upload_traced_peak_bytes": up_traced,
                "download_traced_peak_bytes": down_traced,
                "upload_traced_x": up_traced / size,
                "download_traced_x": down_traced / size,
            }
            out.append(row)
            say(
                f"{db} in-process {sample.name}: upload {row['upload_mb_s']:.0f} MB/s "
                f"(x{row['ratios']['upload']:.2f}), download {row['download_mb_s']:.0f} MB/s "
                f"(x{row['ratios']['download']:.2f})"
            )
    finally:
        if table is not None:
            table.close()
        app.close()
    return out


def _rounds(
    db: str,
    app: App,
    table: SegmentTable,
    paths: tuple[InProcess, InProcess],
    sample: Sample,
    pieces: list[memoryview],
    rounds: int,
) -> dict[str, list[float]]:
    """Seconds per round of each baseline, of pdvault's upload and download, and of an upload
    with the real content checks, interleaved; the bytes of each checked. Round 0 warms up,
    unmeasured."""
    path, checked = paths
    aead = SegmentAead()
    keys = ("upload", "download", "open", "encrypt", "decrypt", "db_write", "db_read")
    times: dict[str, list[float]] = {k: [] for k in (*keys, "upload_checked")}
    for r in range(rounds + 1):
        t = {}
        start = time.perf_counter()
        sealed = aead.seal(pieces)
        t["encrypt"] = time.perf_counter() - start
        start = time.perf_counter()
        opened = aead.open(sealed)
        t["decrypt"] = time.perf_counter() - start
        start = time.perf_counter()
        table.write(f"raw-{r}", sealed)
        t["db_write"] = time.perf_counter() - start
        start = time.perf_counter()
        read = table.read(f"raw-{r}", len(sealed))
        t["db_read"] = time.perf_counter() - start
        table.clear()
        document_id, t["upload"] = path.upload(sample)
        content, t["download"], t["open"] = path.download(document_id)
        t["upload_checked"] = checked.upload(sample)[1]
        if content != sample.content or b"".join(opened) != sample.content:
            raise BenchError(f"{db}: a round trip of {sample.name} changed its bytes")
        if read != sealed:
            raise BenchError(f"{db}: the raw table returned other rows than written")
        if r == 0:
            record = app.stores.documents.document(DocumentId(document_id))
            segments = record.variants[0].segments if record else -1
            if segments != len(pieces):
                raise BenchError(
                    f"{db}: pdvault wrote {segments} segments, the baseline {len(pieces)}"
                )
            continue
        for k, v in t.items():
            times[k].append(v)
    return times


def _in_process_row(
    db: str, sample: Sample, segments: int, times: dict[str, list[float]]
) -> dict[str, Any]:
    size = sample.size
    mb = {k: _rate(size, v) for k, v in times.items() if k != "open"}
    write_floor = min(mb["encrypt"], mb["db_write"])
    read_floor = min(mb["decrypt"], mb["db_read"])
    return {
        "db": db,
        "size": size,
        "sample": sample.name,
        "segments": segments,
        "rounds": len(times["upload"]),
        "upload_mb_s": mb["upload"],
        "download_mb_s": mb["download"],
        "aes_gcm_encrypt_mb_s": mb["encrypt"],
        "aes_gcm_decrypt_mb_s": mb["decrypt"],
        "db_write_mb_s": mb["db_write"],
        "db_read_mb_s": mb["db_read"],
        # With the real ContentInspector (decode, turn upright, re-encode; the sanitized copy
        # sealed and written too): the checks' share of such an upload.
        "upload_checked_mb_s": mb["upload_checked"],
        "checks_share": 1 - _median(times["upload"]) / _median(times["upload_checked"]),
        "ratios": {
            "upload": mb["upload"] / write_floor,
            "download": mb["download"] / read_floor,
            "upload_bound": "aes_gcm" if mb["encrypt"] < mb["db_write"] else "db_write",
            "download_bound": "aes_gcm" if mb["decrypt"] < mb["db_read"] else "db_read",
        },
        "median_ms": {k: _median(v) * 1e3 for k, v in times.items()},
        "seconds": times,
    }


# -- 3: over gRPC -------------------------------------------------------------------------------


def over_grpc(
    db: str,
    url: str,
    data_dir: Path,
    log_dir: Path,
    samples: list[Sample],
    opts: Options,
    say: Say,
) -> list[dict[str, Any]]:
    """Each document on a freshly started server (one serving process), after a tiny upload and
    download of its media type: so its memory is its own, not what an earlier, larger transfer
    left in the allocator."""
    out = []
    tiny = {s.media_type: s for s in small_validation_samples()}
    for sample in samples:
        server = PdvaultServer(
            data_dir=data_dir, log_dir=log_dir, database_url=url, kms="local", processes=1
        )
        server.start()
        try:
            pid = server.serving_pids[0]
            client = GrpcClient(server.addr, server.api_key(CALLER), f"bench-grpc-{db}")
            try:
                warm = tiny[sample.media_type]
                client.download(client.upload(warm)[0])
                out.append(grpc_rounds(db, client, pid, sample, opts))
            finally:
                client.close()
        finally:
            server.stop()
        row = out[-1]
        say(
            f"{db} gRPC {sample.name}: upload {row['upload_mb_s']:.1f} MB/s, download "
            f"{row['download_mb_s']:.0f} MB/s, server RSS +{_x(row['server_rss']['upload_x'])}"
            f" / +{_x(row['server_rss']['download_x'])}"
        )
    return out


def grpc_rounds(
    db: str, client: GrpcClient, pid: int, sample: Sample, opts: Options
) -> dict[str, Any]:
    rss = PeakRss(pid) if PeakRss.available(pid) else None
    up_s: list[float] = []
    down_s: list[float] = []
    up_rss: list[int] = []
    down_rss: list[int] = []
    rss_before = None
    for _ in range(opts.grpc_rounds):
        if rss:
            rss.begin()
            rss_before = rss_before or rss.start
        document_id, seconds = client.upload(sample)
        up_s.append(seconds)
        if rss:
            up_rss.append(rss.growth())
            rss.begin()
        content, seconds = client.download(document_id)
        down_s.append(seconds)
        if rss:
            down_rss.append(rss.growth())
        if content != sample.content:
            raise BenchError(f"{db}: the download of {sample.name} differs from its upload")
    size = sample.size
    return {
        "db": db,
        "sample": sample.name,
        "media_type": sample.media_type,
        "size": size,
        "rounds": len(up_s),
        "upload_mb_s": _rate(size, up_s),
        "download_mb_s": _rate(size, down_s),
        "median_ms": {"upload": _median(up_s) * 1e3, "download": _median(down_s) * 1e3},
        "seconds": {"upload": up_s, "download": down_s},
        "server_rss": {
            # The first transfer of a fresh process shows the most (later ones reuse memory).
            "before_first_upload_bytes": rss_before,
            "upload_growth_bytes": up_rss,
            "download_growth_bytes": down_rss,
            "upload_x": max(up_rss) / size if up_rss else None,
            "download_x": max(down_rss) / size if down_rss else None,
        },
    }


# -- 4: validation ------------------------------------------------------------------------------


def validation(
    samples: list[Sample], workdir: Path, opts: Options, say: Say
) -> list[dict[str, Any]]:
    out = []
    for sample in samples:
        path = workdir / f"{sample.name}.bin"
        path.write_bytes(sample.content)
        try:
            done = subprocess.run(  # noqa: S603  (our own interpreter and module)
                [
                    sys.executable,
                    "-m",
                    "bench.document_validation",
                    str(path),
                    sample.media_type,
                    str(opts.validation_rounds),
                    str(DEFAULT_MAX_PIXELS),
                    str(DEFAULT_MAX_PAGES),
                ],
                env=python_env(),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        finally:
            path.unlink()
        if done.returncode != 0:
            raise BenchError(f"validation of {sample.name} failed:\n{done.stderr[-2000:]}")
        row = {**sample.describe(), **json.loads(done.stdout)}
        out.append(row)
        say(
            f"validation {sample.name}: {row['mb_per_s']:.1f} MB/s, "
            f"RSS +{_mib(row['rss_growth_bytes'])} MiB"
        )
    return out


# -- the run ------------------------------------------------------------------------------------


def run(opts: Options, say: Say) -> dict[str, Any]:
    os.umask(0o077)  # the run's databases, keys and logs are for this user only
    workdir = Path(tempfile.mkdtemp(prefix="pdvault-docbench-"))
    try:
        say("making the documents")
        by_size = {size: transfer_samples(size) for size in opts.sizes}
        jpegs = {size: pair[0] for size, pair in by_size.items()}
        transfers = [s for pair in by_size.values() for s in pair]
        out: dict[str, Any] = {
            "in_process": [],
            "grpc": [],
            "validation": [],
            "samples": [s.describe() for s in transfers],
        }
        for db in opts.dbs:
            with database(db, opts) as url:
                data_dir = workdir / db / "data"
                if "inprocess" in opts.parts:
                    out["in_process"] += in_process(db, url, data_dir, jpegs, opts, say)
                if "grpc" in opts.parts:
                    out["grpc"] += over_grpc(
                        db, url, data_dir, workdir / db / "logs", transfers, opts, say
                    )
        if "validation" in opts.parts:
            checked = (
                small_validation_samples()
                if opts.small_validation
                else validation_samples(DEFAULT_MAX_PIXELS, DEFAULT_MAX_PAGES, MAX_BYTES)
            )
            out["validation"] = validation([*checked, *transfers], workdir, opts, say)
        _beside_grpc(out)
    finally:
        if opts.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return out


def _beside_grpc(out: dict[str, Any]) -> None:
    """Beside each gRPC upload, the inspection of the same document (its median time, measured
    apart), and how its MB/s compare with the in-process path's for the same bytes."""
    inspected = {v["name"]: v for v in out["validation"]}
    in_proc = {(r["db"], r["sample"]): r for r in out["in_process"]}
    for row in out["grpc"]:
        v = inspected.get(row["sample"])
        row["validation_ms"] = v["median_s"] * 1e3 if v else None
        p = in_proc.get((row["db"], row["sample"]))
        row["vs_in_process"] = (
            {
                "upload": row["upload_mb_s"] / p["upload_mb_s"],
                "download": row["download_mb_s"] / p["download_mb_s"],
            }
            if p
            else None
        )


def evaluate(out: dict[str, Any]) -> list[dict[str, Any]]:
    verdicts = []
    for r in out["in_process"]:
        where = f"{r['db']} {_size(r['size'])}"
        m = r["memory"]
        for what, ratio, floor in (
            ("upload", r["ratios"]["upload"], "min(AES-GCM encrypt, DB write)"),
            ("download", r["ratios"]["download"], "min(AES-GCM decrypt, DB read)"),
        ):
            verdicts.append(
                {
                    "where": where,
                    "target": f"{what} >= {RATIO_TARGET:g} x {floor}",
                    "verdict": "PASS" if ratio >= RATIO_TARGET else "MISS",
                    "measured": f"{ratio:.2f} ({r[what + '_mb_s']:.0f} MB/s)",
                }
            )
        for what in ("upload", "download"):
            x = m[f"{what}_traced_x"]
            verdicts.append(
                {
                    "where": where,
                    "target": f"{what} peak memory < {MEMORY_TARGET:g} x the document",
                    "verdict": "PASS" if x < MEMORY_TARGET else "MISS",
                    "measured": f"{x:.2f}x ({_mib(m[what + '_traced_peak_bytes'])} MiB, "
                    "tracemalloc)",
                }
            )
    return verdicts


# -- the output ---------------------------------------------------------------------------------


def _size(n: int) -> str:
    return f"{n / MIB:g} MiB" if n >= MIB // 4 else f"{n / 1024:g} KiB"


def _mib(n: float | None) -> str:
    return "-" if n is None else f"{n / MIB:.1f}"


def _x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _mbs(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def render(out: dict[str, Any]) -> str:
    meta, o = out["meta"], out["options"]
    lines = [
        f"pdvault documents benchmark  {meta['started']}  commit {meta['commit']}"
        f"{' (dirty)' if meta['dirty'] else ''}  {meta['cores']} cores  load "
        f"{meta['load_average_at_start']:.1f}{'  QUICK' if o['quick'] else ''}",
        "MB/s = 10^6 bytes/s, median of the rounds; x = a multiple of the document's size",
    ]
    if out["in_process"]:
        lines += [
            "",
            "Storage and encryption path, in-process: DocumentArchive wired as vault/app.py does, "
            "with an INSPECTOR STUB",
            "that only sniffs the media type (a document already validated: no decoding, no "
            "sanitized copy, no malware scan).",
            f"Baselines in the same {o['rounds']} rounds over the same bytes: raw AES-256-GCM over "
            "the DV1 segments; raw SQLAlchemy",
            "insert/select of as many 64 KiB rows (a transaction per 16 rows, reads of 16) in a "
            "scratch table of the same database.",
            "",
            f"  {'db':<10} {'size':>7} {'segs':>4}  {'upload':>7} {'AES enc':>7} {'DB wr':>6} "
            f"{'ratio':>5}  {'download':>8} {'open ms':>7} {'AES dec':>7} {'DB rd':>6} "
            f"{'ratio':>5}  {'up mem':>6} {'down mem':>8}  {'checked':>7} {'checks':>6}",
        ]
        for r in out["in_process"]:
            m = r["memory"]
            lines.append(
                f"  {r['db']:<10} {_size(r['size']):>7} {r['segments']:>4}  "
                f"{_mbs(r['upload_mb_s']):>7} {_mbs(r['aes_gcm_encrypt_mb_s']):>7} "
                f"{_mbs(r['db_write_mb_s']):>6} {r['ratios']['upload']:>5.2f}  "
                f"{_mbs(r['download_mb_s']):>8} {r['median_ms']['open']:>7.1f} "
                f"{_mbs(r['aes_gcm_decrypt_mb_s']):>7} "
                f"{_mbs(r['db_read_mb_s']):>6} {r['ratios']['download']:>5.2f}  "
                f"{_x(m['upload_traced_x']):>6} {_x(m['download_traced_x']):>8}  "
                f"{_mbs(r['upload_checked_mb_s']):>7} {r['checks_share']:>6.0%}"
            )
        lines += [
            "  ratio: pdvault's MB/s over the slower baseline's. mem: tracemalloc peak of one "
            "transfer, the upload buffer included",
            "  (Python's allocations: not SQLite's page cache or libpq's buffers; the gRPC "
            "server's RSS below has those).",
            "  open ms: of the download, `open` alone (decision, record and key lookups, the "
            "audit's commit), before the first byte.",
            "  checked: MB/s of the same upload through the archive build_app wired, with the "
            "real ContentInspector (decoded, turned",
            "  upright, re-encoded; the sanitized copy sealed and written too), in the same "
            "rounds; checks: its share of that upload's time.",
        ]
    if out["grpc"]:
        lines += [
            "",
            "End to end over gRPC: `pdv serve` (1 serving process, local key file) on the same "
            "database, raw stubs, 64 KiB chunks,",
            "REAL VALIDATION (an image is decoded, turned upright and re-encoded, and its "
            "sanitized copy sealed as well). A fresh server",
            "per document; server RSS: the largest growth of its peak RSS in one transfer.",
            "",
            f"  {'db':<10} {'document':<10} {'bytes':>11}  {'upload':>7} {'ms':>6} "
            f"{'validate ms':>11}  {'download':>8} {'ms':>6}  "
            f"{'srv RSS up':>10} {'down':>6}  {'vs in-process up/down':>21}",
        ]
        for r in out["grpc"]:
            vs = r.get("vs_in_process")
            versus = "-" if vs is None else f"{vs['upload']:.2f} / {vs['download']:.2f}"
            lines.append(
                f"  {r['db']:<10} {r['sample']:<10} {r['size']:>11,}  "
                f"{_mbs(r['upload_mb_s']):>7} {r['median_ms']['upload']:>6.0f} "
                f"{_ms(r.get('validation_ms')):>11}  "
                f"{_mbs(r['download_mb_s']):>8} {r['median_ms']['download']:>6.0f}  "
                f"{_x(r['server_rss']['upload_x']):>10} {_x(r['server_rss']['download_x']):>6}  "
                f"{versus:>21}"
            )
        lines += [
            "  validate ms: ContentInspector.inspect of the same document, measured apart "
            "(below, another process at another time:",
            "  compare, do not subtract). vs in-process: over the in-process path's MB/s of the "
            "same bytes (the stub's; the JPEGs only).",
        ]
    if out["validation"]:
        lines += [
            "",
            "Validation apart: ContentInspector.inspect (limits 50 MP, 20 pages), each document "
            "in a fresh process; peak memory over the",
            "RSS before (which holds the upload buffer); tracemalloc sees only Python's "
            "allocations (the content's copy, the output).",
            "",
            f"  {'document':<22} {'bytes':>11} {'pixels':>6} {'pages':>5}  {'ms':>7} "
            f"{'MB/s':>6} {'MP/s':>5}  {'RSS MiB':>7} {'x bytes':>7} {'B/pixel':>7}  "
            f"{'traced MiB':>10}",
        ]
        for v in out["validation"]:
            pixels = v.get("pixels")
            rss = v.get("rss_growth_bytes")
            mps = v["megapixels_per_s"]
            lines.append(
                f"  {v['name']:<22} {v['bytes']:>11,} "
                f"{'-' if not pixels else f'{pixels / 1e6:.1f}M':>6} {v['pages'] or '-':>5}  "
                f"{v['median_s'] * 1e3:>7.0f} {_mbs(v['mb_per_s']):>6} "
                f"{'-' if not mps else f'{mps:.1f}':>5}  "
                f"{_mib(rss):>7} {_x(_div(rss, v['bytes'])):>7} "
                f"{'-' if not pixels or rss is None else f'{rss / pixels:.1f}':>7}  "
                f"{_mib(v['traced_peak_bytes']):>10}"
            )
        lines.extend(f"  {v['name']}: {v['what']}" for v in out["validation"])
    if out.get("targets"):
        lines += ["", "Targets (issue #11; the storage and encryption path)"]
        lines += [
            f"  {v['verdict']:<4}  {v['where']:<18} {v['target']:<46} {v['measured']}"
            for v in out["targets"]
        ]
    return "\n".join(lines)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def _div(a: float | None, b: float) -> float | None:
    return None if a is None else a / b


# -- the command --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.documents",
        description="Document upload/download MB/s against raw AES-GCM and the raw database, "
        "over gRPC, and validation apart (issue #11).",
    )
    p.add_argument("--quick", action="store_true", help="fewer rounds: a 1-2 minute smoke run")
    p.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument(
        "--sizes",
        default="1,10",
        metavar="MIB[,MIB]",
        help="document sizes in MiB (default 1,10)",
    )
    p.add_argument(
        "--only",
        default="inprocess,grpc,validation",
        metavar="PART[,PART]",
        help="inprocess, grpc, validation (default: all three)",
    )
    p.add_argument("--rounds", type=int, metavar="N", help="in-process rounds (10; quick 3)")
    p.add_argument("--grpc-rounds", type=int, metavar="N", help="per document (5; quick 2)")
    p.add_argument("--validation-rounds", type=int, metavar="N", help="per document (3; quick 1)")
    p.add_argument("--postgres-url", default=Options.postgres_url)
    p.add_argument(
        "--json", type=Path, metavar="PATH", help="default bench/results/documents-<time>.json"
    )
    p.add_argument("--keep", action="store_true", help="keep the data and server logs")
    return p


def options_from(args: argparse.Namespace) -> Options:
    quick = bool(args.quick)
    parts = tuple(p.strip() for p in args.only.split(",") if p.strip())
    unknown = set(parts) - {"inprocess", "grpc", "validation"}
    if unknown:
        raise BenchError(f"--only: unknown parts {sorted(unknown)}")
    sizes = tuple(int(float(s) * MIB) for s in args.sizes.split(",") if s.strip())
    if not sizes or any(not 64 * 1024 <= s <= MAX_BYTES for s in sizes):
        raise BenchError("--sizes: from 0.0625 to 20 MiB each")

    def pick(value: int | None, normal: int, small: int) -> int:
        return value if value is not None else (small if quick else normal)

    return Options(
        dbs=("sqlite", "postgresql") if args.db == "both" else (args.db,),
        sizes=sizes,
        parts=parts,
        rounds=pick(args.rounds, 10, 3),
        grpc_rounds=pick(args.grpc_rounds, 5, 2),
        validation_rounds=pick(args.validation_rounds, 3, 1),
        quick=quick,
        postgres_url=args.postgres_url,
        keep=args.keep,
    )


def default_json_path(started: Any) -> Path:
    return ROOT / "bench" / "results" / f"documents-{started.strftime('%Y%m%dT%H%M%SZ')}.json"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = report.now()
    t0 = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {message}", file=sys.stderr, flush=True)

    try:
        opts = options_from(args)
        out = run(opts, say)
    except BenchError as exc:
        print(f"bench.documents: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench.documents: interrupted", file=sys.stderr)
        return 130
    out["meta"] = report.metadata(started)
    out["meta"]["seconds"] = round(time.monotonic() - t0, 1)
    out["options"] = asdict(opts)
    out["targets"] = evaluate(out)
    path = args.json or default_json_path(started)
    report.write_json(out, path)
    print(render(out))
    print(f"\n{out['meta']['seconds']:.0f} s; JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Serving from several processes on one port, and cache coherence between processes on SQLite."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import pytest

from pdvault_client import Client, Field, NotFoundError
from tests.conftest import RunningServer, spawn_serve
from vault.app import build_app
from vault.domain.context import RequestContext
from vault.domain.types import SubjectId

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_pdv_serve_runs_one_process_per_core_on_one_port(tmp_path: Path) -> None:
    proc, addr, log = spawn_serve(tmp_path, PDV_PROCESSES="2")
    try:
        # One line, once every process accepts calls (spawn_serve waited for it).
        [line] = [ln for ln in log.read_text().splitlines() if "listening on" in ln]
        assert "2 processes" in line
        pids = set(re.findall(r"pid (\d+)", line))
        assert len(pids) == 2
        creds = json.loads((tmp_path / ".pdvault" / "dev-credentials.json").read_text())
        tokens = []
        for i in range(6):  # new connections: the kernel spreads them over both processes
            with Client(addr, creds["kyc"]) as kyc:
                tokens.append(kyc.tokenize(f"u{i}", [Field("name", f"N {i}")])[0].token)
        with Client(addr, creds["shipping"]) as shipping:
            got = shipping.detokenize(tokens, "product_shipping")
        assert [g.value for g in got] == [f"N {i}" for i in range(6)]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()


def test_a_shred_in_one_process_drops_the_key_in_another_on_sqlite(
    server: RunningServer,
) -> None:
    if not server.app.settings.uses_sqlite:
        pytest.skip("PostgreSQL uses NOTIFY: see test_replicas.py")
    other = build_app(dataclasses.replace(server.app.settings))  # a second process's view
    try:
        with server.client("kyc") as kyc:
            [tok] = kyc.tokenize("user-1", [Field("name", "Ann Lee")])
        stored = other.stores.values.data_keys([SubjectId("user-1")])[SubjectId("user-1")]
        ctx = RequestContext.system("test")
        other.keys.unwrap(ctx, [(SubjectId("user-1"), stored.wrapped)])  # cached in "the other"
        assert other.cache is not None
        assert other.cache.stats().entries == 1
        with server.client("ops") as ops:
            ops.subjects().shred("user-1")
        deadline = time.monotonic() + 10
        while other.cache.stats().entries and time.monotonic() < deadline:
            time.sleep(0.1)
        assert other.cache.stats().entries == 0
        with server.client("shipping") as shipping:
            [got] = shipping.detokenize([tok.token], "product_shipping")
        assert isinstance(got.error, NotFoundError)
    finally:
        other.close()

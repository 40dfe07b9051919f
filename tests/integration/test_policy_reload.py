"""A changed policy file put in force without a restart (issue #12 §5): on SIGHUP to a real
`pdv serve` (one process, and the parent of several, which passes it on), on the operator's call
(PolicyService.ReloadPolicy, `pdv policy reload`) reaching every process through the notice
feed, and an invalid file refused with the policy in force kept. Each change is audited with
the versions before and after."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from pdvault.v1 import document_service_pb2, document_service_pb2_grpc
from sqlalchemy.engine import make_url

from pdvault_client import Client, Field, InvalidArgumentError, PermissionDeniedError
from tests import samples
from tests.conftest import RunningServer, pdv_env, running, spawn_serve
from vault.app import App, build_app
from vault.config import Settings
from vault.domain.context import RequestContext
from vault.domain.policy_file import default_policy_text
from vault.domain.types import Action, AuditEvent, CallerName, Outcome
from vault.transport.server import ServerThread

PDV = [sys.executable, "-m", "pdvault_client.cli"]
SHIPPING_PURPOSES = 'purposes = ["product_shipping", "marketplace_shipping_provision"]'


def version_2(text: str) -> str:
    """The default policy at version 2, where shipping may also claim payment."""
    changed = text.replace("version = 1\n", "version = 2\n", 1).replace(
        SHIPPING_PURPOSES,
        'purposes = ["product_shipping", "marketplace_shipping_provision", "payment"]',
    )
    assert changed != text
    return changed


INVALID = "[policy\nname = 'broken'\n"


def eventually(check: Callable[[], bool], within: float = 60.0) -> None:
    """Wait for `check` (a bound, not a measurement: nothing asserts how long it took)."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


def _in_force(log: Path, version: int) -> set[str]:
    """The pids of the processes that logged putting version `version` in force."""
    found = re.findall(rf"v{version} \(sha256:\w+\) in force \(process (\d+) ", log.read_text())
    return set(found)


def _refused(log: Path) -> int:
    return log.read_text().count("policy file refused")


def _stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "Traceback" not in text, text


def _keys(cwd: Path) -> dict[str, str]:
    data: dict[str, str] = json.loads((cwd / ".pdvault" / "dev-credentials.json").read_text())
    return data


@pytest.fixture(params=["1", "2"], ids=["1-process", "2-processes"])
def processes(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.slow
def test_sighup_puts_a_changed_policy_in_force(tmp_path: Path, processes: str) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(default_policy_text(), encoding="utf-8")
    proc, addr, log = spawn_serve(tmp_path, PDV_POLICY=str(policy), PDV_PROCESSES=processes)
    count = int(processes)
    try:
        keys = _keys(tmp_path)
        with Client(addr, keys["payment"]) as payment:
            [card] = payment.tokenize("u-1", [Field("card_number", "4111111111111111")])
        with Client(addr, keys["shipping"]) as shipping, pytest.raises(PermissionDeniedError):
            shipping.detokenize([card.token], "payment")
        policy.write_text(version_2(default_policy_text()), encoding="utf-8")
        proc.send_signal(signal.SIGHUP)
        eventually(lambda: len(_in_force(log, 2)) == count)
        # Every process serves the new policy: shipping may now claim payment.
        for _ in range(2 * count):
            with Client(addr, keys["shipping"]) as shipping:
                [read] = shipping.detokenize([card.token], "payment")
                assert read.value == "4111111111111111"
            with Client(addr, keys["ops"]) as ops:
                assert ops.policy().get()["version"] == 2
        # An invalid file is refused in every process; version 2 stays in force.
        policy.write_text(INVALID, encoding="utf-8")
        proc.send_signal(signal.SIGHUP)
        eventually(lambda: _refused(log) == count)
        with Client(addr, keys["ops"]) as ops:
            assert ops.policy().get()["version"] == 2
        with Client(addr, keys["shipping"]) as shipping:
            assert shipping.detokenize([card.token], "payment")[0].ok
        lines = [ln for ln in log.read_text().splitlines() if "policy file refused" in ln]
        assert all("v2" in ln and "stays in force" in ln for ln in lines), lines
        assert all("not valid TOML" in ln for ln in lines), lines
    finally:
        _stop(proc, log)


@pytest.mark.slow
def test_the_operator_call_reaches_every_process(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(default_policy_text(), encoding="utf-8")
    proc, addr, log = spawn_serve(tmp_path, PDV_POLICY=str(policy), PDV_PROCESSES="2")
    env = pdv_env(PDV_ADDR=addr, PDV_DATA_DIR=str(tmp_path / ".pdvault"))

    def pdv(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PDV, *args],
            check=False,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    try:
        same = pdv("policy", "reload", "--caller", "ops")
        assert same.returncode == 0, same.stderr
        assert same.stdout.startswith("policy engoo-privacy-policy v1 in force, unchanged;")
        policy.write_text(version_2(default_policy_text()), encoding="utf-8")
        done = pdv("policy", "reload", "--caller", "ops", "--output", "json")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert (answer["previousVersion"], answer["version"], answer["changed"]) == (1, 2, True)
        assert answer["digest"].startswith("sha256:")
        # The process that answered, then the other one when it hears the notice.
        eventually(lambda: len(_in_force(log, 2)) == 2)
        refused = pdv("policy", "reload", "--caller", "payment")
        assert refused.returncode == 4
        assert refused.stderr.startswith("PERMISSION_DENIED: caller 'payment' may not administer")
        policy.write_text(INVALID, encoding="utf-8")
        bad = pdv("policy", "reload", "--caller", "ops")
        assert bad.returncode == 3
        assert bad.stderr.startswith("INVALID_ARGUMENT: policy_file: policy file is not valid TOML")
        assert bad.stdout == ""
        with Client(addr, _keys(tmp_path)["ops"]) as ops:
            assert ops.policy().get()["version"] == 2
    finally:
        _stop(proc, log)
    tail = pdv("audit", "tail")
    assert tail.returncode == 0, tail.stderr
    entries = [json.loads(line) for line in tail.stdout.splitlines()]
    reloads = [e for e in entries if e["action"] == "policy_reload"]
    granted = [e for e in reloads if e["outcome"] == "granted"]
    assert {e["caller"] for e in granted} == {"ops", "system:policy-notice"}
    assert all(" v1 (sha256:" in e["detail"] and " -> " in e["detail"] for e in granted)
    assert all(e["policy_version"] == 2 for e in granted)
    [bad_entry] = [e for e in reloads if e["outcome"] == "refused" and e["caller"] == "ops"]
    assert bad_entry["policy_version"] == 2
    assert "not valid TOML" in bad_entry["detail"]
    assert any(e["action"] == "policy_reload" and e["caller"] == "payment" for e in entries)


# -- in this process: the real server on a thread, two applications on one database -----------


def _ops(app: App) -> RequestContext:
    return RequestContext.system("ops")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_reload_over_the_api_and_what_calls_under_way_keep(
    app: App, server: RunningServer, settings: Settings
) -> None:
    assert settings.policy_file is not None
    original = settings.policy_file.read_text("utf-8")
    before = app.uses  # what a call under way holds
    with server.client("ops") as ops:
        first = ops.policy().get()
        assert first["version"] == 1
        settings.policy_file.write_text(version_2(original), encoding="utf-8")
        answer = ops.policy().reload()
        assert answer["changed"] is True
        assert answer["previousDigest"] == first["digest"]
        assert ops.policy().get() == {
            "name": answer["name"],
            "version": 2,
            "digest": answer["digest"],
        }
        settings.policy_file.write_text(INVALID, encoding="utf-8")
        with pytest.raises(InvalidArgumentError) as invalid:
            ops.policy().reload()
        assert invalid.value.violations[0].field == "policy_file"
        assert ops.policy().get()["version"] == 2
    # The use cases a call started with are whole and unchanged; new calls get the new set.
    assert before.policy.version == 1
    assert before.tokens.policy is before.policy
    assert app.uses.policy.version == 2
    assert app.uses.tokens.policy is app.uses.policy
    assert CallerName("shipping") in app.uses.policy.callers
    assert "payment" in app.uses.policy.callers[CallerName("shipping")].purposes


@pytest.fixture
def second(settings: Settings) -> Iterator[App]:
    """Another process's application on the same database (a second process of the pod, or a
    replica with the same policy file)."""
    other = build_app(settings, primary=False)
    try:
        yield other
    finally:
        other.close()


@pytest.mark.parametrize(
    "database_url",
    ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
    indirect=True,
)
def test_a_reload_is_announced_to_every_process(app: App, second: App, settings: Settings) -> None:
    assert settings.policy_file is not None
    assert app.policies is not None
    text = settings.policy_file.read_text("utf-8")
    settings.policy_file.write_text(version_2(text), encoding="utf-8")
    change = app.policies.reload(_ops(app))
    assert change.changed
    assert app.policy.version == 2
    reloader = second.reloader
    assert reloader is not None
    eventually(lambda: reloader.current.digest == change.after.digest)
    assert second.policy.version == 2

    def reloads() -> list[AuditEvent]:
        entries = [e.event for e in app.stores.audit.entries(0, 1000)]
        return [e for e in entries if e.action is Action.POLICY_RELOAD]

    # The other process audits its change right after it swapped the policy in.
    eventually(lambda: len(reloads()) == 2)
    assert [(e.caller, e.outcome) for e in reloads()] == [
        ("ops", Outcome.GRANTED),
        ("system:policy-notice", Outcome.GRANTED),
    ]
    assert all(e.policy_version == 2 for e in reloads())
    # The entries after the reload record the version that decided them.
    with running(app) as srv, srv.client("kyc") as kyc:
        kyc.tokenize("u-2", [Field("name", "Ann Lee")])
    last = app.stores.audit.entries(0, 1000)[-1].event
    assert last.action is Action.TOKENIZE
    assert last.policy_version == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_replica_whose_file_lags_catches_up_at_the_next_reload(
    app: App, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A replica with a policy file of its own (a ConfigMap not yet synced on its node) keeps
    its policy when a reload is announced, and says so; the next operator call, unchanged where
    it lands, is announced all the same and the replica catches up."""
    assert settings.policy_file is not None
    assert app.policies is not None
    text = settings.policy_file.read_text("utf-8")
    own = tmp_path / "replica-policy.toml"
    own.write_text(text, encoding="utf-8")
    lagging = build_app(dataclasses.replace(settings, policy_file=own), primary=False)
    try:
        assert lagging.reloader is not None
        reloader = lagging.reloader
        settings.policy_file.write_text(version_2(text), encoding="utf-8")
        first = app.policies.reload(_ops(app))
        assert first.changed
        eventually(lambda: "a policy reload was announced" in caplog.text)
        assert lagging.policy.version == 1
        own.write_text(version_2(text), encoding="utf-8")  # the file arrives on that node
        again = app.policies.reload(_ops(app))
        assert not again.changed
        eventually(lambda: reloader.current.digest == first.after.digest)
        assert lagging.policy.version == 2
    finally:
        lagging.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_call_under_way_finishes_with_the_policy_it_started_with(
    app: App, settings: Settings
) -> None:
    """An upload that started under version 1 (kyc may upload) finishes under it, although
    version 2 (kyc may not) is put in force while its chunks are still on their way; the next
    upload is refused by version 2."""
    assert settings.policy_file is not None
    assert app.reloader is not None
    text = settings.policy_file.read_text("utf-8")
    no_uploads = text.replace("version = 1\n", "version = 2\n", 1).replace(
        'tokenize = ["*"]', "tokenize = []", 1
    )
    content = samples.jpeg()
    srv = ServerThread(app, "127.0.0.1:0")
    try:
        key = json.loads(settings.credentials_file.read_text())["kyc"]
        go_on = threading.Event()

        def messages() -> Iterator[document_service_pb2.UploadDocumentRequest]:
            yield document_service_pb2.UploadDocumentRequest(
                header=document_service_pb2.UploadHeader(
                    subject="u-upload",
                    document_type=document_service_pb2.DOCUMENT_TYPE_PASSPORT,
                    media_type="image/jpeg",
                    size=len(content),
                )
            )
            go_on.wait(timeout=60)
            yield document_service_pb2.UploadDocumentRequest(chunk=content)

        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = document_service_pb2_grpc.DocumentServiceStub(channel)
            auth = (("authorization", f"Bearer {key}"),)
            under_way = stub.UploadDocument.future(messages(), metadata=auth, timeout=60)
            # The call is in: authenticated and admitted, its methods chosen.
            eventually(lambda: srv.serving.gate.in_flight == 1)
            settings.policy_file.write_text(no_uploads, encoding="utf-8")
            assert app.reload_policy("system:sighup") is not None
            assert app.policy.version == 2
            go_on.set()
            stored = under_way.result(timeout=60)
            assert stored.document.document_id.startswith("doc_")
            with pytest.raises(grpc.RpcError) as refused:
                stub.UploadDocument(iter(list(_upload(content))), metadata=auth, timeout=60)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        srv.stop(grace=None)
    uploads = [
        e.event
        for e in app.stores.audit.entries(0, 1000)
        if e.event.action is Action.DOCUMENT_UPLOAD
    ]
    assert [(e.outcome, e.policy_version) for e in uploads][-1] == (Outcome.REFUSED, 2)
    assert any(e.outcome is Outcome.GRANTED for e in uploads)


def _upload(content: bytes) -> Iterator[document_service_pb2.UploadDocumentRequest]:
    yield document_service_pb2.UploadDocumentRequest(
        header=document_service_pb2.UploadHeader(
            subject="u-upload",
            document_type=document_service_pb2.DOCUMENT_TYPE_PASSPORT,
            media_type="image/jpeg",
            size=len(content),
        )
    )
    yield document_service_pb2.UploadDocumentRequest(chunk=content)


@pytest.mark.slow
@pytest.mark.postgres
def test_one_operator_call_reloads_a_replica_it_did_not_reach(
    tmp_path: Path, postgres_server_url: str
) -> None:
    """Two `pdv serve` replicas on one PostgreSQL, each with its own copy of the policy file
    (as two pods mounting one ConfigMap): the call to replica A puts version 2 in force in B
    too, through NOTIFY."""

    u = make_url(postgres_server_url)
    with psycopg.connect(
        host=u.host, port=u.port or 5432, dbname=u.database, user=u.username, autocommit=True
    ) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    started = []
    for name in ("a", "b"):
        own = tmp_path / f"policy-{name}.toml"
        own.write_text(default_policy_text(), encoding="utf-8")
        started.append(
            spawn_serve(
                tmp_path,
                name,
                PDV_DATA_DIR=str(tmp_path / "data"),
                PDV_DATABASE_URL=postgres_server_url,
                PDV_PROCESSES="1",
                PDV_POLICY=str(own),
            )
        )
    (a, addr_a, log_a), (b, addr_b, log_b) = started
    try:
        ops_key = json.loads((tmp_path / "data" / "dev-credentials.json").read_text())["ops"]
        for name in ("a", "b"):
            (tmp_path / f"policy-{name}.toml").write_text(
                version_2(default_policy_text()), encoding="utf-8"
            )
        with Client(addr_a, ops_key) as ops_a:
            assert ops_a.policy().reload()["version"] == 2
        with Client(addr_b, ops_key) as ops_b:
            eventually(lambda: ops_b.policy().get()["version"] == 2)
        eventually(lambda: len(_in_force(log_b, 2)) == 1)  # logged after the swap
    finally:
        _stop(a, log_a)
        _stop(b, log_b)

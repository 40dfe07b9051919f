"""The KeyProvider contract, run against every adapter: the local key file, HashiCorp Vault
Transit through the emulator, and a real HashiCorp Vault when VAULT_ADDR and VAULT_TOKEN are set
(it mounts a Transit engine of its own at a random path and removes it afterwards)."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import Transit
from vault.app import cache_limits, transit_settings
from vault.config import Settings
from vault.domain.context import RequestContext
from vault.domain.ports import KeyProvider
from vault.domain.secrets import Secret
from vault.domain.types import SubjectId, WrappedKey
from vault.errors import ConfigurationError, FailedPrecondition, KeyServiceDenied, PdvaultError
from vault.kms.cache import CachingKeyProvider
from vault.kms.instrumented import InstrumentedKeyProvider
from vault.kms.local import LocalKeyFileProvider
from vault.kms.transit import VaultTransitKeyProvider
from vault.observability import Observability
from vault.observability.tracing import Tracing

Factory = Callable[[Path], KeyProvider]

CTX = RequestContext.system("test")


@dataclass
class Subject:
    """A provider under test and the operator credential its administration needs."""

    provider: KeyProvider
    admin: Secret | None


@pytest.fixture
def real_vault() -> Iterator[Subject]:
    addr, token = os.environ.get("VAULT_ADDR"), os.environ.get("VAULT_TOKEN")
    if not addr or not token:
        pytest.skip("set VAULT_ADDR and VAULT_TOKEN to run the contract against a real Vault")
    client: Any = hvac.Client(url=addr, token=token)  # transit methods are untyped
    mount = f"pdvault-test-{secrets.token_hex(4)}"
    client.sys.enable_secrets_engine("transit", path=mount)
    try:
        client.secrets.transit.create_key("pdvault", exportable=False, mount_point=mount)
        client.secrets.transit.create_key("pdvault-naming", exportable=False, mount_point=mount)
        settings = dataclasses.replace(
            transit_settings(Settings()), addr=addr, mount=mount, token=Secret(token.encode())
        )
        yield Subject(VaultTransitKeyProvider(settings), Secret(token.encode()))
    finally:
        client.sys.disable_secrets_engine(mount)


@pytest.fixture(
    params=["local", "local-cached", "local-observed", "transit-emulator", "transit-real"]
)
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    if request.param == "local":
        return Subject(LocalKeyFileProvider(tmp_path / "kek.json"), None)
    if request.param == "local-cached":
        return Subject(
            CachingKeyProvider(
                LocalKeyFileProvider(tmp_path / "kek.json"), cache_limits(Settings())
            ),
            None,
        )
    if request.param == "local-observed":  # as vault.app wires it with metrics and traces on
        observed = Observability(metrics=True, tracing=Tracing(InMemorySpanExporter()))
        instrumented = InstrumentedKeyProvider(
            LocalKeyFileProvider(tmp_path / "kek.json"), observed
        )
        return Subject(
            CachingKeyProvider(instrumented, cache_limits(Settings()), telemetry=observed), None
        )
    if request.param == "transit-emulator":
        transit: Transit = request.getfixturevalue("transit")
        return Subject(transit.provider(), transit.ops())
    real: Subject = request.getfixturevalue("real_vault")
    return real


@pytest.fixture
def provider(subject: Subject) -> KeyProvider:
    return subject.provider


def dek(i: int) -> Secret:
    return Secret(bytes([i]) * 32)


class TestKeyProviderContract:
    def test_wrap_then_unwrap_in_order(self, provider: KeyProvider) -> None:
        items = [(SubjectId(f"s{i}"), dek(i)) for i in range(5)]
        wrapped = provider.wrap(CTX, items)
        assert len(wrapped) == 5
        assert all(w.provider == provider.name for w in wrapped)
        unwrapped = provider.unwrap(CTX, [(s, w) for (s, _), w in zip(items, wrapped, strict=True)])
        assert unwrapped == [d for _, d in items]

    def test_wrapped_keys_do_not_contain_the_key(self, provider: KeyProvider) -> None:
        [w] = provider.wrap(CTX, [(SubjectId("s"), dek(7))])
        assert bytes([7]) * 32 not in w.blob
        assert "blob" not in repr(w)

    def test_tampered_or_foreign_keys_unwrap_to_none(self, provider: KeyProvider) -> None:
        [w] = provider.wrap(CTX, [(SubjectId("s"), dek(1))])
        flipped = bytearray(w.blob)
        flipped[-1] ^= 1
        results = provider.unwrap(
            CTX,
            [
                (SubjectId("s"), WrappedKey(w.provider, w.kek_version, bytes(flipped))),
                (SubjectId("s"), WrappedKey("elsewhere", w.kek_version, w.blob)),
                (SubjectId("s"), WrappedKey(w.provider, w.kek_version, b"short")),
                (SubjectId("s"), w),
            ],
        )
        assert results[:3] == [None, None, None]
        assert results[3] == dek(1)

    def test_empty_batches(self, provider: KeyProvider) -> None:
        assert provider.wrap(CTX, []) == []
        assert provider.unwrap(CTX, []) == []
        assert provider.rewrap(CTX, []) == []

    def test_the_key_ladder(self, subject: Subject) -> None:
        """rotate -> rewrap -> raise min_decryption_version -> trim, as Transit does it."""
        p, admin = subject.provider, subject.admin
        s = SubjectId("s")
        start = p.status(CTX)
        [old] = p.wrap(CTX, [(s, dek(5))])
        assert old.kek_version == start.latest_version

        rotated = p.rotate(CTX, admin)
        assert rotated.latest_version == start.latest_version + 1
        [new] = p.wrap(CTX, [(s, dek(6))])
        assert new.kek_version == rotated.latest_version
        assert p.unwrap(CTX, [(s, old), (s, new)]) == [dek(5), dek(6)]  # both versions decrypt

        [moved] = p.rewrap(CTX, [(s, old)])
        assert moved is not None
        assert moved.kek_version == rotated.latest_version
        assert moved.blob != old.blob
        assert p.unwrap(CTX, [(s, moved)]) == [dek(5)]

        raised = p.set_min_decryption_version(CTX, rotated.latest_version, admin)
        assert raised.min_decryption_version == rotated.latest_version
        assert p.unwrap(CTX, [(s, old)]) == [None]  # below the floor: refused
        assert p.rewrap(CTX, [(s, old)]) == [None]

        trimmed = p.trim(CTX, rotated.latest_version, admin)
        assert trimmed.min_available_version == rotated.latest_version
        assert p.unwrap(CTX, [(s, moved)]) == [dek(5)]

    def test_the_naming_secret_is_32_bytes_and_survives_the_key_ladder(
        self, subject: Subject
    ) -> None:
        p, admin = subject.provider, subject.admin
        first = p.naming_secret(CTX)
        assert len(first) == 32
        assert first.reveal() not in (bytes(32), dek(0).reveal())
        assert first.reveal().hex() not in repr(first)
        p.rotate(CTX, admin)
        p.set_min_decryption_version(CTX, p.status(CTX).latest_version, admin)
        p.trim(CTX, p.status(CTX).latest_version, admin)
        assert p.naming_secret(CTX) == first  # never rotated with the key-encryption key

    def test_trim_cannot_pass_the_decryption_floor(self, subject: Subject) -> None:
        p, admin = subject.provider, subject.admin
        p.rotate(CTX, admin)
        latest = p.status(CTX).latest_version
        with pytest.raises(FailedPrecondition):
            p.trim(CTX, latest, admin)


def test_a_local_wrapped_key_is_bound_to_its_subject(tmp_path: Path) -> None:
    # Transit wraps without associated data (so that rewrap happens inside Vault); there the
    # binding that matters is each value's own associated data (see vault/kms/transit.py).
    provider = LocalKeyFileProvider(tmp_path / "kek.json")
    [w] = provider.wrap(CTX, [(SubjectId("alice"), dek(1))])
    assert provider.unwrap(CTX, [(SubjectId("bob"), w)]) == [None]


def test_transit_administration_needs_the_operators_token(transit: Transit) -> None:
    provider = transit.provider()
    with pytest.raises(FailedPrecondition, match="VAULT_TOKEN"):
        provider.rotate(CTX, None)
    # The service's own token has no rights on rotate: least privilege, as deployed.
    with pytest.raises(KeyServiceDenied, match="pdvault-ops"):
        provider.rotate(CTX, Secret(transit.service_token.encode()))
    assert provider.rotate(CTX, transit.ops()).latest_version == 2


def test_the_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "kek.json"
    first = LocalKeyFileProvider(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    [w] = first.wrap(CTX, [(SubjectId("s"), dek(3))])
    again = LocalKeyFileProvider(path)
    assert again.unwrap(CTX, [(SubjectId("s"), w)]) == [dek(3)]
    material = json.loads(path.read_text())["versions"]["1"]["key"]
    assert material not in repr(again)


def test_a_readable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    LocalKeyFileProvider(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        LocalKeyFileProvider(path)


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps({"format": "other"}),
        json.dumps(
            {
                "format": "pdvault-local-kek/1",
                "latest_version": 2,
                "min_decryption_version": 1,
                "versions": {"1": {"key": "AAAA"}},
            }
        ),
    ],
)
def test_a_damaged_key_file_is_refused_without_echoing_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / "kek.json"
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(ConfigurationError) as err:
        LocalKeyFileProvider(path)
    assert "AAAA" not in str(err.value)


def test_local_changes_reach_other_processes_at_once(tmp_path: Path) -> None:
    """Two providers on one key file stand for two processes."""
    a = LocalKeyFileProvider(tmp_path / "kek.json")
    b = LocalKeyFileProvider(tmp_path / "kek.json")
    [old] = b.wrap(CTX, [(SubjectId("s"), dek(1))])
    a.rotate(CTX)
    a.set_min_decryption_version(CTX, 2)
    a.trim(CTX, 2)
    assert b.unwrap(CTX, [(SubjectId("s"), old)]) == [None]  # B obeys the retirement at once
    [new] = b.wrap(CTX, [(SubjectId("t"), dek(2))])
    assert new.kek_version == 2  # and wraps under the latest version
    assert a.unwrap(CTX, [(SubjectId("t"), new)]) == [dek(2)]
    assert not list(tmp_path.glob("*.tmp"))


# -- the naming secret (keyed digests of shredded subject ids) ----------------------------------


def test_the_naming_secret_is_in_the_key_file_and_the_same_for_every_process(
    tmp_path: Path,
) -> None:
    path = tmp_path / "kek.json"
    a = LocalKeyFileProvider(path)
    b = LocalKeyFileProvider(path)
    assert a.naming_secret(CTX) == b.naming_secret(CTX)
    stored = json.loads(path.read_text())["naming_secret"]
    assert base64.b64decode(stored) == a.naming_secret(CTX).reveal()
    assert stored not in repr(a)
    other = LocalKeyFileProvider(tmp_path / "other.json")
    assert other.naming_secret(CTX) != a.naming_secret(CTX)


def test_a_key_file_without_a_naming_secret_gets_one_once(tmp_path: Path) -> None:
    """Key files from before naming secrets: one is added, atomically, mode 0600, and kept."""
    path = tmp_path / "kek.json"
    LocalKeyFileProvider(path)
    old = json.loads(path.read_text())
    del old["naming_secret"]
    path.write_text(json.dumps(old))
    os.chmod(path, 0o600)
    provider = LocalKeyFileProvider(path)
    added = json.loads(path.read_text())
    assert added["versions"] == old["versions"]  # the key-encryption key is untouched
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert LocalKeyFileProvider(path).naming_secret(CTX) == provider.naming_secret(CTX)


def test_a_naming_secret_that_cannot_be_added_stops_start_up_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "kek.json"
    LocalKeyFileProvider(path)
    old = json.loads(path.read_text())
    del old["naming_secret"]
    path.write_text(json.dumps(old))
    os.chmod(path, 0o600)

    def refused(*_a: object, **_k: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    # (a read-only directory, as root would not see one)
    monkeypatch.setattr("vault.kms.local.tempfile.mkstemp", refused)
    with pytest.raises(ConfigurationError, match="no naming secret") as err:
        LocalKeyFileProvider(path)
    assert "Permission denied" in str(err.value)
    assert "\n" not in str(err.value)
    assert json.loads(path.read_text()) == old  # unchanged


def test_transit_pins_the_naming_keys_first_version(transit: Transit) -> None:
    """A rotation of the naming key changes nothing; the service policy allows the hmac."""
    provider = transit.provider()
    first = provider.naming_secret(CTX)
    root: Any = hvac.Client(url=transit.url, token="root")
    root.secrets.transit.rotate_key("pdvault-naming")
    assert provider.naming_secret(CTX) == first
    assert transit.provider().naming_secret(CTX) == first  # another process


def test_transit_without_the_naming_key_is_refused(transit: Transit) -> None:
    provider = transit.provider(naming_key="missing-naming-key")
    with pytest.raises(PdvaultError):
        provider.naming_secret(CTX)

"""The KeyProvider contract, run against every adapter (the local key file so far).

HashiCorp Vault Transit joins this suite with its adapter (through the emulator, and a real
server when VAULT_ADDR and VAULT_TOKEN are set).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from vault.domain.ports import KeyProvider
from vault.domain.secrets import Secret
from vault.domain.types import SubjectId, WrappedKey
from vault.errors import ConfigurationError
from vault.kms.local import LocalKeyFileProvider

Factory = Callable[[Path], KeyProvider]


@pytest.fixture(params=["local"])
def provider(request: pytest.FixtureRequest, tmp_path: Path) -> KeyProvider:
    return LocalKeyFileProvider(tmp_path / "kek.json")


def dek(i: int) -> Secret:
    return Secret(bytes([i]) * 32)


class TestKeyProviderContract:
    def test_wrap_then_unwrap_in_order(self, provider: KeyProvider) -> None:
        items = [(SubjectId(f"s{i}"), dek(i)) for i in range(5)]
        wrapped = provider.wrap(items)
        assert len(wrapped) == 5
        assert all(w.provider == provider.name for w in wrapped)
        unwrapped = provider.unwrap([(s, w) for (s, _), w in zip(items, wrapped, strict=True)])
        assert unwrapped == [d for _, d in items]

    def test_wrapped_keys_do_not_contain_the_key(self, provider: KeyProvider) -> None:
        [w] = provider.wrap([(SubjectId("s"), dek(7))])
        assert bytes([7]) * 32 not in w.blob
        assert "blob" not in repr(w)

    def test_a_wrapped_key_is_bound_to_its_subject(self, provider: KeyProvider) -> None:
        [w] = provider.wrap([(SubjectId("alice"), dek(1))])
        assert provider.unwrap([(SubjectId("bob"), w)]) == [None]

    def test_tampered_or_foreign_keys_unwrap_to_none(self, provider: KeyProvider) -> None:
        [w] = provider.wrap([(SubjectId("s"), dek(1))])
        flipped = bytearray(w.blob)
        flipped[-1] ^= 1
        results = provider.unwrap(
            [
                (SubjectId("s"), WrappedKey(w.provider, w.kek_version, bytes(flipped))),
                (SubjectId("s"), WrappedKey("elsewhere", w.kek_version, w.blob)),
                (SubjectId("s"), WrappedKey(w.provider, w.kek_version, b"short")),
                (SubjectId("s"), w),
            ]
        )
        assert results[:3] == [None, None, None]
        assert results[3] == dek(1)

    def test_empty_batches(self, provider: KeyProvider) -> None:
        assert provider.wrap([]) == []
        assert provider.unwrap([]) == []


def test_the_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "kek.json"
    first = LocalKeyFileProvider(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    [w] = first.wrap([(SubjectId("s"), dek(3))])
    again = LocalKeyFileProvider(path)
    assert again.unwrap([(SubjectId("s"), w)]) == [dek(3)]
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

"""The composition root: settings in, a wired application out. Transport and CLI use it."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vault.config import Settings
from vault.crypto.aead import AesGcmCipher
from vault.domain.callers import Authenticator, issue_api_key
from vault.domain.keys import CacheFigures, KeyAdministration
from vault.domain.lifecycle import SubjectAdministration
from vault.domain.policy import Policy, load_policy
from vault.domain.ports import KeyProvider
from vault.domain.secrets import Secret
from vault.domain.service import TokenService
from vault.errors import ConfigurationError, KeyServiceUnavailable
from vault.kms.cache import CacheLimits, CachingKeyProvider
from vault.kms.local import LocalKeyFileProvider
from vault.kms.shred_log import FileShredLog
from vault.kms.transit import TransitSettings, VaultTransitKeyProvider
from vault.storage import migrate
from vault.storage.notify import ShredListener, ShredPoller
from vault.storage.store import Engine, SqlStore, make_engine

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class App:
    settings: Settings
    policy: Policy
    engine: Engine
    store: SqlStore
    keys: KeyProvider
    cache: CachingKeyProvider | None
    tokens: TokenService
    key_admin: KeyAdministration
    subjects: SubjectAdministration
    authenticator: Authenticator
    listener: ShredListener | ShredPoller | None = None

    def close(self) -> None:
        if self.listener is not None:
            self.listener.stop()
        self.store.close()
        self.engine.dispose()


def build_app(settings: Settings) -> App:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    policy = load_policy(settings.policy_file)
    engine = make_engine(settings.effective_database_url, pool_size=settings.max_workers + 2)
    if settings.auto_migrate:
        migrate.upgrade(engine)
    elif migrate.current_revision(engine) != migrate.head_revision():
        raise ConfigurationError("the database schema is not current; run: pdv db upgrade")
    store = SqlStore(engine)
    cipher = AesGcmCipher()
    provider = key_provider(settings)
    cache = None
    keys: KeyProvider = provider
    if settings.cache_max_entries > 0:
        cache = CachingKeyProvider(
            provider,
            CacheLimits(
                settings.cache_max_entries, settings.cache_max_age, settings.cache_max_uses
            ),
        )
        keys = cache
    tokens = TokenService(policy=policy, store=store, keys=keys, cipher=cipher, clock=utc_now)
    key_admin = KeyAdministration(
        policy=policy,
        store=store,
        keys=keys,
        clock=utc_now,
        cache_figures=lambda: cache_figures(cache),
    )
    subjects = SubjectAdministration(
        policy=policy,
        store=store,
        keys=keys,
        cipher=cipher,
        shred_log=FileShredLog(settings.effective_shred_log),
        clock=utc_now,
        forget_key=cache.forget if cache is not None else lambda _s: None,
    )
    app = App(
        settings,
        policy,
        engine,
        store,
        keys,
        cache,
        tokens,
        key_admin,
        subjects,
        Authenticator(store, policy),
    )
    store.purge_idempotency(utc_now() - tokens.limits.idempotency_retention)
    again = subjects.reapply_shred_log()
    if again:
        log.warning("shred log: %d subjects of a restored database were shredded again", again)
    if cache is not None and not settings.uses_sqlite:
        app.listener = ShredListener(settings.effective_database_url, cache.forget, cache.clear)
        app.listener.start()
    elif cache is not None:
        app.listener = ShredPoller(engine, cache.forget_digests)
        app.listener.start()
    if settings.dev_credentials:
        ensure_dev_credentials(app)
    return app


def key_provider(settings: Settings) -> KeyProvider:
    if settings.kms == "local":
        return LocalKeyFileProvider(settings.effective_key_file)
    transit = VaultTransitKeyProvider(
        TransitSettings(
            addr=settings.vault_addr,
            mount=settings.vault_mount,
            key=settings.vault_key,
            namespace=settings.vault_namespace or None,
            ca_cert=settings.vault_cacert or None,
            auth=settings.vault_auth,
            token=Secret(settings.vault_token.encode()) if settings.vault_token else None,
            role_id=settings.vault_role_id or None,
            secret_id=Secret(settings.vault_secret_id.encode())
            if settings.vault_secret_id
            else None,
            k8s_role=settings.vault_k8s_role or None,
            k8s_jwt_file=Path(settings.vault_k8s_jwt_file),
            request_timeout=settings.vault_timeout,
        )
    )
    try:
        status = transit.status()
        log.info(
            "HashiCorp Vault Transit key %s at version %d", status.key_name, status.latest_version
        )
    except KeyServiceUnavailable as exc:
        # Start anyway: requests will retry, and cached keys serve once Vault is back.
        log.warning("HashiCorp Vault is not available at start-up: %s", exc.message)
    return transit


def cache_figures(cache: CachingKeyProvider | None) -> CacheFigures | None:
    if cache is None:
        return None
    s = cache.stats()
    return CacheFigures(
        s.entries,
        s.hits,
        s.misses,
        s.evictions,
        s.hit_rate,
        s.limits.max_entries,
        s.limits.max_age,
        s.limits.max_uses,
    )


def ensure_dev_credentials(app: App) -> Path:
    """Give every caller of the policy an API key, and keep them in <data dir>/dev-credentials.json.

    Only callers without a key get a new one, so restarts keep the keys services already use.
    """
    path = app.settings.credentials_file
    known: dict[str, str] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text("utf-8"))
            if isinstance(loaded, dict):
                known = {str(k): str(v) for k, v in loaded.items()}
        except (OSError, ValueError):
            known = {}
    have_keys = app.store.callers_with_keys()
    changed = False
    for caller in sorted(app.policy.callers):
        if caller in have_keys and caller in known:
            continue
        key, record = issue_api_key(caller)
        app.store.add_api_key(record)
        known[caller] = key
        changed = True
    if changed or not path.exists():
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(known, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
        log.info("wrote API keys of the demo callers to %s (mode 0600)", path)
    return path

"""The composition root: settings in, a wired application out. Transport and CLI use it."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import stat
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from vault.config import Settings
from vault.crypto.aead import AesGcmCipher
from vault.crypto.documents import DocumentCrypto
from vault.domain.approvals import DualControl
from vault.domain.archive import DocumentArchive
from vault.domain.callers import Authenticator, issue_api_key
from vault.domain.context import RequestContext
from vault.domain.credentials import CallerAdministration
from vault.domain.keys import CacheFigures, KeyAdministration, TrimResult
from vault.domain.lifecycle import SubjectAdministration
from vault.domain.naming import SubjectNames
from vault.domain.policy import ApprovalAction, Policy
from vault.domain.policy_admin import (
    PolicyAdministration,
    PolicyChange,
    PolicyInForce,
    PolicyReloader,
    policy_digest,
)
from vault.domain.policy_file import default_policy_text, parse_policy
from vault.domain.ports import KeyProvider, Notice, NoticeFeed, NoticeKind
from vault.domain.quotas import MAX_WINDOW_SECONDS, ItemQuotas, RateLimiter
from vault.domain.secrets import Secret
from vault.domain.service import TokenService
from vault.domain.stores import CredentialStore, KeyInventory, QuotaStore, Stores
from vault.domain.sweep import RetentionSweep
from vault.domain.types import CallerName, SubjectId
from vault.errors import ConfigurationError, KeyServiceUnavailable, PdvaultError
from vault.kms.audit_sink import open_sink
from vault.kms.cache import CacheLimits, CachingKeyProvider
from vault.kms.checkpoints import (
    AuditCheckpoints,
    CheckpointSigner,
    FileCheckpointSigner,
    TransitCheckpointSigner,
)
from vault.kms.instrumented import InstrumentedKeyProvider
from vault.kms.local import LocalKeyFileProvider
from vault.kms.shred_log import FileShredLog
from vault.kms.transit import TransitSettings, VaultTransitKeyProvider
from vault.media.clamd import ClamdScanner
from vault.media.inspect import ContentInspector
from vault.observability import Labels, Observability
from vault.storage import migrate
from vault.storage.sql import (
    Database,
    Engine,
    PolledNoticeFeed,
    PostgresNoticeFeed,
    announce,
    make_engine,
    purge_notices,
    sql_stores,
)
from vault.storage.sql.naming import convert_document_digests, convert_subject_digests
from vault.storage.sql.rows import POLICY_VERSION

__all__ = [
    "KEK_CHECK",
    "KEY_USE_INTERVAL",
    "NOTICE_RETENTION",
    "App",
    "UseCases",
    "adopt_legacy_documents",
    "audit_checkpoints",
    "build_app",
    "cache_figures",
    "cache_limits",
    "check_key_encryption_key",
    "check_workloads",
    "ensure_dev_credentials",
    "held_steps",
    "item_quotas",
    "key_provider",
    "malware_scanner",
    "observability",
    "policy_text",
    "request_rates",
    "secure_directory",
    "secure_file",
    "transit_settings",
    "utc_now",
]


log = logging.getLogger(__name__)


KEY_USE_INTERVAL = 60.0  # seconds between writes of when API keys were last used

# Every process polls notices within seconds; an hour's worth is kept for a slow one.
NOTICE_RETENTION = timedelta(hours=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class UseCases:
    """Everything that reads the policy, built for one policy. A reload builds a new set and
    swaps it whole, in one assignment: a call that started keeps the set it started with."""

    policy: Policy
    tokens: TokenService
    key_admin: KeyAdministration
    subjects: SubjectAdministration
    documents: DocumentArchive
    sweeper: RetentionSweep
    callers: CallerAdministration
    dual_control: DualControl


@dataclass
class App:
    """The runtime of one process: it owns every thread and cache the process has, starts them,
    stops them and says whether they are healthy. What runs where: docs/process-model.md.

    Threads: the thread pool that runs the use cases (`executor`), the audit log's writer
    (group commit, started on first use), the notice feed's listener or poller. Caches: the
    data-key cache (`cache`), the API key table (`authenticator`), the policy's prepared
    decisions, the shred log's entries, the local key file's versions. A notice from any process
    (a shred, a change of API keys, a policy reload) reaches them through `forget`.

    The policy: `uses` holds the use cases built for the policy in force; `reloader` puts a
    changed policy file in force (SIGHUP, PolicyService, a notice) by building a new set with
    `assemble` and swapping it in (`_put_in_force`); servers hear of it through `on_policy`.
    """

    settings: Settings
    database: Database
    stores: Stores
    keys: KeyProvider
    cache: CachingKeyProvider | None
    uses: UseCases
    authenticator: Authenticator
    executor: ThreadPoolExecutor = field(repr=False)
    assemble: Callable[[Policy], UseCases] = field(repr=False)
    reloader: PolicyReloader | None = field(default=None, repr=False)
    policies: PolicyAdministration | None = field(default=None, repr=False)
    on_policy: list[Callable[[UseCases], None]] = field(default_factory=list, repr=False)
    notices: NoticeFeed | None = None
    sweep_interval: float = 0.0  # seconds between scheduled retention sweeps; 0: none
    checkpoints: AuditCheckpoints | None = None  # signs the audit log's head (primary only)
    checkpoint_interval: float = 0.0
    # Metrics and traces (PDV_METRICS_ADDR, PDV_OTLP_ENDPOINT); records nothing when both are off.
    observability: Observability = field(default_factory=Observability, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)
    _sweeps: threading.Thread | None = field(default=None, repr=False)
    _threads: list[threading.Thread] = field(default_factory=list, repr=False)

    @property
    def engine(self) -> Engine:
        return self.database.engine

    # The use cases of the policy in force (each read is one snapshot: a caller that needs two
    # of them for one piece of work reads `uses` once).
    @property
    def policy(self) -> Policy:
        return self.uses.policy

    @property
    def tokens(self) -> TokenService:
        return self.uses.tokens

    @property
    def key_admin(self) -> KeyAdministration:
        return self.uses.key_admin

    @property
    def subjects(self) -> SubjectAdministration:
        return self.uses.subjects

    @property
    def documents(self) -> DocumentArchive:
        return self.uses.documents

    @property
    def sweeper(self) -> RetentionSweep:
        return self.uses.sweeper

    @property
    def callers(self) -> CallerAdministration:
        return self.uses.callers

    @property
    def dual_control(self) -> DualControl:
        return self.uses.dual_control

    def _put_in_force(self, new: PolicyInForce) -> None:
        """Swap in the use cases of a validated policy: built first, then one assignment."""
        uses = self.assemble(new.policy)
        held_steps(self, uses.dual_control)
        self.authenticator.use_policy(new.policy)
        self.uses = uses
        # Audit entries appended from now on record the new version (rows.insert_audit).
        self.engine.update_execution_options(**{POLICY_VERSION: new.policy.version})
        for listener in list(self.on_policy):
            listener(uses)

    def reload_policy(self, by: str) -> PolicyChange | None:
        """Read the policy file again, in this process only (SIGHUP, a notice): put it in
        force if valid and changed. An invalid file is logged and audited, and the policy in
        force stays: None then."""
        if self.reloader is None:
            return None
        try:
            return self.reloader.reload(CallerName(by))
        except PdvaultError:
            return None  # logged and audited by the reloader

    def start(self) -> None:
        if self.notices is not None:
            self.notices.start(self.forget, self.forget_everything)
        if self.sweep_interval > 0 and self._sweeps is None:
            self._sweeps = threading.Thread(
                target=self._sweep_on_schedule, name="retention-sweep", daemon=True
            )
            self._sweeps.start()
        self._threads.append(
            threading.Thread(target=self._record_key_use, name="key-use", daemon=True)
        )
        self._threads[-1].start()
        if self.checkpoints is not None and self.settings.audit_sink:
            # The primary process follows the database for every process of this instance.
            self._threads.append(
                threading.Thread(
                    target=self._sink, args=(self.settings.audit_sink,), name="audit-sink"
                )
            )
            self._threads[-1].start()
        if self.checkpoints is not None and self.checkpoint_interval > 0:
            self._threads.append(
                threading.Thread(target=self._checkpoint_on_schedule, name="audit-checkpoint")
            )
            self._threads[-1].start()

    def _record_key_use(self) -> None:
        """When each API key last authenticated a call, written about once a minute (and when
        the process stops): for `pdv caller list`, never on a call's path."""
        while True:
            stopping = self._stopping.wait(KEY_USE_INTERVAL)
            used = self.authenticator.drain_used()
            if used:
                try:
                    self.stores.credentials.touch(
                        {k: datetime.fromtimestamp(t, UTC) for k, t in used.items()}
                    )
                except PdvaultError as exc:
                    log.warning("when keys were last used is not recorded: %s", exc.message)
            if stopping:
                return

    def _sink(self, target: str) -> None:
        tail, close = open_sink(target, self.stores.audit)
        try:
            tail.follow(self._stopping)
        finally:
            close()

    def _checkpoint_on_schedule(self) -> None:
        """A signed checkpoint of the audit log every `checkpoint_interval` seconds (when
        something was appended), and a last one when the process stops."""
        while not self._stopping.wait(self.checkpoint_interval):
            self.checkpoint_now()
        self.checkpoint_now()

    def checkpoint_now(self) -> None:
        if self.checkpoints is None:
            return
        try:
            self.checkpoints.checkpoint()
        except PdvaultError as exc:
            log.warning("audit checkpoint not written, retried next time: %s", exc.message)
        except Exception:
            log.exception("audit checkpoint not written, retried next time")

    def _sweep_on_schedule(self) -> None:
        """The retention sweep, every `sweep_interval` seconds (the first after a random part
        of one, so that replicas started together do not sweep together). Several replicas
        sweeping at once is safe, only redundant."""
        wait = random.uniform(0.1, 1.0) * self.sweep_interval  # noqa: S311  (jitter)
        while not self._stopping.wait(wait):
            try:
                report = self.sweeper.sweep(RequestContext.system("system:retention"))
                log.info("retention sweep %s: %s", report.sweep_id, report.summary())
            except PdvaultError as exc:
                log.warning("retention sweep failed, retried next time: %s", exc.message)
            except Exception:
                log.exception("retention sweep failed, retried next time")
            wait = self.sweep_interval

    def forget(self, notice: Notice) -> None:
        """A notice from any process: drop what it names from this process's caches."""
        if notice.kind is NoticeKind.SUBJECT_KEY and self.cache is not None:
            self.cache.forget_digests({notice.key}, self.database.names.digest)
        elif notice.kind is NoticeKind.API_KEYS:
            self.authenticator.invalidate()
        elif notice.kind is NoticeKind.POLICY:
            self._follow_policy(notice.key)

    def _follow_policy(self, digest: str) -> None:
        """An operator reloaded the policy in another process: read this one's file again."""
        if self.reloader is None or self.reloader.current.digest == digest:
            return  # the process that reloaded it (or one that already has it)
        self.reload_policy("system:policy-notice")
        if self.reloader.current.digest != digest:
            log.warning(
                "a policy reload was announced (%s) but this process's policy file gives %s: "
                "is the same file deployed here?",
                digest[:19],
                self.reloader.current,
            )

    def forget_everything(self) -> None:
        """Notices may have been missed (a lost connection): every cache starts over, and the
        policy file is read again (a reload may have been announced meanwhile)."""
        if self.cache is not None:
            self.cache.clear()
        self.authenticator.invalidate()
        self.reload_policy("system:policy-notice")

    def close(self) -> None:
        self._stopping.set()
        if self._sweeps is not None:
            self._sweeps.join()
        for thread in self._threads:
            thread.join()
        if self.notices is not None:
            self.notices.stop()
        self.executor.shutdown(wait=True)
        self.stores.audit.close()
        self.database.engine.dispose()
        self.observability.close()

    def dependency_problems(self) -> list[str]:
        """What keeps this process from serving now (readiness): [] when all answer."""
        problems = []
        try:
            self.database.ping()
        except PdvaultError:
            problems.append("the database does not answer")
        try:
            self.keys.status(RequestContext.system("readiness"))
        except PdvaultError:
            problems.append("the key provider does not answer")
        return problems


def held_steps(app: App, dual: DualControl) -> None:
    """How dual control carries out each step it held, once another operator approved it:
    the same use case (of the policy in force then), as the requester, with the stored
    parameters. Registered on each policy's DualControl (start-up and every reload)."""

    def trim(ctx: RequestContext, p: Mapping[str, str], admin: Secret | None) -> str:
        done: TrimResult = app.key_admin.trim(ctx, int(p["min_version"]), admin)
        shown = ", ".join(f"v{v}" for v in done.destroyed) or "no version"
        return f"destroyed {shown}"

    def revoke(ctx: RequestContext, p: Mapping[str, str], _admin: Secret | None) -> str:
        app.callers.revoke(ctx, p["caller"], p["key_id"])
        return f"key {p['key_id']} of {p['caller']} revoked"

    def shred(ctx: RequestContext, p: Mapping[str, str], _admin: Secret | None) -> str:
        receipt = app.subjects.shred(ctx, p["subject"])
        return f"shredded: receipt {receipt.receipt_id}"

    dual.register(ApprovalAction.KEYS_TRIM, trim)
    dual.register(ApprovalAction.CALLER_REVOKE, revoke)
    dual.register(ApprovalAction.OPERATOR_SHRED, shred)


def build_app(
    settings: Settings, primary: bool = True, observed: Observability | None = None
) -> App:
    """Wire the application. The primary process (the only one, or the parent of several)
    also migrates the database, re-applies the shred log and writes the demo credentials;
    the processes it spawns do none of that, so they never race each other over it.
    `observed`: the metrics and tracer to use (tests), else as the settings say."""
    secure_directory(settings.data_dir)
    text = policy_text(settings)
    policy = parse_policy(text)
    if primary:
        check_workloads(settings, policy)
    engine = make_engine(settings.effective_database_url, pool_size=settings.max_workers + 2)
    try:
        current, head = migrate.current_revision(engine), migrate.head_revision()
        if current is not None and current != head and not migrate.is_known(current):
            # A newer version migrated (expand-then-contract: its migrations only add what this
            # version ignores), so both serve side by side during a rollout, and a rollback works.
            log.warning(
                "the database schema (revision %s) is newer than this version's (%s): serving "
                "beside the newer version",
                current,
                head,
            )
        elif settings.auto_migrate and primary:
            migrate.upgrade(engine)
        elif current != head:
            raise ConfigurationError("the database schema is not current; run: pdv db upgrade")
    except PdvaultError:
        engine.dispose()
        raise
    if settings.uses_sqlite:
        for suffix in ("", "-wal", "-shm"):
            secure_file(Path(str(engine.url.database) + suffix))
    # Every audit entry records the policy version that decided it (rows.insert_audit).
    engine.update_execution_options(**{POLICY_VERSION: policy.version})
    observed = observed or observability(settings, policy)
    database = Database(engine, observed)
    stores = sql_stores(database)
    try:
        in_force = PolicyInForce(policy, policy_digest(text))
        return _wire(settings, in_force, database, stores, primary, observed)
    except BaseException:
        stores.audit.close()
        engine.dispose()
        observed.close()
        raise


def observability(settings: Settings, policy: Policy) -> Observability:
    """Metrics when PDV_METRICS_ADDR is set, traces when PDV_OTLP_ENDPOINT is; labels from the
    policy's names (those of the policy at start-up: a name a reload adds is labelled `other`
    until a restart)."""
    labels = Labels(
        frozenset(policy.callers), frozenset(policy.purposes), frozenset(policy.categories)
    )
    tracing = None
    if settings.otlp_endpoint:
        from vault.observability.tracing import Tracing  # noqa: PLC0415  (only when on)

        tracing = Tracing.otlp(settings.otlp_endpoint)
    return Observability(labels, metrics=bool(settings.metrics_addr), tracing=tracing)


def policy_text(settings: Settings) -> str:
    """The policy file's text (PDV_POLICY), or the shipped default's."""
    if settings.policy_file is None:
        return default_policy_text()
    # As stored (no newline translation): its digest is the file's `sha256sum`.
    return settings.policy_file.read_bytes().decode("utf-8")


def _wire(
    settings: Settings,
    in_force: PolicyInForce,
    database: Database,
    stores: Stores,
    primary: bool,
    observed: Observability,
) -> App:
    cipher = AesGcmCipher()
    provider = key_provider(settings, stores.keys)
    check_key_encryption_key(stores.keys, provider)
    names = subject_names(provider, database)
    cache = None
    # Under the cache: what it counts are the calls that reach the provider.
    keys: KeyProvider = InstrumentedKeyProvider(provider, observed)
    if settings.cache_max_entries > 0:
        cache = CachingKeyProvider(keys, cache_limits(settings), telemetry=observed)
        keys = cache
    shred_log = FileShredLog(settings.effective_shred_log, names)
    forget_key = cache.forget if cache is not None else lambda _s: None
    authenticator = Authenticator(stores.credentials, in_force.policy)

    def assemble(policy: Policy) -> UseCases:
        """The use cases for `policy` (at start-up, and at each reload)."""
        dual = DualControl(
            policy=policy, store=stores.approvals, audit=stores.audit, clock=utc_now, names=names
        )
        quotas = item_quotas(policy, stores.quotas)
        tokens = TokenService(
            policy=policy,
            values=stores.values,
            subjects=stores.subjects,
            idempotency=stores.idempotency,
            audit=stores.audit,
            keys=keys,
            cipher=cipher,
            clock=utc_now,
            quotas=quotas,
        )
        key_admin = KeyAdministration(
            policy=policy,
            inventory=stores.keys,
            audit=stores.audit,
            keys=keys,
            clock=utc_now,
            cache_figures=lambda: cache_figures(cache),
            dual_control=dual,
        )
        documents = DocumentArchive(
            policy=policy,
            documents=stores.documents,
            blobs=stores.blobs,
            values=stores.values,
            subjects=stores.subjects,
            audit=stores.audit,
            keys=keys,
            cipher=cipher,
            sealer=DocumentCrypto(),
            inspector=ContentInspector(policy.documents.max_pixels, policy.documents.max_pages),
            scanner=malware_scanner(settings, policy),
            shred_log=shred_log,
            clock=utc_now,
            forget_key=forget_key,
            quotas=quotas,
            names=names,
        )
        sweeper = RetentionSweep(
            policy=policy,
            documents=stores.documents,
            blobs=stores.blobs,
            values=stores.values,
            audit=stores.audit,
            shred_log=shred_log,
            clock=utc_now,
            forget_key=forget_key,
        )
        subjects = SubjectAdministration(
            policy=policy,
            values=stores.values,
            subjects=stores.subjects,
            audit=stores.audit,
            keys=keys,
            cipher=cipher,
            shred_log=shred_log,
            names=names,
            clock=utc_now,
            forget_key=forget_key,
            documents=documents,
            dual_control=dual,
        )
        callers = CallerAdministration(
            policy=policy,
            credentials=stores.credentials,
            audit=stores.audit,
            clock=utc_now,
            changed=authenticator.invalidate,
            dual_control=dual,
        )
        return UseCases(policy, tokens, key_admin, subjects, documents, sweeper, callers, dual)

    app = App(
        settings,
        database,
        stores,
        keys,
        cache,
        assemble(in_force.policy),
        authenticator,
        ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="rpc"),
        assemble,
        sweep_interval=settings.retention_sweep_interval if primary else 0.0,
        observability=observed,
    )
    held_steps(app, app.dual_control)
    app.reloader = PolicyReloader(
        current=in_force,
        read=lambda: policy_text(settings),
        put_in_force=app._put_in_force,
        audit=stores.audit,
        announce=lambda events, digest, now: announce(
            database, NoticeKind.POLICY, digest, events, now
        ),
        clock=utc_now,
        where=f" (process {os.getpid()} on {socket.gethostname()})",
        check=lambda p: check_workloads(settings, p),
    )
    app.policies = PolicyAdministration(reloader=app.reloader, audit=stores.audit, clock=utc_now)
    policy = in_force.policy
    if primary:
        app.checkpoints = audit_checkpoints(settings, stores, provider)
        app.checkpoint_interval = settings.audit_checkpoint_interval
    if primary:
        sealed = stores.audit.seal_legacy()
        if sealed:
            log.warning("audit log: %d entries from before the Merkle log got their places", sealed)
        stores.idempotency.purge_idempotency(utc_now() - app.tokens.limits.idempotency_retention)
        # Windows that ended: no window is longer than MAX_WINDOW_SECONDS.
        stores.quotas.purge_quotas(int(utc_now().timestamp()) - MAX_WINDOW_SECONDS)
        again = app.subjects.reapply_shred_log(RequestContext.system("shred-log"))
        if again:
            log.warning("shred log: %d subjects of a restored database were shredded again", again)
        adopt_legacy_documents(app.documents)
        purge_notices(database.engine, utc_now() - NOTICE_RETENTION)
    app.notices = (
        PolledNoticeFeed(database.engine)
        if settings.uses_sqlite
        else PostgresNoticeFeed(settings.effective_database_url)
    )
    app.start()
    if settings.dev_credentials and primary:
        ensure_dev_credentials(app)
    workloads = settings.client_auth and any(c.spiffe_ids for c in policy.callers.values())
    if primary and not workloads and not stores.credentials.callers_with_keys():
        log.warning(
            "no caller of the policy has an API key: nobody can call this server. Give the "
            "first operator a key with pdv caller bootstrap, then the others theirs with pdv "
            "caller add (see the README)"
        )
    return app


def item_quotas(policy: Policy, store: QuotaStore) -> ItemQuotas:
    """The policy's item quotas, counted in `store` (the database every replica shares)."""
    return ItemQuotas(
        {
            (caller.name, purpose): quota
            for caller in policy.callers.values()
            for purpose, quota in caller.quotas.items()
        },
        store,
        utc_now,
    )


def request_rates(policy: Policy) -> RateLimiter:
    """The policy's request rates, in this process's memory (a token bucket per caller)."""
    return RateLimiter(
        {c.name: c.rate for c in policy.callers.values() if c.rate is not None}, time.monotonic
    )


def check_workloads(settings: Settings, policy: Policy) -> None:
    """The policy's workload identities against the TLS settings: refused when nobody could
    call, a warning when some callers could not."""
    mapped = sorted(c.name for c in policy.callers.values() if c.spiffe_ids)
    unmapped = sorted(c.name for c in policy.callers.values() if not c.spiffe_ids)
    must = sorted(c.name for c in policy.callers.values() if c.require_mtls)
    if settings.client_auth == "require":
        if not mapped:
            raise ConfigurationError(
                "PDV_TLS_CLIENT_AUTH=require, but no caller of the policy has a spiffe_id: "
                "nobody could call (map SPIFFE IDs to callers, or use "
                "PDV_TLS_CLIENT_AUTH=optional)"
            )
        if unmapped:
            log.warning(
                "PDV_TLS_CLIENT_AUTH=require: every call presents a client certificate, so "
                "callers without a spiffe_id cannot call: %s",
                ", ".join(unmapped),
            )
    elif not settings.client_auth and (mapped or must):
        log.warning(
            "the policy maps SPIFFE IDs to callers (%s) but PDV_TLS_CLIENT_CA is unset: no "
            "client certificate is asked for%s",
            ", ".join(mapped),
            f"; callers that require mTLS cannot call: {', '.join(must)}" if must else "",
        )


def secure_directory(path: Path) -> None:
    """Create the directory for this user only, or make an existing one so (with a warning)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(0o700)
        log.warning("%s was open to other users (mode %04o); it is now 0700", path, mode)


def secure_file(path: Path) -> None:
    """Make an existing file readable by this user only (with a warning if it was not)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        path.chmod(0o600)
        log.warning("%s was readable by other users (mode %04o); it is now 0600", path, mode)


# Wrapped under each key-encryption-key version as its check value. Never a subject id: the
# subject syntax has no '#'.
KEK_CHECK = SubjectId("#kek-check")


def check_key_encryption_key(store: KeyInventory, provider: KeyProvider) -> None:
    """Refuse a key-encryption key that is not the one the data keys were wrapped by.

    Each version that wrapped data keys has a check value in the database (a random key
    wrapped under it). A version still allowed to decrypt must open its check (or, for
    databases from before checks, one of its data keys); a version the provider destroyed on
    purpose (trim) is skipped: its values answer DATA_LOSS, as they should. The newest version
    gets a check if it has none.
    """
    ctx = RequestContext.system("start-up")
    try:
        status = provider.status(ctx)
    except KeyServiceUnavailable as exc:
        log.warning("cannot check the key-encryption key now: %s", exc.message)
        return
    checks = store.kek_checks(provider.name)
    in_use = {v for (p, v), _n in store.kek_version_counts().items() if p == provider.name}
    newest = max(checks.keys() | in_use, default=0)
    where = f"{provider.name} key {status.key_name}"
    if newest > status.latest_version:
        raise ConfigurationError(
            f"the {where} is at version {status.latest_version}, but the database holds data "
            f"keys wrapped under version {newest}: this is not the key they were wrapped by "
            "(restore the right key file, or point PDV_VAULT_KEY at the right key)"
        )
    floor = max(status.min_decryption_version, status.min_available_version, 1)
    probes = [(KEK_CHECK, w) for v, w in sorted(checks.items()) if v >= floor]
    for v in sorted(in_use - checks.keys()):
        if v >= floor:  # a database from before check values: one of its data keys instead
            for d in store.data_keys_to_rewrap(provider.name, v + 1, 1, None):
                probes.append((d.subject, d.wrapped))
    opened = provider.unwrap(ctx, probes) if probes else []
    for (_subject, wrapped), key in zip(probes, opened, strict=True):
        if key is None:
            raise ConfigurationError(
                f"the {where} does not open what its version {wrapped.kek_version} wrapped: it "
                "is not the key the data keys were wrapped by (restore the right key file, or "
                "point PDV_VAULT_KEY at the right key)"
            )
        key.wipe()
    if status.latest_version not in checks:
        fresh = AesGcmCipher().new_data_key()
        try:
            [check] = provider.wrap(ctx, [(KEK_CHECK, fresh)])
        finally:
            fresh.wipe()
        store.add_kek_check(check, utc_now())


def adopt_legacy_documents(documents: DocumentArchive) -> None:
    """Values of the retired identity_document field become documents (at the primary's
    start-up; a repeat finds none). Without the key provider, the next start does it."""
    try:
        moved, left = documents.adopt_legacy_values(RequestContext.system("system:migration"))
    except KeyServiceUnavailable:
        log.warning("identity_document values not moved to documents: the key provider is down")
        return
    if moved:
        log.warning("%d identity_document values became documents (type unclassified)", moved)
    if left:
        log.warning(
            "%d identity_document values are not JPEG, PNG or PDF documents (or failed the "
            "checks): they stay values, readable as before",
            left,
        )


def audit_checkpoints(
    settings: Settings, stores: Stores, provider: KeyProvider
) -> AuditCheckpoints:
    """The audit log's checkpointer: signed by the key file or by Transit (the key never leaves
    Vault), written to the database and to PDV_AUDIT_CHECKPOINTS."""
    signer: CheckpointSigner
    if settings.audit_signer == "transit":
        if not isinstance(provider, VaultTransitKeyProvider):
            raise ConfigurationError("PDV_AUDIT_SIGNER=transit needs PDV_KMS=vault")
        transit = provider.signer(settings.vault_key, settings.vault_audit_key)
        signer = TransitCheckpointSigner(transit, settings.audit_origin)
    else:
        signer = FileCheckpointSigner(settings.effective_audit_signing_key, settings.audit_origin)
    return AuditCheckpoints(stores.audit, signer, settings.effective_audit_checkpoints, utc_now)


# A scan of the largest document must finish within this (clamd reads at tens of MB/s).
CLAMD_TIMEOUT = 60.0


def malware_scanner(settings: Settings, policy: Policy) -> ClamdScanner | None:
    """ClamAV's clamd when PDV_CLAMD names it; None: documents are kept as not scanned."""
    if not settings.clamd:
        return None
    return ClamdScanner(settings.clamd, timeout=CLAMD_TIMEOUT, max_bytes=policy.documents.max_bytes)


def cache_limits(settings: Settings) -> CacheLimits:
    return CacheLimits(settings.cache_max_entries, settings.cache_max_age, settings.cache_max_uses)


def transit_settings(settings: Settings) -> TransitSettings:
    return TransitSettings(
        addr=settings.vault_addr,
        mount=settings.vault_mount,
        key=settings.vault_key,
        auth=settings.vault_auth,
        k8s_jwt_file=Path(settings.vault_k8s_jwt_file),
        request_timeout=settings.vault_timeout,
        naming_key=settings.vault_naming_key,
        namespace=settings.vault_namespace or None,
        ca_cert=settings.vault_cacert or None,
        token=Secret(settings.vault_token.encode()) if settings.vault_token else None,
        role_id=settings.vault_role_id or None,
        secret_id=Secret(settings.vault_secret_id.encode()) if settings.vault_secret_id else None,
        k8s_role=settings.vault_k8s_role or None,
    )


def subject_names(provider: KeyProvider, database: Database) -> SubjectNames:
    """The keyed digest of subject ids, under the key provider's naming secret (asked once),
    given to the database, whose digests from before are converted once. Without the secret
    no shredded subject could be recognised: start-up stops, in one line."""
    try:
        secret = provider.naming_secret(RequestContext.system("start-up"))
    except PdvaultError as exc:  # unavailable, denied, or the naming key missing
        raise ConfigurationError(
            "the key provider did not give the naming secret (with HashiCorp Vault: the "
            f"PDV_VAULT_NAMING_KEY key, made by deploy/vault/bootstrap.sh): {exc.message}"
        ) from None
    names = SubjectNames(secret)
    database.use_names(names)
    converted = convert_subject_digests(database, utc_now())
    if converted:
        log.warning("subject digests: %d records converted to keyed digests", converted)
    converted = convert_document_digests(database, utc_now())
    if converted:
        log.warning("documents: %d records converted to keyed digests", converted)
    return names


def key_provider(settings: Settings, store: KeyInventory) -> KeyProvider:
    if settings.kms == "local":
        path = settings.effective_key_file
        if not path.exists():
            held = sum(n for (p, _v), n in store.kek_version_counts().items() if p == "local")
            if held or store.kek_checks("local"):
                raise ConfigurationError(
                    f"the key file {path} is missing, but the database holds {held} data keys "
                    "wrapped by it: restore it from where you keep it (pdvault never makes a "
                    "new key-encryption key over existing data)"
                )
        return LocalKeyFileProvider(path)
    transit = VaultTransitKeyProvider(transit_settings(settings))
    try:
        status = transit.status(RequestContext.system("start-up"))
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
        os.getpid(),
        socket.gethostname(),
    )


def ensure_dev_credentials(app: App) -> Path:
    """Give every caller of the policy an API key, and keep them in <data dir>/dev-credentials.json.

    Only callers without a key get a new one, so restarts keep the keys services already use.
    """
    path = app.settings.credentials_file
    known: dict[str, str] = {}
    if path.exists():
        secure_file(path)
        try:
            loaded = json.loads(path.read_text("utf-8"))
            if not isinstance(loaded, dict):
                raise ValueError("not an object")
            known = {str(k): str(v) for k, v in loaded.items()}
        except (OSError, ValueError):
            log.warning("%s is not a JSON object of keys: new demo keys are issued", path)
            known = {}
    credentials: CredentialStore = app.stores.credentials
    have_keys = credentials.callers_with_keys()
    changed = False
    for caller in sorted(app.policy.callers):
        if caller in have_keys and caller in known:
            continue
        key, record = issue_api_key(caller)
        credentials.add_api_key(record)
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

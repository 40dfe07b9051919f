"""What the emulated server holds: mounts and their keys, tokens, login roles, seal and clock.

One ``State`` per emulator; every handler receives it. Its lock (held by the dispatcher for each
request) makes a request's reads and writes one step, as Vault's per-key locks do for one key.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field

from transit_emulator.fields import JSON
from transit_emulator.keys import TransitKey

VAULT_VERSION = "1.19.5"


@dataclass
class Mount:
    path: str  # with a trailing slash
    type: str
    description: str = ""
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    keys: dict[str, TransitKey] = field(default_factory=dict)
    disable_upsert: bool = False

    def entry(self) -> JSON:
        return {
            "accessor": f"{self.type}_{self.uuid[:8]}",
            "config": {"default_lease_ttl": 0, "force_no_cache": False, "max_lease_ttl": 0},
            "description": self.description,
            "external_entropy_access": False,
            "local": self.type == "cubbyhole",
            "options": None,
            "plugin_version": "",
            "running_plugin_version": f"v{VAULT_VERSION}+builtin.vault",
            "running_sha256": "",
            "seal_wrap": self.type == "cubbyhole",
            "type": self.type,
            "uuid": self.uuid,
        }


@dataclass
class Token:
    token: str
    accessor: str
    policy_names: list[str]
    rules: dict[str, set[str]] | None  # None: root
    ttl: int
    renewable: bool
    issued: float
    display_name: str = "token"
    path: str = "auth/token/create"
    meta: dict[str, str] | None = None
    orphan: bool = False
    expires: float | None = None
    last_renewal: float | None = None

    def auth_block(self, lease_duration: int) -> JSON:
        return {
            "client_token": self.token,
            "accessor": self.accessor,
            "policies": self.policy_names,
            "token_policies": self.policy_names,
            "metadata": self.meta,
            "lease_duration": lease_duration,
            "renewable": self.renewable,
            "entity_id": "",
            "token_type": "service",
            "orphan": self.orphan,
            "mfa_requirement": None,
            "num_uses": 0,
        }


@dataclass
class Login:
    """An AppRole role or a Kubernetes role: its credential and the token it mints."""

    secret: str  # secret_id or jwt
    rules: dict[str, set[str]]
    policy_name: str
    token_ttl: int
    display_name: str
    meta: dict[str, str]


@dataclass
class State:
    root_token: str
    lock: threading.RLock = field(default_factory=threading.RLock)
    sealed: bool = False
    clock_offset: float = 0.0
    builtin: dict[str, Mount] = field(
        default_factory=lambda: {
            p: Mount(p, t)
            for p, t in [("cubbyhole/", "cubbyhole"), ("identity/", "identity"), ("sys/", "system")]
        }
    )
    mounts: dict[str, Mount] = field(
        default_factory=lambda: {"transit/": Mount("transit/", "transit")}
    )
    approles: dict[str, dict[str, Login]] = field(default_factory=dict)  # mount -> role_id
    k8s_roles: dict[str, dict[str, Login]] = field(default_factory=dict)  # mount -> role
    tokens: dict[str, Token] = field(default_factory=dict)
    policy_seq: int = 0
    cluster_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        self.tokens[self.root_token] = Token(
            self.root_token,
            secrets.token_urlsafe(18),
            ["root"],
            None,
            0,
            False,
            self.now(),
            display_name="root",
            path="auth/token/root",
            orphan=True,
        )

    def now(self) -> float:
        return time.time() + self.clock_offset

    def key(self, mount: Mount, name: str) -> TransitKey | None:
        """The named key, rotated first if its ``auto_rotate_period`` has passed."""
        key = mount.keys.get(name)
        if key is not None and key.auto_rotate_period > 0:
            now = self.now()  # [?] Vault rotates from a periodic job; here lazily on use
            if now - key.created(key.latest_version) >= key.auto_rotate_period:
                key.rotate(now)
        return key

    def mint(
        self,
        names: list[str],
        rules: dict[str, set[str]],
        ttl: int,
        renewable: bool,
        login: tuple[str, str, dict[str, str]] | None = None,
    ) -> Token:
        """A service token; ``login`` is (display name, login path, metadata) for a login."""
        token = Token(
            "hvs." + secrets.token_urlsafe(18),
            secrets.token_urlsafe(18),
            sorted(names),
            rules,
            ttl,
            renewable,
            self.now(),
        )
        if login is not None:
            token.display_name, token.path, token.meta = login
            token.orphan = True
        token.expires = token.issued + ttl if ttl > 0 else None
        self.tokens[token.token] = token
        return token

"""Which handler answers a path, the operations it takes, and the counter it increments.

Transit paths follow ``builtin/logical/transit/path_*.go``; key names match
``framework.GenericNameRegex`` (ASCII ``\\w``, as in Go).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from transit_emulator import auth, dataplane, lifecycle, signing, sysapi
from transit_emulator.envelope import Handler, Request, Result, TransitHandler
from transit_emulator.errors import UNSUPPORTED_PATH, VaultError
from transit_emulator.fields import unknown_params_warning
from transit_emulator.state import Login, Mount, State

NAME = r"(?P<name>\w(?:[\w.-]*\w)?)"
ALGORITHM = r"(?:/(?P<algorithm>.+))?"  # framework.OptionalParamRegex("urlalgorithm")


def words(text: str) -> set[str]:
    return set(text.split())


# Parameters each endpoint knows; anything else earns the "unrecognized parameters" warning.
KEY_FIELDS = words(
    "name type derived convergent_encryption exportable allow_plaintext_backup context "
    "auto_rotate_period key_size managed_key_name managed_key_id parameter_set "
    "hybrid_key_type_pqc hybrid_key_type_ec"
)
CONFIG_FIELDS = words(
    "name min_decryption_version min_encryption_version deletion_allowed exportable "
    "allow_plaintext_backup auto_rotate_period"
)
CRYPT_FIELDS = words(
    "name plaintext ciphertext context nonce key_version associated_data batch_input "
    "partial_failure_response_code padding_scheme type convergent_encryption bits "
    "decrypt_padding_scheme encrypt_padding_scheme"
)
HMAC_FIELDS = words("name input algorithm urlalgorithm key_version batch_input")
SIGN_FIELDS = words(
    "name input context hash_algorithm algorithm urlalgorithm key_version prehashed "
    "signature_algorithm marshaling_algorithm salt_length batch_input"
)
VERIFY_FIELDS = (SIGN_FIELDS - {"key_version"}) | words("signature hmac cmac mac_length")

TRANSIT: list[tuple[str, dict[str, str], dict[str, TransitHandler], set[str]]] = [
    ("keys/?", {"*": "list_keys"}, {"list": lifecycle.list_keys}, set()),
    (
        f"keys/{NAME}",
        {"update": "create_key", "read": "read_key", "delete": "delete_key"},
        {
            "update": lifecycle.create_key,
            "read": lifecycle.read_key,
            "delete": lifecycle.delete_key,
        },
        KEY_FIELDS,
    ),
    (f"keys/{NAME}/config", {"*": "config"}, {"update": lifecycle.config}, CONFIG_FIELDS),
    (
        f"keys/{NAME}/rotate",
        {"*": "rotate"},
        {"update": lifecycle.rotate},
        words("name managed_key_name managed_key_id"),
    ),
    (
        f"keys/{NAME}/trim",
        {"*": "trim"},
        {"update": lifecycle.trim},
        words("name min_available_version"),
    ),
    (
        f"datakey/(?P<kind>\\w(?:[\\w.-]*\\w)?)/{NAME}",
        {"*": "datakey"},
        {"update": dataplane.datakey},
        CRYPT_FIELDS,
    ),
    (f"encrypt/{NAME}", {"*": "encrypt"}, {"update": dataplane.encrypt}, CRYPT_FIELDS),
    (f"decrypt/{NAME}", {"*": "decrypt"}, {"update": dataplane.decrypt}, CRYPT_FIELDS),
    (f"rewrap/{NAME}", {"*": "rewrap"}, {"update": dataplane.rewrap}, CRYPT_FIELDS),
    (f"hmac/{NAME}{ALGORITHM}", {"*": "hmac"}, {"update": signing.generate_hmac}, HMAC_FIELDS),
    (f"sign/{NAME}{ALGORITHM}", {"*": "sign"}, {"update": signing.sign}, SIGN_FIELDS),
    (f"verify/{NAME}{ALGORITHM}", {"*": "verify"}, {"update": signing.verify}, VERIFY_FIELDS),
    (
        "config/keys",
        {"*": "config_keys"},
        {"update": lifecycle.config_keys, "read": lifecycle.config_keys},
        {"disable_upsert"},
    ),
]


@dataclass
class Route:
    counters: dict[str, str]  # operation -> counter name; "*" for any
    mount_type: str
    handlers: dict[str, Handler] = field(default_factory=dict)
    error: VaultError | None = None
    exists: Callable[[], bool] | None = None  # the encrypt ExistenceCheck
    unauthenticated: bool = False

    def counter(self, op: str) -> str:
        return self.counters.get(op) or self.counters.get("*") or "unsupported"


def _login_route(mount_type: str, roles: dict[str, Login], login: auth.LoginHandler) -> Route:
    def handle(state: State, request: Request) -> Result:
        return login(state, roles, request)

    return Route({"*": "login"}, mount_type, {"update": handle}, unauthenticated=True)


def route(state: State, path: str) -> Route:
    """The route for a path without ``/v1/``."""
    if path in ("sys/health", "sys/seal-status"):
        return Route({"*": path[4:].replace("-", "_")}, "system", unauthenticated=True)
    if path == "sys/init":
        return Route({"*": "init"}, "system", {"update": sysapi.init}, unauthenticated=True)
    if path == "sys/mounts":
        return Route({"*": "list_mounts"}, "system", {"read": sysapi.list_mounts})
    if path.startswith("sys/mounts/") and path.strip("/") != "sys/mounts":
        handlers: dict[str, Handler] = {"update": sysapi.enable, "delete": sysapi.disable}
        return Route({"update": "mount", "delete": "unmount"}, "system", handlers)
    token_paths: dict[str, tuple[str, str, Handler]] = {
        "auth/token/lookup-self": ("read", "lookup", auth.lookup_self),
        "auth/token/renew-self": ("update", "renew", auth.renew_self),
        "auth/token/revoke-self": ("update", "revoke", auth.revoke_self),
    }
    if path in token_paths:
        op, counter, handler = token_paths[path]
        return Route({"*": counter}, "token", {op: handler})
    login = re.fullmatch(r"auth/(.+)/login", path)
    if login and login.group(1) in state.approles:
        return _login_route("approle", state.approles[login.group(1)], auth.approle_login)
    if login and login.group(1) in state.k8s_roles:
        roles = state.k8s_roles[login.group(1)]
        return _login_route("kubernetes", roles, auth.kubernetes_login)
    mounts = [m for p, m in state.mounts.items() if (path + "/").startswith(p)]
    if not mounts:
        not_found = f'no handler for route "{path}". route entry not found.'
        return Route({"*": "unknown"}, "", error=VaultError(404, [not_found]))
    mount = max(mounts, key=lambda m: len(m.path))
    return _transit_route(mount, path[len(mount.path) :])


def _transit_route(mount: Mount, sub: str) -> Route:
    for pattern, counters, ops, known in TRANSIT:
        match = re.fullmatch(pattern, sub, re.ASCII)
        if match is None:
            continue
        groups = {k: v for k, v in match.groupdict().items() if v is not None}
        handlers = {op: _bind(fn, mount, groups, known) for op, fn in ops.items()}
        found = Route(counters, "transit", handlers)
        if sub.startswith("encrypt/"):
            found.exists = functools.partial(mount.keys.__contains__, groups["name"])
        return found
    return Route({"*": "unknown"}, "transit", error=UNSUPPORTED_PATH)


def _bind(fn: TransitHandler, mount: Mount, groups: dict[str, str], known: set[str]) -> Handler:
    def run(state: State, request: Request) -> Result:
        request.match = groups
        result = fn(state, mount, request)
        if result.status is None and not result.no_content:
            result.warnings += unknown_params_warning(request.body, known)
        return result

    return run

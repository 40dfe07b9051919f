"""An in-process emulator of HashiCorp Vault's Transit secrets engine HTTP API.

HashiCorp Vault cannot be installed here, so tests talk to this real HTTP server through the
real ``hvac`` client. It follows ``shared/reference/vault-transit.md`` (beside this repository)
and, where that is silent, Vault's own source (``builtin/logical/transit``,
``sdk/helper/keysutil``).

Emulated:

* the ``/v1`` HTTP conventions: success envelope, ``{"errors": [...]}`` errors with Go's trailing
  newline, ``Content-Type: application/json`` and ``Cache-Control: no-store``, 204 for empty
  answers, 404 ``{"errors":[]}`` for empty reads and lists, the go-multierror wrapping of
  non-coded errors, 403 permission denied / invalid token, 503 ``Vault is sealed``;
* the ``LIST`` verb and ``GET ?list=true``; ``X-Vault-Namespace`` is accepted and ignored;
* transit at any enabled mount (``transit/`` is mounted by default): keys create, read, list,
  delete, config, rotate, trim, ``config/keys``, datakey plaintext|wrapped, encrypt, decrypt and
  rewrap with ``batch_input``, ``reference`` and ``partial_failure_response_code``;
* real crypto: 32 random bytes per key version (16 for aes128-gcm96), AES-256-GCM (or
  ChaCha20-Poly1305) with a 12-byte random nonce, ``vault:vN:base64(nonce|ct|tag)``, AAD from
  ``associated_data``, derived keys by HKDF-SHA256 (salt empty, info = context), convergent
  encryption version 3 (nonce = HMAC-SHA256(derived hmac key, plaintext)[:12]);
* ``sys/mounts``, ``sys/seal-status``, ``sys/health`` (GET/HEAD), ``sys/init``;
  ``auth/token/lookup-self``, ``renew-self``, ``revoke-self``, AppRole and Kubernetes login;
* ACL policies: a path (exact, ``+`` segment or trailing ``*`` glob) to capabilities; POST on
  ``encrypt/:name`` is *update* when the key exists and *create* otherwise (upsert); every
  other POST is *update*. Every token also gets the ``default`` policy's self-service grants.

Not confirmed (marked ``[?]`` where they are used):

* a request without a token gets 403 ``permission denied`` (Vault <= 1.9 said 400
  ``missing client token``);
* renew-self on a non-renewable (e.g. root) token gives 400 ``lease is not renewable``;
  a bad Kubernetes JWT gives 403 ``permission denied``;
* the exact text and status of DELETE key refusals (400 with
  ``error deleting policy <n>: ...`` as in the code);
* ``unsupported path`` / ``unsupported operation`` bodies (404 / 405, multierror-wrapped);
* the ``Endpoint ignored these unrecognized parameters: [..]`` warning (sorted names);
* the wording of type-conversion errors (``error converting input ... for field ...``),
  of an unknown mount type and of a malformed JSON body (``error parsing JSON``);
* ``convergent_encryption_version`` reads as -1 for new convergent keys, as in keysutil;
* the messages for a malformed rewrap ``batch_input`` (Vault decodes it with mapstructure,
  here with encrypt/decrypt's decoder);
* auto-rotation happens lazily when a key is next used (Vault rotates from a periodic job).

The trim rules and texts (typos included) come from Vault's ``path_trim.go``, which the
reference does not cover; config's rules from ``path_keys_config.go``.

Test controls: ``seal``/``unseal``, ``set_latency``, ``fail_next``, ``advance_clock`` (token
expiry), ``create_token``/``revoke_token``, ``add_approle``, ``add_kubernetes_role`` and the
``calls`` counter. ``python tests/transit_emulator.py --port P --root-token T`` serves alone.

Deliberate limits: only the AEAD key types aes256-gcm96, aes128-gcm96 and chacha20-poly1305
exist; any other type (ed25519, rsa-*, ecdsa-*, hmac, ...) gets 400 ``unknown key type <t>``,
which real Vault would not say for those. ``cubbyhole/`` and ``identity/`` are listed but not
served; only ``transit`` can be mounted. No leases, response wrapping, request-size limits (413),
HA/standby states, sign/verify/hmac/export/backup endpoints.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

JSON = dict[str, Any]

VAULT_VERSION = "1.19.5"
DEFAULT_ROOT_TOKEN = "root"
ERR_TOO_OLD = "ciphertext or signature version is disallowed by policy (too old)"
ERR_CONVERGENT = "convergent encryption requires derivation to be enabled"
ERR_CONTEXT_MIX = "context should be set either in all the request blocks or in none"
ERR_NONCE_NOT_ALLOWED = "provided nonce not allowed for this key"
ERR_MISSING_CONTEXT = (
    "missing 'context' for key derivation; the key was created using a derived key, which means "
    "additional, per-request information must be included in order to perform operations with "
    "the key"
)
KEY_SIZES = {"aes256-gcm96": 32, "aes128-gcm96": 16, "chacha20-poly1305": 32}
DEFAULT_POLICY = {
    "auth/token/lookup-self": {"read"},
    "auth/token/renew-self": {"update"},
    "auth/token/revoke-self": {"update"},
}
NAME = r"(?P<name>\w(?:[\w.-]*\w)?)"  # framework.GenericNameRegex, ASCII \w as in Go


def multierror(*messages: str) -> str:
    """Format errors the way hashicorp/go-multierror does."""
    if len(messages) == 1:
        return f"1 error occurred:\n\t* {messages[0]}\n\n"
    points = "\n\t".join(f"* {m}" for m in messages)
    return f"{len(messages)} errors occurred:\n\t{points}\n\n"


class VaultError(Exception):
    """An answer other than success: an HTTP status and the ``errors`` list."""

    def __init__(self, status: int, errors: list[str]) -> None:
        super().__init__(f"{status}: {errors}")
        self.status = status
        self.errors = errors


def user_error(message: str) -> VaultError:
    """``logical.ErrorResponse``: 400 with the text unwrapped."""
    return VaultError(400, [message])


def internal_error(message: str) -> VaultError:
    """A non-coded handler error: 500, wrapped by core in go-multierror."""
    return VaultError(500, [multierror(message)])


PERMISSION_DENIED = VaultError(403, [multierror("permission denied")])
INVALID_TOKEN = VaultError(403, [multierror("permission denied", "invalid token")])
UNSUPPORTED_PATH = VaultError(404, [multierror("unsupported path")])  # [?] body
UNSUPPORTED_OPERATION = VaultError(405, [multierror("unsupported operation")])  # [?] body

# ----------------------------------------------------------------------------- encoding helpers

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64 = {c: i for i, c in enumerate(_ALPHABET)}


class Base64Error(ValueError):
    """Go's ``base64.CorruptInputError``."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"illegal base64 data at input byte {offset}")


def _assemble(values: list[int]) -> bytes:
    number = 0
    for i, value in enumerate(values):
        number |= value << (18 - 6 * i)
    return number.to_bytes(3, "big")[: len(values) - 1]


def go_b64decode(text: str) -> bytes:
    """``base64.StdEncoding.DecodeString``: padding required, CR/LF skipped, Go error offsets."""
    src = text.encode("utf-8", "surrogateescape")
    out = bytearray()
    si, n = 0, len(src)
    while True:
        quantum: list[int] = []
        while len(quantum) < 4:
            if si == n:
                if not quantum:
                    return bytes(out)
                raise Base64Error(si - len(quantum))
            ch = src[si]
            si += 1
            if ch in _B64:
                quantum.append(_B64[ch])
                continue
            if ch in (10, 13):
                continue
            if ch != ord("=") or len(quantum) < 2:
                raise Base64Error(si - 1)
            if len(quantum) == 2:  # "==" expected; the first "=" is consumed
                while si < n and src[si] in (10, 13):
                    si += 1
                if si == n:
                    raise Base64Error(n)
                if src[si] != ord("="):
                    raise Base64Error(si - 1)
                si += 1
            while si < n and src[si] in (10, 13):
                si += 1
            if si < n:
                raise Base64Error(si)
            return bytes(out + _assemble(quantum))
        out += _assemble(quantum)


def b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def go_type(value: object) -> str:
    """The Go type name ``%T`` would print for a value decoded by Vault's JSON parser."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "json.Number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    return "map[string]interface {}"


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ------------------------------------------------------------------- framework field parsing
# TypeInt/TypeBool accept numbers, bools or strings; JSON null means unset. The wording of
# conversion errors is [?]: Vault says `error converting input <v> for field "<k>": <Go err>`.


def _conversion_error(key: str, value: object, reason: str) -> VaultError:
    return user_error(f'error converting input {value} for field "{key}": {reason}')


def get_str(body: JSON, key: str, default: str = "") -> tuple[str, bool]:
    value = body.get(key)
    if value is None:
        return default, False
    if isinstance(value, bool):
        return ("1" if value else "0"), True
    if isinstance(value, (str, int, float)):
        return str(value), True
    raise _conversion_error(key, value, f"expected type 'string', got {go_type(value)}")


def get_int(body: JSON, key: str, default: int = 0) -> tuple[int, bool]:
    value = body.get(key)
    if value is None:
        return default, False
    if isinstance(value, bool):
        return int(value), True
    if isinstance(value, int):
        return value, True
    if isinstance(value, float) and value.is_integer():
        return int(value), True
    if isinstance(value, str):
        try:
            return int(value), True
        except ValueError:
            pass
    raise _conversion_error(key, value, f"cannot parse '{value}' as int")


def get_bool(body: JSON, key: str, default: bool = False) -> tuple[bool, bool]:
    value = body.get(key)
    if value is None:
        return default, False
    if isinstance(value, bool):
        return value, True
    if isinstance(value, (int, float)):
        return value != 0, True
    if isinstance(value, str):
        truth = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}
        if value.lower() in truth:
            return truth[value.lower()], True
    raise _conversion_error(key, value, f"cannot parse '{value}' as bool")


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def get_duration(body: JSON, key: str) -> tuple[int, bool]:
    """TypeDurationSecond: ``3600``, ``"3600"`` or a Go duration such as ``"1h30m"``."""
    value = body.get(key)
    if value is None:
        return 0, False
    if isinstance(value, str) and value and not value.lstrip("-").isdigit():
        parts = _DURATION_PART.findall(value)
        if "".join(a + b for a, b in parts) != value:
            raise _conversion_error(key, value, f'time: invalid duration "{value}"')
        return int(sum(float(a) * _DURATION_UNITS[b] for a, b in parts)), True
    return get_int(body, key)


def unknown_params_warning(body: JSON, known: set[str]) -> list[str]:
    ignored = sorted(k for k in body if k not in known)
    if not ignored:
        return []
    return [f"Endpoint ignored these unrecognized parameters: [{' '.join(ignored)}]"]  # [?]


# ------------------------------------------------------------------------------ transit model


class OpError(Exception):
    """An ``errutil.UserError`` (or, with ``internal``, an ``errutil.InternalError``)."""

    def __init__(self, message: str, internal: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.internal = internal

    def as_vault_error(self) -> VaultError:
        return internal_error(self.message) if self.internal else user_error(self.message)


@dataclass
class TransitKey:
    """One named key (a keysutil.Policy): versions 1..latest, some archived or trimmed."""

    name: str
    type: str
    derived: bool = False
    convergent: bool = False
    exportable: bool = False
    allow_plaintext_backup: bool = False
    auto_rotate_period: int = 0
    deletion_allowed: bool = False
    min_decryption_version: int = 1
    min_encryption_version: int = 0
    min_available_version: int = 0
    latest_version: int = 0
    material: dict[int, bytes] = field(default_factory=dict)
    created: dict[int, float] = field(default_factory=dict)

    def rotate(self, now: float) -> None:
        self.latest_version += 1
        self.material[self.latest_version] = os.urandom(KEY_SIZES[self.type])
        self.created[self.latest_version] = now

    def info(self) -> JSON:
        """``formatKeyPolicy``; ``keys`` shows the working set (>= min_decryption_version)."""
        data: JSON = {
            "allow_plaintext_backup": self.allow_plaintext_backup,
            "auto_rotate_period": self.auto_rotate_period,
            "deletion_allowed": self.deletion_allowed,
            "derived": self.derived,
            "exportable": self.exportable,
            "imported_key": False,
            "keys": {
                str(v): int(self.created[v])
                for v in range(self.min_decryption_version, self.latest_version + 1)
            },
            "latest_version": self.latest_version,
            "min_available_version": self.min_available_version,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "name": self.name,
            "supports_decryption": True,
            "supports_derivation": True,
            "supports_encryption": True,
            "supports_signing": False,
            "type": self.type,
        }
        if self.derived:
            data["kdf"] = "hkdf_sha256"
            data["convergent_encryption"] = self.convergent
            if self.convergent:
                data["convergent_encryption_version"] = -1  # [?] keysutil stores -1
        return dict(sorted(data.items()))

    def get_key(self, context: bytes, version: int, size: int) -> bytes:
        """``Policy.GetKey``: the version's key, or HKDF-SHA256(key, salt="", info=context)."""
        if self.derived:
            if version <= 0 or version > self.latest_version:
                raise OpError("invalid key version")
            if not context:
                raise OpError(ERR_MISSING_CONTEXT)
        # Archived (< min_decryption_version) and trimmed versions are not in the working set.
        if version < self.min_decryption_version or version not in self.material:
            raise OpError("no such key version")
        raw = self.material[version]
        if not self.derived:
            return raw
        return HKDF(algorithm=hashes.SHA256(), length=size, salt=None, info=context).derive(raw)

    def _aead(self, key: bytes) -> AESGCM | ChaCha20Poly1305:
        return ChaCha20Poly1305(key) if self.type == "chacha20-poly1305" else AESGCM(key)

    @staticmethod
    def _aad(encoded: str) -> bytes:
        """``AssocDataFactory.GetAssociatedData``; index 0 as no padding factory precedes it."""
        try:
            return go_b64decode(encoded)
        except Base64Error as exc:
            message = f"unable to get associated_data/additional_data from factory[0]: {exc}"
            raise OpError(message, internal=True) from None

    def encrypt(self, version: int, context: bytes, plaintext_b64: str, aad_b64: str = "") -> str:
        """``EncryptWithFactory`` for the AEAD types; returns ``vault:vN:...``."""
        try:
            plaintext = go_b64decode(plaintext_b64)
        except Base64Error as exc:
            raise OpError(str(exc)) from None
        if version == 0:
            version = self.latest_version
        elif version < 0:
            raise OpError("requested version for encryption is negative")
        elif version > self.latest_version:
            raise OpError("requested version for encryption is higher than the latest key version")
        elif version < self.min_encryption_version:
            raise OpError(
                "requested version for encryption is less than the minimum encryption key version"
            )
        size = KEY_SIZES[self.type]
        key = self.get_key(context, version, size + (32 if self.convergent else 0))
        aad = self._aad(aad_b64)
        if self.convergent:  # convergent version 3: the nonce is an HMAC of the plaintext
            nonce = hmac.new(key[size:], plaintext, hashlib.sha256).digest()[:12]
        else:
            nonce = os.urandom(12)
        sealed = self._aead(key[:size]).encrypt(nonce, plaintext, aad)
        return f"vault:v{version}:{b64encode(nonce + sealed)}"

    def decrypt(self, context: bytes, ciphertext: str, aad_b64: str = "") -> str:
        """``DecryptWithFactory``, checks in Vault's order; returns the base64 plaintext."""
        if not ciphertext.startswith("vault:v"):
            raise OpError("invalid ciphertext: no prefix")
        parts = ciphertext[len("vault:v") :].split(":", 1)
        if len(parts) != 2:
            raise OpError("invalid ciphertext: wrong number of fields")
        if not re.fullmatch(r"[+-]?[0-9]+", parts[0]):
            raise OpError("invalid ciphertext: version number could not be decoded")
        version = int(parts[0]) or 1  # compatibility: version 0 is read as 1
        if version > self.latest_version:
            raise OpError("invalid ciphertext: version is too new")
        if version < self.min_decryption_version:
            raise OpError(ERR_TOO_OLD)
        try:
            decoded = go_b64decode(parts[1])
        except Base64Error:
            raise OpError("invalid ciphertext: could not decode base64") from None
        key = self.get_key(context, version, KEY_SIZES[self.type])
        aad = self._aad(aad_b64)
        if len(decoded) < 12:
            raise OpError("invalid ciphertext length")
        try:
            plain = self._aead(key).decrypt(decoded[:12], decoded[12:], aad)
        except InvalidTag:
            prefix = "chacha20poly1305" if self.type == "chacha20-poly1305" else "cipher"
            raise OpError(f"{prefix}: message authentication failed") from None
        return b64encode(plain)


@dataclass
class BatchItem:
    plaintext: str = ""
    ciphertext: str = ""
    context: str = ""
    nonce: str = ""
    key_version: int = 0
    associated_data: str = ""
    reference: str = ""
    decoded_context: bytes = b""


def _unconvertible(expected: str, value: object) -> str:
    return f"expected type '{expected}', got unconvertible type '{go_type(value)}'"


def decode_batch(raw: object, required: str | None) -> list[BatchItem]:
    """``decodeBatchRequestItems``: a type error fails the whole request with a 500."""
    prefix = "failed to parse batch input: "
    if not isinstance(raw, list):
        message = f"source data must be an array or slice, got {go_type(raw)}"
        raise internal_error(prefix + message)
    items: list[BatchItem] = []
    errors: list[str] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise internal_error(f"{prefix}[{i}] expected a map, got '{go_type(entry)}'")
        item = BatchItem()
        for name in ("context", "ciphertext", "plaintext", "nonce", "associated_data", "reference"):
            if name not in entry:
                if name == required:
                    what = "to encrypt" if name == "plaintext" else "to decrypt"
                    errors.append(f"'[{i}].{name}' missing {name} {what}")
                continue
            value = entry[name]
            if isinstance(value, str):
                setattr(item, name, value)
            elif value is not None or name == "plaintext":  # only plaintext rejects null
                errors.append(f"'[{i}].{name}' {_unconvertible('string', value)}")
        version = entry.get("key_version")
        if isinstance(version, int) and not isinstance(version, bool):
            item.key_version = version
        elif isinstance(version, float):
            errors.append(
                f"error decoding json.Number into [{i}].key_version: "
                f'strconv.ParseInt: parsing "{version}": invalid syntax'
            )
        elif version is not None:
            errors.append(f"'[{i}].key_version' {_unconvertible('int', version)}")
        items.append(item)
    if errors:
        points = "\n".join(sorted(f"* {e}" for e in errors))
        raise internal_error(f"{prefix}{len(errors)} error(s) decoding:\n\n{points}")
    return items


def single_item(body: JSON, **values: str) -> BatchItem:
    return BatchItem(
        context=get_str(body, "context")[0],
        nonce=get_str(body, "nonce")[0],
        key_version=get_int(body, "key_version")[0],
        associated_data=get_str(body, "associated_data")[0],
        **values,  # type: ignore[arg-type]
    )


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


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    glob = pattern.endswith("*")
    body = pattern[:-1] if glob else pattern
    regex = "/".join("[^/]+" if seg == "+" else re.escape(seg) for seg in body.split("/"))
    return re.compile(regex + (".*" if glob else ""), re.DOTALL)


def capabilities(rules: dict[str, set[str]], path: str, listing: bool) -> set[str]:
    """An exact rule wins (for LIST also without the trailing slash Vault adds), else the
    longest matching ``*``/``+`` rule: a simplification of Vault's priority order."""
    exact = [path.rstrip("/"), path] if listing else [path]
    for candidate in exact:
        if candidate in rules:
            return rules[candidate]
    best: tuple[int, set[str]] | None = None
    for pattern, caps in rules.items():
        wildcard = "*" in pattern or "+" in pattern
        longer = best is None or len(pattern) > best[0]
        if wildcard and longer and _pattern_regex(pattern).fullmatch(path):
            best = (len(pattern), caps)
    return best[1] if best else set()


# ----------------------------------------------------------------------------- request plumbing


@dataclass
class Request:
    op: str  # read | list | update | create | delete
    path: str  # without /v1/
    body: JSON
    query: dict[str, str]
    token: Token | None = None
    match: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    data: JSON | None = None
    warnings: list[str] = field(default_factory=list)
    auth: JSON | None = None
    status: int | None = None  # set: logical.RespondWithStatusCode (batch failures)
    no_content: bool = False
    extra: JSON = field(default_factory=dict)  # top-level keys beside the envelope's


Handler = Callable[[Request], Result]
TransitHandler = Callable[[Mount, Request], Result]


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


@dataclass
class Reply:
    status: int
    body: bytes


def json_reply(status: int, body: object, newline: bool = True) -> Reply:
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return Reply(status, (text + ("\n" if newline else "")).encode("utf-8"))


def error_reply(exc: VaultError) -> Reply:
    return json_reply(exc.status, {"errors": exc.errors})


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


class TransitEmulator:
    """A Vault server speaking the Transit API over HTTP, with test controls."""

    def __init__(self, root_token: str = DEFAULT_ROOT_TOKEN, latency: float = 0.0) -> None:
        self.root_token = root_token
        self.latency = latency
        self.calls: collections.Counter[str] = collections.Counter()
        self.url = ""
        self._lock = threading.RLock()
        self._sealed = False
        self._clock_offset = 0.0
        self._failures: list[tuple[int, str, str | None]] = []
        self._builtin = {
            p: Mount(p, t)
            for p, t in [("cubbyhole/", "cubbyhole"), ("identity/", "identity"), ("sys/", "system")]
        }
        self._mounts: dict[str, Mount] = {"transit/": Mount("transit/", "transit")}
        self._approles: dict[str, dict[str, Login]] = {}  # auth mount -> role_id -> login
        self._k8s_roles: dict[str, dict[str, Login]] = {}  # auth mount -> role -> login
        self._tokens: dict[str, Token] = {}
        self._policy_seq = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tokens[root_token] = Token(
            root_token,
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

    # ---------------------------------------------------------------------------- lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve from a background thread; return the base URL ``http://host:port``."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        self._server = _Server((host, port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="transit-emulator",
            daemon=True,
        )
        self._thread.start()
        self.url = f"http://{host}:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        """Stop serving and cut kept-alive connections; calling it twice is harmless."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> TransitEmulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------ test controls

    def now(self) -> float:
        return time.time() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock forward (token expiry, auto-rotation)."""
        with self._lock:
            self._clock_offset += seconds

    def seal(self) -> None:
        with self._lock:
            self._sealed = True

    def unseal(self) -> None:
        with self._lock:
            self._sealed = False

    def set_latency(self, seconds: float) -> None:
        """Sleep this long before every answer (a network hop, or a slow Vault)."""
        self.latency = seconds

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        message: str = "injected failure",
        path_contains: str | None = None,
    ) -> None:
        """Answer the next ``n`` requests (only those whose path contains ``path_contains``, if
        given) with ``status`` and ``{"errors":[message]}``. They still count in ``calls``."""
        with self._lock:
            self._failures.extend([(status, message, path_contains)] * n)

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    def create_token(
        self,
        policies: dict[str, list[str]] | None = None,
        ttl: int = 3600,
        renewable: bool = True,
    ) -> str:
        """A service token with the ``default`` policy plus ``policies`` (path -> capabilities,
        a path may end in ``*``). ``ttl`` 0 means no expiry."""
        with self._lock:
            names = ["default"]
            if policies:
                self._policy_seq += 1
                names.append(f"emulated-{self._policy_seq}")
            rules = {p: set(caps) for p, caps in (policies or {}).items()}
            return self._mint(names, rules, ttl, renewable).token

    def revoke_token(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)

    def add_approle(
        self,
        role_id: str,
        secret_id: str,
        policies: dict[str, list[str]],
        token_ttl: int = 3600,
        role_name: str | None = None,
        mount_point: str = "approle",
    ) -> None:
        name = role_name or role_id
        rules = {p: set(c) for p, c in policies.items()}
        login = Login(secret_id, rules, name, token_ttl, "approle", {"role_name": name})
        with self._lock:
            self._approles.setdefault(mount_point, {})[role_id] = login

    def add_kubernetes_role(
        self,
        role: str,
        jwt: str,
        policies: dict[str, list[str]],
        token_ttl: int = 3600,
        service_account: str = "default",
        namespace: str = "default",
        mount_point: str = "kubernetes",
    ) -> None:
        meta = {
            "role": role,
            "service_account_name": service_account,
            "service_account_namespace": namespace,
            "service_account_secret_name": "",
            "service_account_uid": str(uuid.uuid5(uuid.NAMESPACE_URL, namespace + service_account)),
        }
        rules = {p: set(c) for p, c in policies.items()}
        name = f"kubernetes-{namespace}-{service_account}"
        with self._lock:
            self._k8s_roles.setdefault(mount_point, {})[role] = Login(
                jwt, rules, role, token_ttl, name, meta
            )

    def _mint(
        self, names: list[str], rules: dict[str, set[str]], ttl: int, renewable: bool, **kw: Any
    ) -> Token:
        token = Token(
            "hvs." + secrets.token_urlsafe(18),
            secrets.token_urlsafe(18),
            sorted(names),
            rules,
            ttl,
            renewable,
            self.now(),
            **kw,
        )
        token.expires = token.issued + ttl if ttl > 0 else None
        self._tokens[token.token] = token
        return token

    # --------------------------------------------------------------------------- dispatching

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply:
        """Answer one HTTP request (everything except the socket work); headers lowercased."""
        if self.latency > 0:
            time.sleep(self.latency)
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if not url.path.startswith("/v1/"):
            return error_reply(VaultError(404, []))
        path = url.path[len("/v1/") :]
        ops = {"GET": "read", "HEAD": "read", "LIST": "list", "DELETE": "delete"}
        op = ops.get(method, "update")
        if method == "GET" and query.get("list", "").lower() in ("true", "1"):
            op = "list"
        with self._lock:
            route = self._route(path)
            self.calls[route.counter(op)] += 1
            for i, (status, message, needle) in enumerate(self._failures):
                if needle is None or needle in path:
                    del self._failures[i]
                    return error_reply(VaultError(status, [message]))
            if method not in ("GET", "HEAD", "LIST", "DELETE", "POST", "PUT"):
                return error_reply(UNSUPPORTED_OPERATION)
            try:
                return self._serve(route, method, Request(op, path, {}, query), headers, raw)
            except VaultError as exc:
                return error_reply(exc)

    def _serve(
        self, route: Route, method: str, request: Request, headers: dict[str, str], raw: bytes
    ) -> Reply:
        path = request.path
        if path == "sys/health" and method in ("GET", "HEAD"):
            return self._health(request.query, method)
        if path == "sys/seal-status" and request.op == "read":
            return json_reply(200, self._seal_status())
        if path == "sys/init" and request.op == "read":
            return json_reply(200, {"initialized": True})
        if self._sealed:
            raise VaultError(503, ["Vault is sealed"])
        if raw.strip() and method in ("POST", "PUT", "DELETE"):
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise user_error("error parsing JSON")  # [?] wording
            request.body = parsed
        if not route.unauthenticated:
            request.token = self._authenticate(headers)
        if route.error is None and request.op == "update" and route.exists and not route.exists():
            request.op = "create"  # encrypt on a missing key: the upsert needs `create`
        token = request.token
        if token is not None and token.rules is not None:
            rules = {p: set(c) for p, c in token.rules.items()}
            for p, caps in DEFAULT_POLICY.items():
                rules[p] = rules.get(p, set()) | caps
            listing = request.op == "list"
            caps = capabilities(rules, path.rstrip("/") + "/" if listing else path, listing)
            if "deny" in caps or request.op not in caps:
                raise PERMISSION_DENIED
        if route.error is not None:
            raise route.error
        handler = route.handlers.get("update" if request.op == "create" else request.op)
        if handler is None:
            raise UNSUPPORTED_OPERATION
        result = handler(request)
        if result.no_content:
            return Reply(204, b"")
        envelope: JSON = {
            "request_id": str(uuid.uuid4()),
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": result.data,
            "wrap_info": None,
            "warnings": result.warnings or None,
            "auth": result.auth,
            "mount_type": route.mount_type if result.status is None else "",
            **result.extra,
        }
        if result.status is None:
            return json_reply(200, envelope)
        # logical.RespondWithStatusCode: the envelope via json.Marshal, so no trailing newline
        return json_reply(result.status, envelope, newline=False)

    def _authenticate(self, headers: dict[str, str]) -> Token:
        value = headers.get("x-vault-token", "")
        bearer = headers.get("authorization", "")
        if not value and bearer.lower().startswith("bearer "):
            value = bearer[len("bearer ") :].strip()
        if not value:
            raise PERMISSION_DENIED  # [?] Vault <= 1.9 answered 400 "missing client token"
        token = self._tokens.get(value)
        if token is None:
            raise INVALID_TOKEN
        if token.expires is not None and self.now() >= token.expires:
            del self._tokens[value]
            raise INVALID_TOKEN
        return token

    def _route(self, path: str) -> Route:
        if path in ("sys/health", "sys/seal-status"):
            return Route({"*": path[4:].replace("-", "_")}, "system", unauthenticated=True)
        if path == "sys/init":
            return Route({"*": "init"}, "system", {"update": self._init}, unauthenticated=True)
        if path == "sys/mounts":
            return Route({"*": "list_mounts"}, "system", {"read": self._list_mounts})
        if path.startswith("sys/mounts/") and path.strip("/") != "sys/mounts":
            handlers: dict[str, Handler] = {"update": self._enable, "delete": self._disable}
            return Route({"update": "mount", "delete": "unmount"}, "system", handlers)
        token_paths: dict[str, tuple[str, str, Handler]] = {
            "auth/token/lookup-self": ("read", "lookup", self._lookup_self),
            "auth/token/renew-self": ("update", "renew", self._renew_self),
            "auth/token/revoke-self": ("update", "revoke", self._revoke_self),
        }
        if path in token_paths:
            op, counter, handler = token_paths[path]
            return Route({"*": counter}, "token", {op: handler})
        login = re.fullmatch(r"auth/(.+)/login", path)
        if login and login.group(1) in self._approles:
            approle = self._approles[login.group(1)]
            return Route(
                {"*": "login"},
                "approle",
                unauthenticated=True,
                handlers={"update": lambda r: self._approle_login(approle, r)},
            )
        if login and login.group(1) in self._k8s_roles:
            k8s = self._k8s_roles[login.group(1)]
            return Route(
                {"*": "login"},
                "kubernetes",
                unauthenticated=True,
                handlers={"update": lambda r: self._k8s_login(k8s, r)},
            )
        mounts = [m for p, m in self._mounts.items() if (path + "/").startswith(p)]
        if not mounts:
            not_found = f'no handler for route "{path}". route entry not found.'
            return Route({"*": "unknown"}, "", error=VaultError(404, [not_found]))
        mount = max(mounts, key=lambda m: len(m.path))
        return self._transit_route(mount, path[len(mount.path) :])

    def _transit_route(self, mount: Mount, sub: str) -> Route:
        key_ops = {"update": "create_key", "read": "read_key", "delete": "delete_key"}
        table: list[tuple[str, dict[str, str], dict[str, TransitHandler], set[str]]] = [
            ("keys/?", {"*": "list_keys"}, {"list": self._list_keys}, set()),
            (
                f"keys/{NAME}",
                key_ops,
                {"update": self._create_key, "read": self._read_key, "delete": self._delete_key},
                KEY_FIELDS,
            ),
            (f"keys/{NAME}/config", {"*": "config"}, {"update": self._config}, CONFIG_FIELDS),
            (
                f"keys/{NAME}/rotate",
                {"*": "rotate"},
                {"update": self._rotate},
                {"name", "managed_key_name", "managed_key_id"},
            ),
            (
                f"keys/{NAME}/trim",
                {"*": "trim"},
                {"update": self._trim},
                {"name", "min_available_version"},
            ),
            (
                f"datakey/(?P<kind>\\w(?:[\\w.-]*\\w)?)/{NAME}",
                {"*": "datakey"},
                {"update": self._datakey},
                CRYPT_FIELDS,
            ),
            (f"encrypt/{NAME}", {"*": "encrypt"}, {"update": self._encrypt}, CRYPT_FIELDS),
            (f"decrypt/{NAME}", {"*": "decrypt"}, {"update": self._decrypt}, CRYPT_FIELDS),
            (f"rewrap/{NAME}", {"*": "rewrap"}, {"update": self._rewrap}, CRYPT_FIELDS),
            (
                "config/keys",
                {"*": "config_keys"},
                {"update": self._config_keys, "read": self._config_keys},
                {"disable_upsert"},
            ),
        ]
        for pattern, counters, ops, known in table:
            match = re.fullmatch(pattern, sub, re.ASCII)
            if match is None:
                continue
            groups = {k: v for k, v in match.groupdict().items() if v is not None}
            handlers = {op: self._bind(fn, mount, groups, known) for op, fn in ops.items()}
            route = Route(counters, "transit", handlers)
            if sub.startswith("encrypt/"):
                route.exists = functools.partial(mount.keys.__contains__, groups["name"])
            return route
        return Route({"*": "unknown"}, "transit", error=UNSUPPORTED_PATH)

    @staticmethod
    def _bind(fn: TransitHandler, mount: Mount, groups: dict[str, str], known: set[str]) -> Handler:
        def run(request: Request) -> Result:
            request.match = groups
            result = fn(mount, request)
            if result.status is None and not result.no_content:
                result.warnings += unknown_params_warning(request.body, known)
            return result

        return run

    # ------------------------------------------------------------------------- sys handlers

    def _health(self, query: dict[str, str], method: str) -> Reply:
        sealed = self._sealed
        try:
            code = int(query["sealedcode" if sealed else "activecode"])
        except (KeyError, ValueError):
            code = 503 if sealed else 200
        body: JSON = {
            "initialized": True,
            "sealed": sealed,
            "standby": sealed,
            "performance_standby": False,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": "disabled",
            "server_time_utc": int(self.now()),
            "version": VAULT_VERSION,
            "enterprise": False,
            "echo_duration_ms": 0,
            "clock_skew_ms": 0,
            "replication_primary_canary_age_ms": 0,
            "removed_from_cluster": False,
        }
        if not sealed:
            body |= {"cluster_name": "vault-cluster-emulated", "cluster_id": self._cluster_id()}
        return Reply(code, b"") if method == "HEAD" else json_reply(code, body)

    def _cluster_id(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"transit-emulator-{id(self)}"))

    def _seal_status(self) -> JSON:
        body: JSON = {
            "type": "shamir",
            "initialized": True,
            "sealed": self._sealed,
            "t": 1,
            "n": 1,
            "progress": 0,
            "nonce": "",
            "version": VAULT_VERSION,
            "build_date": "2025-06-01T00:00:00Z",
            "migration": False,
            "recovery_seal": False,
            "storage_type": "inmem",
            "removed_from_cluster": False,
        }
        if not self._sealed:
            body |= {"cluster_name": "vault-cluster-emulated", "cluster_id": self._cluster_id()}
        return body

    def _init(self, request: Request) -> Result:
        raise user_error("Vault is already initialized")

    def _list_mounts(self, request: Request) -> Result:
        mounts = {p: m.entry() for p, m in sorted({**self._builtin, **self._mounts}.items())}
        return Result(mounts, extra=mounts)  # legacy: duplicated at the top level

    def _enable(self, request: Request) -> Result:
        path = request.path[len("sys/mounts/") :].strip("/") + "/"
        mount_type, _ = get_str(request.body, "type")
        if not mount_type:
            raise user_error("backend type must be specified as a string")  # [?] wording
        if mount_type != "transit":  # the emulator only has transit; [?] wording
            raise user_error(f"plugin not found in the catalog: {mount_type}")
        for existing in [*self._builtin, "auth/", *self._mounts]:
            if path.startswith(existing) or existing.startswith(path):
                raise user_error(f"path is already in use at {existing}")
        self._mounts[path] = Mount(path, mount_type, get_str(request.body, "description")[0])
        return Result(no_content=True)

    def _disable(self, request: Request) -> Result:
        path = request.path[len("sys/mounts/") :].strip("/") + "/"
        if path in self._builtin:
            raise user_error(f'cannot unmount "{path}"')
        self._mounts.pop(path, None)
        return Result(no_content=True)

    # ------------------------------------------------------------------------ auth handlers

    def _lookup_self(self, request: Request) -> Result:
        token = request.token
        assert token is not None
        remaining = 0 if token.expires is None else max(0, int(token.expires - self.now()))
        data: JSON = {
            "accessor": token.accessor,
            "creation_time": int(token.issued),
            "creation_ttl": token.ttl,
            "display_name": token.display_name,
            "entity_id": "",
            "expire_time": None if token.expires is None else rfc3339(token.expires),
            "explicit_max_ttl": 0,
            "id": token.token,
            "issue_time": rfc3339(token.issued),
            "meta": token.meta,
            "num_uses": 0,
            "orphan": token.orphan,
            "path": token.path,
            "policies": token.policy_names,
            "renewable": token.renewable,
            "ttl": remaining,
            "type": "service",
        }
        if token.last_renewal is not None:
            data["last_renewal"] = rfc3339(token.last_renewal)
            data["last_renewal_time"] = int(token.last_renewal)
        return Result(dict(sorted(data.items())))

    def _renew_self(self, request: Request) -> Result:
        token = request.token
        assert token is not None
        if not token.renewable or token.expires is None:
            raise user_error("lease is not renewable")  # [?]
        increment, given = get_duration(request.body, "increment")
        ttl = increment if given and increment > 0 else token.ttl
        token.last_renewal = self.now()
        token.expires = token.last_renewal + ttl
        return Result(None, auth=token.auth_block(ttl))

    def _revoke_self(self, request: Request) -> Result:
        assert request.token is not None
        self._tokens.pop(request.token.token, None)
        return Result(no_content=True)

    def _login(self, login: Login, path: str) -> Result:
        token = self._mint(
            ["default", login.policy_name],
            login.rules,
            login.token_ttl,
            True,
            display_name=login.display_name,
            path=path,
            meta=login.meta,
            orphan=True,
        )
        return Result(None, auth=token.auth_block(login.token_ttl))

    def _approle_login(self, roles: dict[str, Login], request: Request) -> Result:
        role_id, _ = get_str(request.body, "role_id")
        secret_id, _ = get_str(request.body, "secret_id")
        if not role_id:
            raise user_error("missing role_id")
        login = roles.get(role_id)
        if login is None or not hmac.compare_digest(login.secret, secret_id):
            raise user_error("invalid role or secret ID")
        return self._login(login, request.path)

    def _k8s_login(self, roles: dict[str, Login], request: Request) -> Result:
        role, _ = get_str(request.body, "role")
        jwt, _ = get_str(request.body, "jwt")
        if not role:
            raise user_error("missing role")
        if not jwt:
            raise user_error("missing jwt")
        login = roles.get(role)
        if login is None:
            raise user_error(f'invalid role name "{role}"')
        if not hmac.compare_digest(login.secret, jwt):
            raise PERMISSION_DENIED  # [?] a JWT the TokenReview rejects
        return self._login(login, request.path)

    # --------------------------------------------------------------------- transit handlers

    def _key(self, mount: Mount, name: str) -> TransitKey | None:
        key = mount.keys.get(name)
        if key is not None and key.auto_rotate_period > 0:
            now = self.now()  # [?] Vault rotates from a periodic job; here lazily on use
            if now - key.created[key.latest_version] >= key.auto_rotate_period:
                key.rotate(now)
        return key

    def _list_keys(self, mount: Mount, request: Request) -> Result:
        if not mount.keys:
            raise VaultError(404, [])
        return Result({"keys": sorted(mount.keys)})

    def _read_key(self, mount: Mount, request: Request) -> Result:
        key = self._key(mount, request.match["name"])
        if key is None:
            raise VaultError(404, [])
        return Result(key.info())

    def _create_key(self, mount: Mount, request: Request) -> Result:
        body, name = request.body, request.match["name"]
        key_type, _ = get_str(body, "type", "aes256-gcm96")
        derived, _ = get_bool(body, "derived")
        convergent, _ = get_bool(body, "convergent_encryption")
        exportable, _ = get_bool(body, "exportable")
        backup, _ = get_bool(body, "allow_plaintext_backup")
        period, _ = get_duration(body, "auto_rotate_period")
        key_size, _ = get_int(body, "key_size")
        if period != 0 and period < 3600:
            raise user_error("auto rotate period must be 0 to disable or at least an hour")
        if convergent and not derived:
            raise user_error(ERR_CONVERGENT)
        if key_type not in KEY_SIZES:  # real Vault also has ed25519, rsa-*, ecdsa-*, hmac...
            raise user_error(f"unknown key type {key_type}")
        if key_size != 0:
            raise user_error(f"key_size is not valid for algorithm {key_type}")
        key = self._key(mount, name)
        if key is not None:  # idempotent: the existing key, unchanged, plus a warning
            return Result(key.info(), [f"key {name} already existed"])
        key = TransitKey(name, key_type, derived, convergent, exportable, backup, period)
        key.rotate(self.now())
        mount.keys[name] = key
        return Result(key.info())

    def _delete_key(self, mount: Mount, request: Request) -> Result:
        name = request.match["name"]
        key = mount.keys.get(name)
        # [?] exact text; OpenBao answers 400 and the code wraps the lock manager's error
        if key is None:
            raise user_error(f"error deleting policy {name}: could not delete key; not found")
        if not key.deletion_allowed:
            raise user_error(f"error deleting policy {name}: deletion is not allowed for this key")
        del mount.keys[name]
        return Result(no_content=True)

    def _config(self, mount: Mount, request: Request) -> Result:
        name = request.match["name"]
        key = self._key(mount, name)
        if key is None:
            raise user_error(f"no existing key named {name} could be found")
        saved = dict(vars(key))
        try:
            return self._apply_config(key, request.body)
        except VaultError:  # on error the values are rolled back
            vars(key).update(saved)
            raise

    @staticmethod
    def _apply_config(key: TransitKey, body: JSON) -> Result:
        warnings: list[str] = []
        changed = False
        latest = key.latest_version
        value, given = get_int(body, "min_decryption_version")
        if given:
            if value < 0:
                raise user_error("min decryption version cannot be negative")
            if value == 0:
                value = 1
                warnings.append(
                    "since Vault 0.3, transit key numbering starts at 1; forcing minimum to 1"
                )
            if value != key.min_decryption_version:
                if value > latest:
                    raise user_error(
                        f"cannot set min decryption version of {value}, "
                        f"latest key version is {latest}"
                    )
                key.min_decryption_version, changed = value, True
        value, given = get_int(body, "min_encryption_version")
        if given:
            if value < 0:
                raise user_error("min encryption version cannot be negative")
            if value != key.min_encryption_version:
                if value > latest:
                    raise user_error(
                        f"cannot set min encryption version of {value}, "
                        f"latest key version is {latest}"
                    )
                key.min_encryption_version, changed = value, True
        enc, dec = key.min_encryption_version, key.min_decryption_version
        if 0 < enc < dec:
            raise user_error(
                "cannot set min encryption/decryption values; min encryption version of "
                f"{enc} must be greater than or equal to min decryption version of {dec}"
            )
        flag, given = get_bool(body, "deletion_allowed")
        if given and flag != key.deletion_allowed:
            key.deletion_allowed, changed = flag, True
        flag, given = get_bool(body, "exportable")
        if given and flag and not key.exportable:  # one-way
            key.exportable, changed = True, True
        flag, given = get_bool(body, "allow_plaintext_backup")
        if given and flag and not key.allow_plaintext_backup:  # one-way
            key.allow_plaintext_backup, changed = True, True
        period, given = get_duration(body, "auto_rotate_period")
        if given:
            if period != 0 and period < 3600:
                raise user_error("auto rotate period must be 0 to disable or at least an hour")
            if period != key.auto_rotate_period:
                key.auto_rotate_period, changed = period, True
        if changed and key.min_available_version > key.min_encryption_version:
            raise user_error("min encryption version should not be less than min available version")
        if changed and key.min_available_version > key.min_decryption_version:
            raise user_error("min decryption version should not be less then min available version")
        return Result(key.info(), warnings)

    def _rotate(self, mount: Mount, request: Request) -> Result:
        key = self._key(mount, request.match["name"])
        if key is None:
            raise user_error("key not found")
        key.rotate(self.now())
        return Result(key.info())

    def _trim(self, mount: Mount, request: Request) -> Result:
        """``keys/:name/trim``: permanently delete the versions below min_available_version."""
        key = self._key(mount, request.match["name"])
        if key is None:
            raise user_error("invalid key name")
        value, given = get_int(request.body, "min_available_version")
        if not given:
            raise user_error("missing min_available_version")
        checks = [  # path_trim.go, in order, typos included
            (value < key.min_available_version, "minimum available version cannot be decremented"),
            (
                key.min_encryption_version == 0,
                "minimum available version cannot be set when "
                "minimum encryption version is not set",
            ),
            (
                key.min_decryption_version == 0,
                "minimum available version cannot be set when "
                "minimum decryption version is not set",
            ),
            (
                value > key.min_encryption_version,
                "minimum available version cannot be greater than minmum encryption version",
            ),
            (
                value > key.min_decryption_version,
                "minimum available version cannot be greater than minimum decryption version",
            ),
            (value < 0, "minimum available version cannot be negative"),
            (value == 0, "minimum available version should be positive"),
        ]
        for failed, message in checks:
            if failed:
                raise user_error(message)
        key.min_available_version = value
        for version in [v for v in key.material if v < value]:
            del key.material[version]
            del key.created[version]
        return Result(key.info())

    def _config_keys(self, mount: Mount, request: Request) -> Result:
        if request.op != "read":
            mount.disable_upsert = get_bool(request.body, "disable_upsert")[0]
        return Result({"disable_upsert": mount.disable_upsert})

    @staticmethod
    def _b64_param(body: JSON, name: str) -> bytes:
        value, _ = get_str(body, name)
        try:
            return go_b64decode(value)
        except Base64Error:
            raise user_error(f"failed to base64-decode {name}") from None

    def _datakey(self, mount: Mount, request: Request) -> Result:
        body = request.body
        key_version, _ = get_int(body, "key_version")
        context = self._b64_param(body, "context")
        nonce = self._b64_param(body, "nonce")
        bits, _ = get_int(body, "bits", 256)
        if bits not in (128, 256, 512):
            raise user_error("invalid bit length")
        kind = request.match["kind"]
        if kind not in ("plaintext", "wrapped"):
            raise user_error("Invalid path, must be 'plaintext' or 'wrapped'")
        key = self._key(mount, request.match["name"])
        if key is None:
            raise user_error("encryption key not found")  # datakey never upserts
        if nonce:
            raise internal_error(ERR_NONCE_NOT_ALLOWED)  # a bare error: 500
        new_key = b64encode(os.urandom(bits // 8))
        try:
            ciphertext = key.encrypt(key_version, context, new_key)
        except OpError as exc:
            raise exc.as_vault_error() from None
        data: JSON = {"ciphertext": ciphertext, "key_version": key_version or key.latest_version}
        if kind == "plaintext":
            data["plaintext"] = new_key
        return Result(data)

    @staticmethod
    def _batch_status(body: JSON, result: Result, ok: bool, user: bool, internal: bool) -> Result:
        """``batchRequestResponse``: 400 on a user error, else 500, unless
        ``partial_failure_response_code`` overrides it and at least one item succeeded."""
        if not (user or internal):
            return result
        code = 400 if user else 500
        override, given = get_int(body, "partial_failure_response_code")
        if given and ok:
            if 1 <= override <= 599:
                code = override
            else:
                result.warnings.append(
                    "invalid HTTP response code override from partial_failure_response_code, "
                    f"reverting to {code}"
                )
        result.status = code
        return result

    def _items(self, body: JSON, field_name: str) -> tuple[list[BatchItem], bool]:
        """The batch items, or one item built from the top-level fields (``batch`` False)."""
        if body.get("batch_input") is not None:
            items = decode_batch(body["batch_input"], field_name)
            if not items:
                raise user_error("missing batch input to process")
            return items, True
        value, given = get_str(body, field_name)
        if field_name == "plaintext" and not given:
            raise user_error("missing plaintext to encrypt")
        if field_name != "plaintext" and not value:
            raise user_error("missing ciphertext to decrypt")
        return [single_item(body, **{field_name: value})], False

    @staticmethod
    def _decode_contexts(items: list[BatchItem], errors: list[str], check: str) -> None:
        """The first pass over the items: context consistency and base64 decoding."""
        context_set = bool(items[0].context)
        for i, item in enumerate(items):
            if bool(item.context) != context_set:
                raise user_error(ERR_CONTEXT_MIX)
            try:
                if check == "plaintext":
                    go_b64decode(item.plaintext)
                elif not item.ciphertext:
                    errors[i] = "missing ciphertext to decrypt"
                    continue
                if item.context:
                    item.decoded_context = go_b64decode(item.context)
                if item.nonce:
                    go_b64decode(item.nonce)
            except Base64Error as exc:
                errors[i] = str(exc)

    def _encrypt(self, mount: Mount, request: Request) -> Result:
        body, name = request.body, request.match["name"]
        items, batch = self._items(body, "plaintext")
        errors = [""] * len(items)
        self._decode_contexts(items, errors, "plaintext")
        user = any(errors)
        key = self._key(mount, name)
        if request.op == "create":
            context_set = bool(items[0].context)
            convergent, _ = get_bool(body, "convergent_encryption")
            if convergent and not context_set:
                raise user_error(f"{ERR_CONVERGENT}, so context is required")
            key_type, _ = get_str(body, "type", "aes256-gcm96")
            if key_type in ("ecdsa-p256", "ecdsa-p384", "ecdsa-p521"):
                raise user_error(f"key type {key_type} not supported for this operation")
            if key_type not in KEY_SIZES:
                raise user_error(f"unknown key type {key_type}")
            if key is None and not mount.disable_upsert:
                key = TransitKey(name, key_type, derived=context_set, convergent=convergent)
                key.rotate(self.now())
                mount.keys[name] = key
        if key is None:
            raise user_error("encryption key not found")
        ok = internal = False
        outputs: list[tuple[str, int]] = [("", 0)] * len(items)
        for i, item in enumerate(items):
            if errors[i]:
                continue
            if item.nonce:  # only convergent version 1 keys take a nonce; none are made here
                user, errors[i] = True, ERR_NONCE_NOT_ALLOWED
                continue
            try:
                ciphertext = key.encrypt(
                    item.key_version, item.decoded_context, item.plaintext, item.associated_data
                )
            except OpError as exc:
                internal, user = internal or exc.internal, user or not exc.internal
                errors[i] = exc.message
                continue
            ok = True
            outputs[i] = (ciphertext, item.key_version or key.latest_version)
        if not batch:
            if errors[0]:
                raise internal_error(errors[0]) if internal else user_error(errors[0])
            return Result({"ciphertext": outputs[0][0], "key_version": outputs[0][1]})
        results = self._cipher_results(items, errors, outputs)
        return self._batch_status(body, results, ok, user, internal)

    def _decrypt(self, mount: Mount, request: Request) -> Result:
        body = request.body
        items, batch = self._items(body, "ciphertext")
        errors = [""] * len(items)
        self._decode_contexts(items, errors, "ciphertext")
        user = any(errors)
        key = self._key(mount, request.match["name"])
        if key is None:
            raise user_error("encryption key not found")  # decrypt never upserts
        ok = internal = False
        plaintexts = [""] * len(items)
        for i, item in enumerate(items):
            if errors[i]:
                continue
            try:
                plaintexts[i] = key.decrypt(
                    item.decoded_context, item.ciphertext, item.associated_data
                )
            except OpError as exc:
                internal, user = internal or exc.internal, user or not exc.internal
                errors[i] = exc.message
                continue
            ok = True
        if not batch:
            if errors[0]:
                raise internal_error(errors[0]) if internal else user_error(errors[0])
            return Result({"plaintext": plaintexts[0]})
        results: list[JSON] = []
        for item, error, plaintext in zip(items, errors, plaintexts, strict=True):
            entry: JSON = {"plaintext": plaintext}
            if error:
                entry["error"] = error
            entry["reference"] = item.reference
            results.append(entry)
        return self._batch_status(body, Result({"batch_results": results}), ok, user, internal)

    def _rewrap(self, mount: Mount, request: Request) -> Result:
        """Decrypt, then encrypt again with a fresh nonce. A batch always answers 200."""
        body = request.body
        if body.get("batch_input") is not None:  # [?] rewrap uses mapstructure.Decode itself
            items, batch = decode_batch(body["batch_input"], None), True
            if not items:
                raise user_error("missing batch input to process")
        else:
            ciphertext, _ = get_str(body, "ciphertext")
            if not ciphertext:
                raise user_error("missing ciphertext to decrypt")
            items, batch = [single_item(body, ciphertext=ciphertext)], False
        errors = [""] * len(items)
        self._decode_contexts(items, errors, "ciphertext")
        key = self._key(mount, request.match["name"])
        if key is None:
            raise user_error("encryption key not found")
        outputs: list[tuple[str, int]] = [("", 0)] * len(items)
        for i, item in enumerate(items):
            if errors[i]:
                continue
            if item.nonce:
                errors[i] = ERR_NONCE_NOT_ALLOWED
                continue
            try:  # rewrap has no associated_data
                plaintext = key.decrypt(item.decoded_context, item.ciphertext)
                ciphertext = key.encrypt(item.key_version, item.decoded_context, plaintext)
            except OpError as exc:
                if exc.internal:
                    raise exc.as_vault_error() from None
                errors[i] = exc.message
                continue
            outputs[i] = (ciphertext, item.key_version or key.latest_version)
        if not batch:
            if errors[0]:
                raise user_error(errors[0])
            return Result({"ciphertext": outputs[0][0], "key_version": outputs[0][1]})
        return self._cipher_results(items, errors, outputs)

    @staticmethod
    def _cipher_results(
        items: list[BatchItem], errors: list[str], outputs: list[tuple[str, int]]
    ) -> Result:
        """``EncryptBatchResponseItem``s: omitempty fields, ``reference`` always present."""
        results: list[JSON] = []
        for item, error, (ciphertext, version) in zip(items, errors, outputs, strict=True):
            entry: JSON = {"error": error} if error else {"ciphertext": ciphertext}
            if not error:
                entry["key_version"] = version
            results.append(entry | {"reference": item.reference})
        return Result({"batch_results": results})


# --------------------------------------------------------------------------------- HTTP server


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: TransitEmulator) -> None:
        self.emulator = emulator
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # not a client gone or cut by stop()
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self.connections_lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like Vault; every answer has a length
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid 40 ms stalls

    @property
    def _server(self) -> _Server:
        assert isinstance(self.server, _Server)
        return self.server

    def setup(self) -> None:
        super().setup()
        with self._server.connections_lock:
            self._server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self._server.connections_lock:
                self._server.connections.discard(self.connection)

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self._server.emulator.handle(method, self.path, headers, raw)
        self.send_response(reply.status)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Type", "application/json")
        if reply.status != 204:
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if method != "HEAD" and reply.status != 204:
            self.wfile.write(reply.body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_LIST(self) -> None:
        self._serve("LIST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log line."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Emulate HashiCorp Vault's Transit HTTP API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--root-token", default=DEFAULT_ROOT_TOKEN)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    emulator = TransitEmulator(root_token=args.root_token, latency=args.latency)
    url = emulator.start(args.host, args.port)
    print(f"Vault transit emulator listening on {url}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``hmac``, ``sign`` and ``verify``: Vault CE's ``path_hmac.go`` and ``path_sign_verify.go``.

Facts, texts and sources: ``docs/vault-transit-hmac-sign.md``. Unlike encrypt and decrypt, a
batch here always answers 200, each failed item carrying its ``error``; a single ``sign`` whose
key version is refused answers 500 (hashicorp/vault#20713), which the emulator copies.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transit_emulator.envelope import Request, Result
from transit_emulator.errors import OpError, internal_error, user_error
from transit_emulator.fields import (
    JSON,
    Base64Error,
    b64encode,
    get_bool,
    get_int,
    get_str,
    go_b64decode,
    go_type,
)
from transit_emulator.keys import ED25519, TransitKey
from transit_emulator.state import Mount, State

HASHES: dict[str, Callable[..., Any] | None] = {  # keysutil.HashTypeMap and HashFuncMap
    "none": None,
    "sha1": hashlib.sha1,
    "sha2-224": hashlib.sha224,
    "sha2-256": hashlib.sha256,
    "sha2-384": hashlib.sha384,
    "sha2-512": hashlib.sha512,
    "sha3-224": hashlib.sha3_224,
    "sha3-256": hashlib.sha3_256,
    "sha3-384": hashlib.sha3_384,
    "sha3-512": hashlib.sha3_512,
}
# Go's %q of the zero HashType that the failed map lookup yields: Vault prints this.
ERR_HMAC_ALGORITHM = "unsupported algorithm '\\x00'"
PURE = "failed to parse batch item: only Pure Ed25519 signatures supported, "
Item = dict[str, str]


@dataclass
class Outcome:
    """One item's result: the fields of a success, or an error (``internal``: a single
    request answers 500 instead of 400)."""

    data: JSON = field(default_factory=dict)
    error: str = ""
    internal: bool = False


def _items(raw: object, strict: bool) -> list[Item]:
    """``mapstructure.Decode`` of ``batch_input``. ``strict``: into ``[]map[string]string``
    (a non-string value fails with 500); else verify's first decode into
    ``[]map[string]interface{}`` (only a non-list or a non-map fails, with 400)."""
    prefix = "failed to parse batch input: "
    fail = internal_error if strict else user_error
    if not isinstance(raw, list):
        raise fail(f"{prefix}source data must be an array or slice, got {go_type(raw)}")  # [?]
    items: list[Item] = []
    errors: list[str] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise fail(f"{prefix}'[{i}]' expected a map, got '{go_type(entry)}'")  # [?]
        item: Item = {}
        for name, value in entry.items():
            textual = isinstance(value, (str, int, float)) and not isinstance(value, bool)
            if value is None or textual or not strict:  # a json.Number decodes as a string
                item[name] = "" if value is None else str(value)
            else:
                got = f"got unconvertible type '{go_type(value)}'"
                errors.append(f"'[{i}][{name}]' expected type 'string', {got}")  # [?]
        items.append(item)
    if errors:
        points = "\n".join(sorted(f"* {e}" for e in errors))
        raise internal_error(f"{prefix}{len(errors)} error(s) decoding:\n\n{points}")
    if not items:
        raise user_error("missing batch input to process")
    return items


def _decode(text: str, prefix: str) -> bytes:
    try:
        return go_b64decode(text)
    except Base64Error as exc:
        raise OpError(f"{prefix}{exc}") from None


def _existing(state: State, mount: Mount, request: Request, missing: str) -> TransitKey:
    key = state.key(mount, request.match["name"])
    if key is None:
        raise user_error(missing)  # none of these paths creates a key
    return key


def _answer(
    batch: bool, items: list[Item], outcomes: list[Outcome], entry: Callable[[Outcome], JSON]
) -> Result:
    """Batch: 200 whatever failed, ``reference`` copied. Single: the data, or the error."""
    if batch:
        results = [
            entry(o) | {"reference": i.get("reference", "")}
            for i, o in zip(items, outcomes, strict=True)
        ]
        return Result({"batch_results": results})
    first = outcomes[0]
    if first.error:
        raise (internal_error if first.internal else user_error)(first.error)
    return Result(first.data)


def _error(outcome: Outcome) -> JSON:
    return {"error": outcome.error} if outcome.error else {}


def _valid_entry(outcome: Outcome) -> JSON:
    return {"valid": outcome.data.get("valid", False)} | _error(outcome)


# ---------------------------------------------------------------------------------- hmac


def _mac(key: TransitKey, version: int, algorithm: str, message: bytes) -> bytes:
    digest = HASHES[algorithm]
    if digest is None:  # [?] Vault calls a nil hash function here (a Go panic)
        raise OpError("hash algorithm none cannot make an HMAC", internal=True)
    return hmac.new(key.hmac_key(version), message, digest).digest()


def generate_hmac(state: State, mount: Mount, request: Request) -> Result:
    body = request.body
    version, _ = get_int(body, "key_version")
    algorithm = request.match.get("algorithm") or get_str(body, "algorithm", "sha2-256")[0]
    key = _existing(state, mount, request, "encryption key not found")
    if version == 0:
        version = key.latest_version
    elif version != key.latest_version and 0 < version < key.min_encryption_version:
        raise user_error("cannot generate HMAC: version is too old (disallowed by policy)")
    try:
        key.hmac_key(version)
    except OpError as exc:
        raise user_error(exc.message) from None
    if algorithm not in HASHES:
        raise user_error(ERR_HMAC_ALGORITHM)
    batch = body.get("batch_input") is not None
    if batch:
        items = _items(body["batch_input"], strict=True)
    elif body.get("input") is None:
        raise user_error("missing input for HMAC")
    else:
        items = [{"input": get_str(body, "input")[0]}]
    outcomes: list[Outcome] = []
    for item in items:
        try:
            if "input" not in item:
                raise OpError("missing input for HMAC")
            message = _decode(item["input"], "unable to decode input as base64: ")
            mac = _mac(key, version, algorithm, message)
            outcomes.append(Outcome({"hmac": f"vault:v{version}:{b64encode(mac)}"}))
        except OpError as exc:
            outcomes.append(Outcome(error=exc.message, internal=exc.internal))

    def entry(outcome: Outcome) -> JSON:  # batchResponseHMACItem: valid has no omitempty
        return outcome.data | {"valid": False} | _error(outcome)

    return _answer(batch, items, outcomes, entry)


def _verify_hmac(key: TransitKey, algorithm: str, item: Item) -> Outcome:
    """``pathHMACVerify``'s checks for one item, in order."""
    try:
        if "input" not in item:
            raise OpError("missing input")
        message = _decode(item["input"], "unable to decode input as base64: ")
        if "hmac" not in item:
            raise OpError("missing hmac")
        given = item["hmac"]
        if not given.startswith("vault:v"):
            raise OpError("invalid HMAC to verify: no prefix")
        parts = given[len("vault:v") :].split(":", 1)
        if len(parts) != 2:
            raise OpError("invalid HMAC: wrong number of fields")
        if not re.fullmatch(r"[+-]?[0-9]+", parts[0]):
            raise OpError("invalid HMAC: version number could not be decoded")
        version = int(parts[0])
        mac = _decode(parts[1], "unable to decode verification HMAC as base64: ")
        if version > key.latest_version:
            raise OpError("invalid HMAC: version is too new")
        if key.min_decryption_version > 0 and version < key.min_decryption_version:
            raise OpError("cannot verify HMAC: version is too old (disallowed by policy)")
        expected = _mac(key, version, algorithm, message)
    except OpError as exc:
        return Outcome(error=exc.message, internal=exc.internal)
    return Outcome({"valid": hmac.compare_digest(expected, mac)})


def verify_hmac(state: State, mount: Mount, request: Request) -> Result:
    body, url_algorithm = request.body, request.match.get("algorithm")
    algorithm = url_algorithm or next(
        (body[k] for k in ("hash_algorithm", "algorithm") if body.get(k) is not None),
        "sha2-256",
    )
    key = _existing(state, mount, request, "encryption key not found")
    if algorithm not in HASHES:
        raise user_error(ERR_HMAC_ALGORITHM)
    batch = body.get("batch_input") is not None
    if batch:
        items = _items(body["batch_input"], strict=True)
    else:
        items = [{"input": get_str(body, "input")[0], "hmac": get_str(body, "hmac")[0]}]
    outcomes = [_verify_hmac(key, algorithm, item) for item in items]
    return _answer(batch, items, outcomes, _valid_entry)


# ------------------------------------------------------------------------ sign and verify


@dataclass
class SignArgs:
    """``commonSignVerifyApiArgs``: the top-level options, read before the key."""

    hash_algorithm: str
    jws: bool
    prehashed: bool
    signature_algorithm: str


def _sign_args(request: Request) -> SignArgs:
    body = request.body
    # hash_algorithm has a default, so `algorithm` counts only when hash_algorithm is "".
    algorithm = (
        request.match.get("algorithm")
        or get_str(body, "hash_algorithm", "sha2-256")[0]
        or get_str(body, "algorithm", "sha2-256")[0]
        or "sha2-256"
    )
    if algorithm not in HASHES:
        raise user_error(f'invalid hash algorithm "{algorithm}"')
    marshaling, _ = get_str(body, "marshaling_algorithm", "asn1")
    if marshaling not in ("asn1", "jws"):
        raise user_error(f'invalid marshaling type "{marshaling}"')
    prehashed, _ = get_bool(body, "prehashed")
    signature_algorithm, _ = get_str(body, "signature_algorithm")
    salt, _ = get_str(body, "salt_length", "auto")
    if salt.lower() not in ("auto", "hash"):
        if not re.fullmatch(r"[+-]?[0-9]+", salt):
            raise user_error(f"salt length neither 'auto', 'hash', nor an int: {salt}")
        if int(salt) < -1:
            raise user_error(f"salt length is invalid: {int(salt)}")
    return SignArgs(algorithm, marshaling == "jws", prehashed, signature_algorithm)


def _signing_key(
    state: State, mount: Mount, request: Request, args: SignArgs, missing: str
) -> TransitKey:
    """The key, once it is known to sign (also for verify: the newest code says "signing")."""
    key = _existing(state, mount, request, missing)
    if key.type != ED25519:
        raise user_error(f"key type {key.type} does not support signing")
    if args.hash_algorithm == "none" and (
        not args.prehashed or args.signature_algorithm != "pkcs1v15"
    ):
        raise user_error(
            "hash_algorithm=none requires both prehashed=true and signature_algorithm=pkcs1v15"
        )
    return key


def _pure_ed25519(args: SignArgs, item: Item) -> None:
    """CE's ``_forbidEd25519EntBehavior``: Ed25519ph and Ed25519ctx are Enterprise-only."""
    if args.prehashed:
        raise OpError(PURE + "prehashed must be false")
    if args.hash_algorithm == "sha2-512":
        raise OpError(PURE + "hash_alogithm should not be set")  # sic
    if item.get("signature_context"):
        raise OpError(PURE + "signature_context must be empty")


def sign(state: State, mount: Mount, request: Request) -> Result:
    body = request.body
    version, _ = get_int(body, "key_version")
    args = _sign_args(request)
    key = _signing_key(state, mount, request, args, "signing key not found")
    batch = body.get("batch_input") is not None
    if batch:
        items = _items(body["batch_input"], strict=True)
    else:  # signature_context is an Enterprise field: a CE server ignores it at the top level
        items = [{"input": get_str(body, "input")[0], "context": get_str(body, "context")[0]}]
    outcomes: list[Outcome] = []
    for item in items:
        try:
            if "input" not in item:
                raise OpError("missing input")
            message = _decode(item["input"], "unable to decode input: ")
            try:
                go_b64decode(item.get("context", ""))
            except Base64Error:
                raise OpError("failed to base64-decode context") from None
            _pure_ed25519(args, item)
        except OpError as exc:
            outcomes.append(Outcome(error=exc.message))
            continue
        try:
            signature, used = key.sign(version, message, args.jws)
        except OpError as exc:  # returned as a bare error: a single request answers 500
            outcomes.append(Outcome({"key_version": 0}, exc.message, internal=True))
            continue
        outcomes.append(Outcome({"signature": signature, "key_version": used}))

    def entry(outcome: Outcome) -> JSON:  # batchResponseSignItem field order
        signed = {"signature": outcome.data["signature"]} if "signature" in outcome.data else {}
        return signed | {"key_version": outcome.data.get("key_version", 0)} | _error(outcome)

    return _answer(batch, items, outcomes, entry)


def _verify_signature(key: TransitKey, args: SignArgs, item: Item) -> Outcome:
    try:
        message = _decode(item.get("input", ""), "failed to parse item: failed to parse input: ")
        signature = item["signature"]
        _decode(item.get("context", ""), "failed to parse item: failed to parse context: ")
        try:
            _pure_ed25519(args, item)
        except OpError as exc:
            raise OpError(f"failed to parse item: {exc.message}") from None
        return Outcome({"valid": key.verify(signature, message, args.jws)})
    except OpError as exc:
        return Outcome(error=exc.message, internal=exc.internal)


def verify(state: State, mount: Mount, request: Request) -> Result:
    """A ``signature`` (or, handed on, an ``hmac``) to check; ``cmac`` is Enterprise-only."""
    body = request.body
    batch = body.get("batch_input") is not None
    if batch:
        items = _items(body["batch_input"], strict=False)
    else:
        items = [{"input": get_str(body, "input")[0], "context": get_str(body, "context")[0]}]
        for name in ("signature", "hmac", "cmac"):
            if body.get(name) is not None:
                items[0][name] = get_str(body, name)[0]
    kinds = [next((k for k in ("signature", "hmac", "cmac") if k in i), "") for i in items]
    found = sorted(set(kinds) - {""})
    missing = "" in kinds
    if not batch and len(found) > 1:
        raise user_error("provide one of 'signature', 'hmac' or 'cmac'")
    if not batch and not found:
        raise user_error("missing one of 'signature', 'hmac' or 'cmac' arguments to verify")
    if len(found) > 1:
        raise user_error(
            "elements of batch_input must all provide either 'signature', 'hmac' or 'cmac'"
        )
    if missing and found:
        raise user_error(f"some elements of batch_input are missing '{found[0]}'")
    if not found:
        raise user_error("no batch_input elements have 'signature', 'hmac' or 'cmac'")
    if found == ["hmac"]:
        return verify_hmac(state, mount, request)
    if found == ["cmac"]:  # [?] CE refuses CMAC; the exact text is not known here
        raise user_error("enterprise specific key type cmac can not be used on CE")
    args = _sign_args(request)
    key = _signing_key(state, mount, request, args, "signature verification key not found")
    outcomes = [_verify_signature(key, args, item) for item in items]
    return _answer(batch, items, outcomes, _valid_entry)

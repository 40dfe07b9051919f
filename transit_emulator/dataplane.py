"""The data plane: ``datakey``, ``encrypt``, ``decrypt`` and ``rewrap``, single and batch.

``path_datakey.go``, ``path_encrypt.go``, ``path_decrypt.go``, ``path_rewrap.go`` (reference
2.6-2.9). ``context`` is still base64-checked and must be set in all batch items or in none,
but no key here is derived, so it changes nothing, as for a non-derived key in Vault.
"""

from __future__ import annotations

import os

from transit_emulator.batch import (
    BatchItem,
    batch_status,
    cipher_results,
    decode_batch,
    first_pass,
    request_items,
    single_item,
)
from transit_emulator.envelope import Request, Result
from transit_emulator.errors import (
    ERR_CONVERGENT,
    ERR_NONCE_NOT_ALLOWED,
    ERR_NOT_EMULATED_DERIVED,
    OpError,
    VaultError,
    internal_error,
    user_error,
)
from transit_emulator.fields import JSON, b64_param, b64encode, get_bool, get_int, get_str
from transit_emulator.keys import AES, TransitKey
from transit_emulator.state import Mount, State


def _fail_single(errors: list[str], internal: bool) -> VaultError:
    return internal_error(errors[0]) if internal else user_error(errors[0])


def datakey(state: State, mount: Mount, request: Request) -> Result:
    """A new random key, returned wrapped (and in plaintext on the ``plaintext`` path)."""
    body = request.body
    key_version, _ = get_int(body, "key_version")
    b64_param(body, "context")
    nonce = b64_param(body, "nonce")
    bits, _ = get_int(body, "bits", 256)
    if bits not in (128, 256, 512):
        raise user_error("invalid bit length")
    kind = request.match["kind"]
    if kind not in ("plaintext", "wrapped"):
        raise user_error("Invalid path, must be 'plaintext' or 'wrapped'")
    key = state.key(mount, request.match["name"])
    if key is None:
        raise user_error("encryption key not found")  # datakey never upserts
    if nonce:
        raise internal_error(ERR_NONCE_NOT_ALLOWED)  # a bare error: 500
    new_key = b64encode(os.urandom(bits // 8))
    try:
        ciphertext = key.encrypt(key_version, new_key)
    except OpError as exc:
        raise exc.as_vault_error() from None
    data: JSON = {"ciphertext": ciphertext, "key_version": key_version or key.latest_version}
    if kind == "plaintext":
        data["plaintext"] = new_key
    return Result(data)


def _upsert(state: State, mount: Mount, request: Request, items: list[BatchItem]) -> None:
    """Encrypt on a missing key creates it (the request was authorized as ``create``)."""
    body, name = request.body, request.match["name"]
    context_set = bool(items[0].context)
    convergent, _ = get_bool(body, "convergent_encryption")
    if convergent and not context_set:
        raise user_error(f"{ERR_CONVERGENT}, so context is required")
    key_type, _ = get_str(body, "type", AES)
    if key_type in ("ecdsa-p256", "ecdsa-p384", "ecdsa-p521"):
        raise user_error(f"key type {key_type} not supported for this operation")
    if key_type != AES:  # Vault also upserts aes128-gcm96 and chacha20-poly1305 keys
        raise user_error(f"unknown key type {key_type}")
    if name in mount.keys or mount.disable_upsert:
        return
    if context_set:  # Vault would create a derived key
        raise user_error(ERR_NOT_EMULATED_DERIVED)
    key = TransitKey(name, key_type)
    key.rotate(state.now())
    mount.keys[name] = key


def encrypt(state: State, mount: Mount, request: Request) -> Result:
    body = request.body
    items, batch = request_items(body, "plaintext")
    errors = [""] * len(items)
    first_pass(items, errors, "plaintext")
    user = any(errors)
    if request.op == "create":
        _upsert(state, mount, request, items)
    key = state.key(mount, request.match["name"])
    if key is None:
        raise user_error("encryption key not found")
    ok = internal = False
    outputs: list[tuple[str, int]] = [("", 0)] * len(items)
    for i, item in enumerate(items):
        if errors[i]:
            continue
        if item.nonce:  # only convergent version 1 keys take a nonce; none exist here
            user, errors[i] = True, ERR_NONCE_NOT_ALLOWED
            continue
        try:
            ciphertext = key.encrypt(item.key_version, item.plaintext, item.associated_data)
        except OpError as exc:
            internal, user = internal or exc.internal, user or not exc.internal
            errors[i] = exc.message
            continue
        ok = True
        outputs[i] = (ciphertext, item.key_version or key.latest_version)
    if not batch:
        if errors[0]:
            raise _fail_single(errors, internal)
        return Result({"ciphertext": outputs[0][0], "key_version": outputs[0][1]})
    return batch_status(body, cipher_results(items, errors, outputs), ok, user, internal)


def decrypt(state: State, mount: Mount, request: Request) -> Result:
    body = request.body
    items, batch = request_items(body, "ciphertext")
    errors = [""] * len(items)
    first_pass(items, errors, "ciphertext")
    user = any(errors)
    key = state.key(mount, request.match["name"])
    if key is None:
        raise user_error("encryption key not found")  # decrypt never upserts
    ok = internal = False
    plaintexts = [""] * len(items)
    for i, item in enumerate(items):
        if errors[i]:
            continue
        try:
            plaintexts[i] = key.decrypt(item.ciphertext, item.associated_data)
        except OpError as exc:
            internal, user = internal or exc.internal, user or not exc.internal
            errors[i] = exc.message
            continue
        ok = True
    if not batch:
        if errors[0]:
            raise _fail_single(errors, internal)
        return Result({"plaintext": plaintexts[0]})
    results: list[JSON] = []
    for item, error, plaintext in zip(items, errors, plaintexts, strict=True):
        entry: JSON = {"plaintext": plaintext}
        if error:
            entry["error"] = error
        entry["reference"] = item.reference
        results.append(entry)
    return batch_status(body, Result({"batch_results": results}), ok, user, internal)


def rewrap(state: State, mount: Mount, request: Request) -> Result:
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
        items, batch = [single_item(body, "ciphertext", ciphertext)], False
    errors = [""] * len(items)
    first_pass(items, errors, "ciphertext")
    key = state.key(mount, request.match["name"])
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
            plaintext = key.decrypt(item.ciphertext)
            ciphertext = key.encrypt(item.key_version, plaintext)
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
    return cipher_results(items, errors, outputs)

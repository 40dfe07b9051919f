"""The key lifecycle: create, read, list, delete, config, rotate, trim, and ``config/keys``.

Texts and order of checks: ``path_keys.go``, ``path_keys_config.go`` (reference 2.1-2.5) and
``path_trim.go`` (typos included).
"""

from __future__ import annotations

from transit_emulator.envelope import Request, Result
from transit_emulator.errors import (
    ERR_CONVERGENT,
    ERR_NOT_EMULATED_DERIVED,
    VaultError,
    not_found,
    user_error,
)
from transit_emulator.fields import JSON, get_bool, get_duration, get_int, get_str
from transit_emulator.keys import KEY_TYPES, TransitKey
from transit_emulator.state import Mount, State

ERR_ROTATE_PERIOD = "auto rotate period must be 0 to disable or at least an hour"


def list_keys(state: State, mount: Mount, request: Request) -> Result:
    if not mount.keys:
        raise not_found()
    return Result({"keys": sorted(mount.keys)})


def read_key(state: State, mount: Mount, request: Request) -> Result:
    key = state.key(mount, request.match["name"])
    if key is None:
        raise not_found()
    return Result(key.info())


def create_key(state: State, mount: Mount, request: Request) -> Result:
    """Idempotent: an existing key comes back unchanged, with a warning."""
    body, name = request.body, request.match["name"]
    key_type, _ = get_str(body, "type", "aes256-gcm96")
    derived, _ = get_bool(body, "derived")
    convergent, _ = get_bool(body, "convergent_encryption")
    exportable, _ = get_bool(body, "exportable")
    backup, _ = get_bool(body, "allow_plaintext_backup")
    period, _ = get_duration(body, "auto_rotate_period")
    key_size, _ = get_int(body, "key_size")
    if period != 0 and period < 3600:
        raise user_error(ERR_ROTATE_PERIOD)
    if convergent and not derived:
        raise user_error(ERR_CONVERGENT)
    # Vault also has aes128-gcm96, chacha20-poly1305, ecdsa-*, rsa-*, hmac ...: nothing in
    # pdvault uses them, so here they get the answer Vault gives a type it does not know.
    if key_type not in KEY_TYPES:
        raise user_error(f"unknown key type {key_type}")
    if key_size != 0:
        raise user_error(f"key_size is not valid for algorithm {key_type}")
    key = state.key(mount, name)
    if key is not None:
        return Result(key.info(), [f"key {name} already existed"])
    if derived:
        raise user_error(ERR_NOT_EMULATED_DERIVED)
    key = TransitKey(name, key_type, exportable, backup, period)
    key.rotate(state.now())
    mount.keys[name] = key
    return Result(key.info())


def delete_key(state: State, mount: Mount, request: Request) -> Result:
    name = request.match["name"]
    key = mount.keys.get(name)
    # [?] exact text; OpenBao answers 400 and the code wraps the lock manager's error
    if key is None:
        raise user_error(f"error deleting policy {name}: could not delete key; not found")
    if not key.deletion_allowed:
        raise user_error(f"error deleting policy {name}: deletion is not allowed for this key")
    del mount.keys[name]
    return Result(no_content=True)


def config(state: State, mount: Mount, request: Request) -> Result:
    name = request.match["name"]
    key = state.key(mount, name)
    if key is None:
        raise user_error(f"no existing key named {name} could be found")
    saved = dict(vars(key))
    try:
        return _apply_config(key, request.body)
    except VaultError:  # on error the values are rolled back
        vars(key).update(saved)
        raise


def _min_version(key: TransitKey, body: JSON, which: str, warnings: list[str]) -> bool:
    """Apply ``min_<which>_version``; returns whether it changed."""
    value, given = get_int(body, f"min_{which}_version")
    if not given:
        return False
    if value < 0:
        raise user_error(f"min {which} version cannot be negative")
    if value == 0 and which == "decryption":
        value = 1
        warnings.append("since Vault 0.3, transit key numbering starts at 1; forcing minimum to 1")
    attribute = f"min_{which}_version"
    if value == getattr(key, attribute):
        return False
    if value > key.latest_version:
        raise user_error(
            f"cannot set min {which} version of {value}, latest key version is {key.latest_version}"
        )
    setattr(key, attribute, value)
    return True


def _apply_config(key: TransitKey, body: JSON) -> Result:
    warnings: list[str] = []
    changed = _min_version(key, body, "decryption", warnings)
    changed = _min_version(key, body, "encryption", warnings) or changed
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
            raise user_error(ERR_ROTATE_PERIOD)
        if period != key.auto_rotate_period:
            key.auto_rotate_period, changed = period, True
    if changed and key.min_available_version > key.min_encryption_version:
        raise user_error("min encryption version should not be less than min available version")
    if changed and key.min_available_version > key.min_decryption_version:
        raise user_error("min decryption version should not be less then min available version")
    return Result(key.info(), warnings)


def rotate(state: State, mount: Mount, request: Request) -> Result:
    key = state.key(mount, request.match["name"])
    if key is None:
        raise user_error("key not found")
    key.rotate(state.now())
    return Result(key.info())


def trim(state: State, mount: Mount, request: Request) -> Result:
    """``keys/:name/trim``: permanently delete the versions below min_available_version."""
    key = state.key(mount, request.match["name"])
    if key is None:
        raise user_error("invalid key name")
    value, given = get_int(request.body, "min_available_version")
    if not given:
        raise user_error("missing min_available_version")
    checks = [  # path_trim.go, in order, typos included
        (value < key.min_available_version, "minimum available version cannot be decremented"),
        (
            key.min_encryption_version == 0,
            "minimum available version cannot be set when minimum encryption version is not set",
        ),
        (
            key.min_decryption_version == 0,
            "minimum available version cannot be set when minimum decryption version is not set",
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
    key.trim(value)
    return Result(key.info())


def config_keys(state: State, mount: Mount, request: Request) -> Result:
    if request.op != "read":
        mount.disable_upsert = get_bool(request.body, "disable_upsert")[0]
    return Result({"disable_upsert": mount.disable_upsert})

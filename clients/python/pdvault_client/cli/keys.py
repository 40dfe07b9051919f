"""`pdv keys status|rotate|rewrap|trim`: the key-encryption key's versions, through the API.

On HashiCorp Vault, rotate and trim also need the operator's own Vault token (VAULT_TOKEN, or
the file VAULT_TOKEN_FILE names), which the client sends with those calls only."""

from __future__ import annotations

import argparse
from typing import Any

from pdvault_client import Client, KeyAdmin, KeyStatus, Trimmed
from pdvault_client.cli.connection import secret_variable
from pdvault_client.cli.exits import EXIT_OK
from pdvault_client.cli.report import print_json


def _admin(client: Client) -> KeyAdmin:
    return client.keys(vault_token=secret_variable("VAULT_TOKEN"))


def status(client: Client, args: argparse.Namespace) -> int:
    _show(_admin(client).status(), args)
    return EXIT_OK


def rotate(client: Client, args: argparse.Namespace) -> int:
    _show(_admin(client).rotate(), args)
    return EXIT_OK


def rewrap(client: Client, args: argparse.Namespace) -> int:
    admin = _admin(client)
    total = failed = 0
    while True:
        step = admin.rewrap_batch(args.batch_size)
        total += step.rewrapped
        failed += step.failed
        if args.output == "text":
            print(
                f"rewrapped {total} data keys to v{step.target_version}; "
                f"{step.remaining} left" + (f"; {failed} failed" if failed else "")
            )
        if step.remaining == 0 or step.rewrapped == 0:
            break
    if args.output == "json":
        print_json(
            {
                "rewrapped": total,
                "failed": failed,
                "remaining": step.remaining,
                "targetVersion": step.target_version,
            }
        )
    return EXIT_OK


def trim(client: Client, args: argparse.Namespace) -> int:
    done = _admin(client).trim(args.min_version or None)
    if args.output == "json":
        print_json(
            {
                "status": _status_dict(done.status),
                "destroyedVersions": list(done.destroyed_versions),
                "stillInUse": [{"version": v, "dataKeys": n} for v, n in done.still_in_use.items()],
            }
        )
    else:
        _print_trimmed(done)
    return EXIT_OK


def _show(key: KeyStatus, args: argparse.Namespace) -> None:
    if args.output == "json":
        print_json(_status_dict(key))
    else:
        _print_status(key)


def _print_trimmed(done: Trimmed) -> None:
    if done.destroyed_versions:
        shown = ", ".join(f"v{v}" for v in done.destroyed_versions)
        print(f"destroyed {shown}: what they wrapped can no longer be decrypted")
    elif done.still_in_use:
        users = ", ".join(f"v{v} still wraps {n} data keys" for v, n in done.still_in_use.items())
        print(f"nothing to trim: {users}; run pdv keys rewrap first, then trim again")
    else:
        print("nothing to trim: no version older than the ones in use is left")
    _print_status(done.status)


def _status_dict(s: KeyStatus) -> dict[str, Any]:
    """The KeyStatus message's JSON form (the names of key_service.proto, in camelCase)."""
    c = s.cache
    return {
        "provider": s.provider,
        "keyName": s.key_name,
        "latestVersion": s.latest_version,
        "minDecryptionVersion": s.min_decryption_version,
        "minAvailableVersion": s.min_available_version,
        "versions": [
            {"version": v, "dataKeys": n, "state": s.version_states.get(v, "")}
            for v, n in s.data_keys_by_version.items()
        ],
        "otherProviderDataKeys": s.other_provider_data_keys,
        "cache": None
        if c is None
        else {
            "entries": c.entries,
            "hits": c.hits,
            "misses": c.misses,
            "evictions": c.evictions,
            "hitRate": c.hit_rate,
            "maxEntries": c.max_entries,
            "maxAgeSeconds": c.max_age_seconds,
            "maxUses": c.max_uses,
            "processId": c.process_id,
            "host": c.host,
        },
    }


_STATE_NOTES = {
    "retired": " (retired: not decrypting until min_decryption_version is lowered)",
    "destroyed": " (destroyed by a trim: unreadable for ever, their values answer DATA_LOSS)",
    "unknown_to_provider": " (the key provider has no such version: not the key they were "
    "wrapped by)",
}


def _print_status(status: KeyStatus) -> None:
    print(f"key {status.key_name} ({status.provider})")
    print(
        f"  versions: latest v{status.latest_version}, decrypting from "
        f"v{status.min_decryption_version}, destroyed below v{max(status.min_available_version, 1)}"
    )
    for version, count in status.data_keys_by_version.items():
        note = _STATE_NOTES.get(status.version_states.get(version, ""), "")
        print(f"  v{version}: {count} data keys{note}")
    if status.other_provider_data_keys:
        print(f"  other providers: {status.other_provider_data_keys} data keys")
    c = status.cache
    if c is not None:
        print(
            f"  cache of process {c.process_id} on {c.host} (each process has its own): "
            f"{c.entries} keys, hit rate {c.hit_rate:.1%} "
            f"({c.hits} hits, {c.misses} misses, {c.evictions} evictions); limits "
            f"{c.max_entries} keys, {c.max_age_seconds:g} s, {c.max_uses} uses"
        )

"""``sys/``: health, seal status, init and the secrets-engine mounts (reference section 4).

Only ``transit`` can be mounted; ``cubbyhole/`` and ``identity/`` are listed but not served.
"""

from __future__ import annotations

from transit_emulator.envelope import Reply, Request, Result, json_reply
from transit_emulator.errors import user_error
from transit_emulator.fields import JSON, get_str
from transit_emulator.state import VAULT_VERSION, Mount, State

_CLUSTER_NAME = "vault-cluster-emulated"


def health(state: State, query: dict[str, str], method: str) -> Reply:
    sealed = state.sealed
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
        "server_time_utc": int(state.now()),
        "version": VAULT_VERSION,
        "enterprise": False,
        "echo_duration_ms": 0,
        "clock_skew_ms": 0,
        "replication_primary_canary_age_ms": 0,
        "removed_from_cluster": False,
    }
    if not sealed:
        body |= {"cluster_name": _CLUSTER_NAME, "cluster_id": state.cluster_id}
    return Reply(code, b"") if method == "HEAD" else json_reply(code, body)


def seal_status(state: State) -> JSON:
    body: JSON = {
        "type": "shamir",
        "initialized": True,
        "sealed": state.sealed,
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
    if not state.sealed:
        body |= {"cluster_name": _CLUSTER_NAME, "cluster_id": state.cluster_id}
    return body


def init(state: State, request: Request) -> Result:
    raise user_error("Vault is already initialized")


def list_mounts(state: State, request: Request) -> Result:
    mounts = {p: m.entry() for p, m in sorted({**state.builtin, **state.mounts}.items())}
    return Result(mounts, extra=mounts)  # legacy: duplicated at the top level


def enable(state: State, request: Request) -> Result:
    path = request.path[len("sys/mounts/") :].strip("/") + "/"
    mount_type, _ = get_str(request.body, "type")
    if not mount_type:
        raise user_error("backend type must be specified as a string")  # [?] wording
    if mount_type != "transit":  # [?] wording
        raise user_error(f"plugin not found in the catalog: {mount_type}")
    for existing in [*state.builtin, "auth/", *state.mounts]:
        if path.startswith(existing) or existing.startswith(path):
            raise user_error(f"path is already in use at {existing}")
    state.mounts[path] = Mount(path, mount_type, get_str(request.body, "description")[0])
    return Result(no_content=True)


def disable(state: State, request: Request) -> Result:
    path = request.path[len("sys/mounts/") :].strip("/") + "/"
    if path in state.builtin:
        raise user_error(f'cannot unmount "{path}"')
    state.mounts.pop(path, None)
    return Result(no_content=True)
